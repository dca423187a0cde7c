"""Text-to-image system contracts beyond latent diffusion (the seed's baselines and image
tasks): :class:`TokenModel` (DALL-E and Parti), :class:`Prior` (unCLIP's),
:class:`ImageTextEncoder` (CLIP), :class:`GANGenerator` and :class:`GANDiscriminator`
(the text-conditional GAN), :class:`StyleFeatures` and :class:`Stylizer` (style
transfer).

Part of :mod:`gaf.interfaces` (which re-exports every name here); no torch at import.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover - typing only
    from torch import Tensor


__all__ = ["GANDiscriminator", "GANGenerator", "ImageTextEncoder", "Prior", "StyleFeatures",
           "Stylizer", "TokenModel"]


@runtime_checkable
class TokenModel(Protocol):
    """Autoregressive text-to-image over the codes of a vector-quantised first stage
    (registry kind ``token-model``: ``dalle``, ``parti``).

    A ``torch.nn.Module`` (the objective trains it, saves it and moves it to the run's
    device). ``config`` carries the code grid it writes, ``rows`` × ``cols`` codes from a
    codebook of ``codebook`` entries, which must equal the first stage's latent grid and
    ``n_embed`` (the objective checks and names the options to set); ``image_tokens`` is
    ``rows * cols``; ``device`` is the device of its parameters.

    * ``tokenize(captions) -> (B, L)`` int64 on ``device``: the model's text ids, ``L``
      fixed by the model (rows of different calls are concatenated), padded as the
      model likes; a caption it cannot encode (too long) raises
      :class:`~gaf.errors.BadData`. The empty caption is allowed.
    * ``loss(text, codes, drop=None) -> (loss, metrics)``: the training loss (a 0-d
      tensor, differentiable) of ``text`` (from ``tokenize``) and ``codes`` ``(B, N)``
      int64 in ``[0, codebook)``, the grid row-major, ``N = image_tokens``; rows where
      the ``(B,)`` bool ``drop`` is True read the null caption (classifier-free guidance
      training). ``metrics`` maps names to floats (e.g. ``loss_image``).
    * ``prefill(text, drop=None) -> (logits, cache)``: reads the caption (the null one
      where ``drop``) and returns the ``(B, codebook)`` float logits of code 0 and an
      opaque cache; ``step(codes, index, cache) -> (logits, cache)`` feeds the ``(B,)``
      int64 codes of grid cell ``index`` (0-based) and returns the logits of cell
      ``index + 1``. Logits cover the codebook only, so a sampler can draw no other
      token. The sampler calls ``prefill`` once and ``step`` ``image_tokens - 1`` times,
      with batches of ``2B`` rows (conditional then null) under guidance; the result
      must equal a full recomputation.

    Optional: ``gaf_ddp_methods = ("loss",)``: the objective calls ``loss``, not
    ``forward``, so a multi-process run must route it through DDP.
    """

    config: Any
    image_tokens: int
    device: Any

    def tokenize(self, captions: Sequence[str]) -> Tensor: ...

    def loss(self, text: Tensor, codes: Tensor,
             drop: Tensor | None = None) -> tuple[Tensor, dict[str, float]]: ...

    def prefill(self, text: Tensor, drop: Tensor | None = None) -> tuple[Tensor, Any]: ...

    def step(self, codes: Tensor, index: int, cache: Any) -> tuple[Tensor, Any]: ...


@runtime_checkable
class Prior(Protocol):
    """unCLIP's diffusion prior: denoises a CLIP image embedding given a caption
    (registry kind ``prior``: ``prior-transformer``).

    A ``torch.nn.Module`` (trained with an EMA copy, saved, moved to a device).
    ``embed_dim`` is ``E``, the CLIP embedding width; ``config`` has ``embed_dim``,
    ``text_width`` and ``text_length``, which must equal the CLIP's ``embed_dim``,
    ``text_width`` and ``max_length`` (the objective checks them).

    * ``__call__(x_t, t, context) -> (B, E)``: the prediction named by
      ``prediction_type`` (``"sample"``, ``"epsilon"`` or ``"v_prediction"``: the
      scheduler's names) for noised standardised embeddings ``x_t`` ``(B, E)`` at ``t``
      (a ``(B,)`` int64 tensor in training, one int for the batch in sampling).
      ``context`` is the caption as a ``gaf.plugins.diffusion.prior.PriorCondition``
      (``states`` ``(B, L, W)`` CLIP text states, ``mask`` ``(B, L)`` bool, True at real
      tokens, ``pooled`` ``(B, E)`` unit CLIP text embedding; the null caption is the
      empty caption's) or what ``cache_context`` made of one.
    * ``cache_context(context) -> object``: accepted in place of ``context`` with the
      same output (the sampler calls it once per batch, then every step with it).
    * ``standardize(embeddings)`` / ``unstandardize(x)``: CLIP embeddings ``(N, E)`` to
      the prior's coordinates and back (the diffusion runs in standardised ones);
      ``fit_embedding_stats(embeddings)`` sets the statistics from ``(N, E)`` training
      embeddings (``N >= 2``) and ``stats_fitted`` is truthy once they are set; both are
      saved with the weights (a resumed or loaded prior is not refitted).
    """

    config: Any
    prediction_type: str
    embed_dim: int
    stats_fitted: Any

    def __call__(self, x_t: Tensor, t: Any, context: Any) -> Tensor: ...

    def cache_context(self, context: Any) -> Any: ...

    def fit_embedding_stats(self, embeddings: Tensor) -> None: ...

    def standardize(self, embeddings: Tensor) -> Tensor: ...

    def unstandardize(self, x: Tensor) -> Tensor: ...


@runtime_checkable
class ImageTextEncoder(Protocol):
    """A joint image–text embedding (registry kind ``encoder``: ``clip``).

    * ``encode_image(images) -> (B, E)``: float features of images ``(B, C, R, R)`` in
      ``[-1, 1]`` on the encoder's device (``C = config.in_channels``, ``R =
      config.resolution``), not normalised;
    * ``encode_text(captions) -> (B, E)``: the captions' features on the encoder's device,
      not normalised; a caption it cannot encode raises :class:`~gaf.errors.BadData`.
    * ``config``: ``embed_dim`` (``E``), ``in_channels``, ``resolution`` (options, so
      a stage can build one for a dataset's images).

    Callers normalise, so the cosine of the two features is the image–caption score
    (CLIPScore, reranking, rewards, zero-shot readings). A ``torch.nn.Module``.

    Today only the ``clip`` objective and the shared evaluation's CLIP take any
    encoder this way: the components built from a trained ``clip`` run (the
    ``clip-text`` conditioner, the ``clip-image`` tower, ``clip-score``) read internals
    of gaf's own CLIP model, and ``gaf.plugins.clip.frozen.load_clip`` refuses another.

    Optional, what the ``clip`` objective trains through: ``tokenize(captions) -> (ids,
    mask)`` ``(B, L)`` int64 and bool on the encoder's device, ``forward(images, ids,
    mask) -> (image_features, text_features, log_scale)``, ``log_scale`` (the 0-d
    learnable log-temperature parameter, clamped in place after each step) and
    ``decay_split() -> (decayed, not_decayed)`` parameter lists.
    """

    config: Any

    def encode_image(self, images: Tensor) -> Tensor: ...

    def encode_text(self, captions: Sequence[str]) -> Tensor: ...


@runtime_checkable
class GANGenerator(Protocol):
    """The generator of a text-conditional GAN (registry kind ``generator``): noise and a
    text embedding to an image.

    A ``torch.nn.Module``: the objective trains, checkpoints and saves it
    (``parameters()``, ``buffers()``, ``state_dict()``, ``train()``/``eval()``,
    ``to(device)``) and keeps an EMA copy (a deep copy averaged parameter by parameter).

    * ``__call__(z, e) -> Tensor``: noise ``z`` ``(B, z_dim)`` (standard normal, float32;
      a sampler may scale it) and text embeddings ``e`` ``(B, text_dim)`` (float32, one
      row per caption: the objective's caption embedding) give images
      ``(B, out_channels, resolution, resolution)`` in ``[-1, 1]``, differentiable with
      respect to the parameters (the generator is trained through the discriminator).
      In eval mode (how the ``gan`` pipeline samples) image ``i`` depends on ``z[i]``
      and ``e[i]`` only, not on the batch.
    * ``config``: an attrs instance that rebuilds it through the registry (``gaf.save``
      writes it; the ``gan`` pipeline loads the run's generator from it) with the fields
      ``z_dim``, ``text_dim``, ``out_channels`` and ``resolution``: the objective checks
      them against the dataset's images and the text embedding (a mismatch is a
      :class:`~gaf.errors.BadConfig` naming ``generator.<field>``), and draws ``z`` of
      ``config.z_dim``.
    """

    config: Any

    def __call__(self, z: Tensor, e: Tensor) -> Tensor: ...


@runtime_checkable
class GANDiscriminator(Protocol):
    """The discriminator of a text-conditional GAN (registry kind ``discriminator``): an
    image and a text embedding to a logit.

    A ``torch.nn.Module``, trained in its own parameter group (``parameters()``) and
    checkpointed like the generator. For the generator's loss the objective calls it with
    its parameters detached (``torch.func.functional_call`` over ``named_parameters()``),
    so its output must come from its own parameters and buffers only.

    * ``__call__(x, e) -> Tensor``: images ``x`` ``(B, in_channels, resolution,
      resolution)`` in ``[-1, 1]`` (real ones, or the generator's) and text embeddings
      ``e`` ``(B, text_dim)`` give one real logit per pair, shape ``(B,)``: positive for
      "a real image that matches its text" (the losses are cross-entropy on the logits or
      the hinge). Differentiable with respect to ``x`` and ``e`` as well as the
      parameters: the generator is trained through it, and the matching-aware gradient
      penalty (``ma_gp``) differentiates ``∇_x`` and ``∇_e`` again.
    * ``config``: an attrs instance that rebuilds it through the registry, with the
      fields ``in_channels``, ``text_dim`` and ``resolution`` (checked against the
      dataset and the text embedding).
    """

    config: Any

    def __call__(self, x: Tensor, e: Tensor) -> Tensor: ...


@runtime_checkable
class StyleFeatures(Protocol):
    """A fixed feature network for style transfer (registry kind ``style-features``):
    the feature maps whose Gram matrices (style) and activations (content) a stylizer
    matches.

    A ``torch.nn.Module`` that stays in eval mode with every parameter frozen (no
    ``requires_grad``): a fixed feature space. The stylizer moves it with
    ``to(device)`` and works on the device of its first parameter (the CPU when it
    has none).

    * ``__call__(images) -> list[Tensor]``: images ``(B, 3, H, W)`` float32 in
      ``[-1, 1]`` give one feature map ``(B, N_l, H_l, W_l)`` per name in ``layers``,
      in that order, differentiable with respect to ``images`` (the stylizer optimises
      the pixels through it) and deterministic.
    * ``layers``: the names of the maps.
    * ``content_layer`` (one of ``layers``) and ``style_layers`` (some of them): the
      layers the content and style losses read unless the stylizer is told others.
    * ``content_weight`` and ``style_weight``: the default α and β (> 0). Gram-matrix
      losses are plain sums, so their scale is the network's own: each network declares
      the pair that suits it.
    """

    layers: Sequence[str]
    content_layer: str
    style_layers: Sequence[str]
    content_weight: float
    style_weight: float

    def __call__(self, images: Tensor) -> list[Tensor]: ...


@runtime_checkable
class Stylizer(Protocol):
    """A neural style transfer method (registry kind ``stylizer``): what ``gaf stylize``
    runs.

    ``gaf stylize`` builds it with the options the user gave among ``features`` (a
    ``style-features`` name or a path), ``steps``, ``content_weight``,
    ``style_weight`` and ``init`` (``"content"`` or ``"noise"``); one a stylizer does
    not have is refused by the registry.

    * ``__call__(content, style, *, seed=0, device=None)``: two images ``(3, H, W)``
      float32 in ``[-1, 1]`` of the same size (the picture whose layout is kept, the
      one whose texture is copied), ``seed`` the only randomness (the same seed gives
      the same image on one device) and ``device`` where to work (``None``: where it
      is). It returns a result (``gaf.plugins.style.transfer.StyleResult`` is the
      reference) with ``image`` ``(3, H, W)`` in ``[-1, 1]`` (on the CPU), the
      unweighted losses ``content_loss`` and ``style_loss`` of that image,
      ``style_loss_start`` (of the starting image), ``style_fraction``
      (``style_loss / style_loss_start``) and ``iterations``. A bad image (wrong shape,
      sizes that differ, non-finite pixels) raises :class:`~gaf.errors.BadData`.
    * ``config``: its options (an attrs instance); ``gaf stylize`` reports
      ``config.features`` when there is one.

    Optional (the ``gatys`` stylizer has them; ``gaf stylize`` does not use them):
    ``features``, the :class:`StyleFeatures` network it matches against, and
    ``losses(image, content, style) -> dict[str, float]``, the unweighted
    ``content_loss`` and ``style_loss`` of any image.
    """

    config: Any

    def __call__(self, content: Tensor, style: Tensor, *, seed: int = 0,
                 device: Any = None) -> Any: ...
