"""The two CLIP towers and the model that holds them (:class:`CLIPModel`).

Image tower
-----------
``cnn`` (the default): a small residual CNN ending in CLIP's *attention pooling*
(the ``ModifiedResNet`` of Radford et al. 2021, in miniature)::

    x (B, C, R, R) in [-1, 1]
    -> conv3x3(C, w)
    -> 3 stages: ResBlock -> conv3x3 stride 2 (w, 2w, 4w channels; R -> ceil(R/2) each:
       32 -> 16 -> 8 -> 4, 28 -> 14 -> 7 -> 4)
    -> GroupNorm, SiLU; the S×S grid as S² tokens, with their mean as one more token
       in front, plus a learned position embedding (S² + 1, 4w)
    -> multi-head attention with the mean token as the only query
    -> Linear(4w, embed_dim)

``ResBlock`` is ``x + conv(SiLU(GN(conv(SiLU(GN(x))))))``. Why this design: captions
say *where* things are, and a tower that averages its last feature map away (global
average pooling) cannot read "top left" from "bottom right"; attention pooling over
tokens that carry a position embedding can. It is not the cheaper tower: a ViT with
8×8 patches reads as well per unit of training time (docs/results.md § CLIP) and is
the evaluation CLIP's design, so that the two CLIPs differ.

``vit``: a ViT (Dosovitskiy et al. 2021) — ``patch_size``² patches linearly embedded
(a stride-``patch_size`` convolution), a class token, a learned position embedding,
``image_layers`` pre-LayerNorm blocks (multi-head self-attention, GELU MLP ×4),
LayerNorm of the class token, ``Linear(width, embed_dim)``. It is the *other* design,
used for the evaluation CLIP (issue 16: the CLIP that scores generators is never the
one that generates, guides or reranks, and differs from it in seed and design).

The blocks' attention is the text tower's
:class:`~gaf.plugins.conditioners.text.SelfAttention` (one fused q|k|v projection,
``scaled_dot_product_attention``), without a mask: every token attends to every token.
Only the class token is read after the last block, so that block computes its query,
output projection and MLP for the class token alone (its keys and values still come
from every token): the same features as the full block, whose other rows (one per
patch) would be thrown away. What that saves in a training step is in
docs/benchmarks.md, § CLIP training step against transformers' CLIPModel.

Text tower
----------
The ``text-transformer`` conditioner's encoder
(:class:`gaf.plugins.conditioners.TextTransformer`: ``shapes-bpe`` tokens, a
bidirectional pre-LayerNorm transformer, padding masked out of attention), then the
mean of its states over the caption's real tokens (it has no end-of-text token to
read, being bidirectional; pad states are left out so the vector does not depend on
``max_length``), then ``Linear(width, embed_dim, bias=False)``. :meth:`CLIPModel.text`
returns both the per-token states and the pooled vector: the ``clip-text``
conditioner hands the states to cross-attention and the vector to the time embedding.
Where only the vector is needed (:meth:`CLIPModel.forward`, so training, and
:meth:`CLIPModel.encode_text`), it is computed on the real tokens alone
(:meth:`~gaf.plugins.conditioners.TextTransformer.mean_state`: the same numbers, the
pads' states never computed).

Temperature
-----------
``log_scale`` is the learnable τ of :mod:`.loss`, initialised at ``ln(1/0.07)``.
:meth:`CLIPModel.forward` returns it with the two feature batches, so that under
``DistributedDataParallel`` its gradient is averaged like every other parameter's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gaf.config import option, option_error
from gaf.plugins.conditioners.text import SelfAttention, TextTransformer, TextTransformerConfig

from .loss import INIT_LOG_SCALE

__all__ = ["CLIPConfig", "CLIPModel", "CNNImageTower", "ViTImageTower", "AttentionPool"]


@attrs.define
class CLIPConfig:
    """Options of a CLIP model (both towers)."""

    embed_dim: int = option(64, "width of the joint embedding space", ge=1)
    image_tower: Literal["cnn", "vit"] = option(
        "cnn", "cnn: residual CNN with attention pooling; vit: a small ViT")
    image_width: int = option(32, "cnn: channels of the first stage (then 2x, 4x); "
                                  "vit: token width", ge=1)
    image_layers: int = option(4, "vit: number of transformer blocks", ge=1)
    patch_size: int = option(4, "vit: patch side in pixels (must divide resolution)", ge=1)
    image_heads: int = option(4, "attention heads of the pooling (cnn) or blocks (vit)", ge=1)
    in_channels: int = option(3, "image channels", ge=1)
    resolution: int = option(32, "image side in pixels", ge=1)
    tokenizer: str = option("shapes-bpe", "the text tower's tokenizer")
    text_width: int = option(64, "the text transformer's width", ge=1)
    text_layers: int = option(2, "the text transformer's blocks", ge=1)
    text_heads: int = option(4, "the text transformer's attention heads", ge=1)
    max_length: int = option(24, "tokens per caption", ge=1)
    init_log_scale: float = option(INIT_LOG_SCALE, "initial log-temperature tau "
                                                   "(CLIP: ln(1/0.07))")

    def __attrs_post_init__(self) -> None:
        if self.image_tower == "vit" and self.resolution % self.patch_size:
            raise option_error("patch_size", f"must divide resolution ({self.resolution})",
                               self.patch_size)
        width = 4 * self.image_width if self.image_tower == "cnn" else self.image_width
        if width % self.image_heads:
            raise option_error("image_heads", f"must divide the pooled width ({width})",
                               self.image_heads)

    def text_config(self) -> TextTransformerConfig:
        return TextTransformerConfig(tokenizer=self.tokenizer, width=self.text_width,
                                     layers=self.text_layers, heads=self.text_heads,
                                     max_length=self.max_length)


def _groups(channels: int) -> int:
    return math.gcd(channels, 8)


class ResBlock(nn.Module):
    """``x + conv(SiLU(GN(conv(SiLU(GN(x))))))`` at constant width."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(channels), channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(channels), channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


class AttentionPool(nn.Module):
    """CLIP's attention pooling: the mean token queries the grid's tokens (all with a
    learned position embedding) through one multi-head attention."""

    def __init__(self, tokens: int, width: int, heads: int, out_dim: int):
        super().__init__()
        self.position = nn.Parameter(torch.randn(tokens + 1, width) / width ** 0.5)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.proj = nn.Linear(width, out_dim)

    def forward(self, grid: Tensor) -> Tensor:
        tokens = grid.flatten(2).transpose(1, 2)                      # (B, S², C)
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)
        tokens = tokens + self.position
        pooled, _ = self.attn(tokens[:, :1], tokens, tokens, need_weights=False)
        return self.proj(pooled[:, 0])


class CNNImageTower(nn.Module):
    """The ``cnn`` image tower of the module docstring."""

    def __init__(self, cfg: CLIPConfig):
        super().__init__()
        w = cfg.image_width
        layers: list[nn.Module] = [nn.Conv2d(cfg.in_channels, w, 3, padding=1)]
        side, ch = cfg.resolution, w
        for out in (w, 2 * w, 4 * w):
            layers += [ResBlock(ch), nn.Conv2d(ch, out, 3, stride=2, padding=1)]
            ch, side = out, (side + 1) // 2
        layers += [nn.GroupNorm(_groups(ch), ch), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.pool = AttentionPool(side * side, ch, cfg.image_heads, cfg.embed_dim)

    def forward(self, images: Tensor) -> Tensor:
        return self.pool(self.body(images))


def _self_attention(width: int, heads: int) -> SelfAttention:
    """The text tower's :class:`SelfAttention` (fused ``qkv`` Linear, ``proj``) with
    ``nn.MultiheadAttention``'s initialisation, drawn in its order: ``proj`` as a Linear
    (PyTorch's default), then ``qkv`` Xavier-uniform, both biases zero. The weights
    are built on the meta device first, so building draws no random numbers of its
    own, and a seed gives the same initial ViT as when the blocks held
    ``nn.MultiheadAttention`` (whose ``in_proj``/``out_proj`` are this ``qkv``/``proj``,
    rows in the same q|k|v, head-major order)."""
    with torch.device("meta"):
        attn = SelfAttention(width, heads, width // heads)
    attn = attn.to_empty(device=torch.empty(0).device)
    attn.proj.reset_parameters()
    nn.init.xavier_uniform_(attn.qkv.weight)
    nn.init.zeros_(attn.qkv.bias)
    nn.init.zeros_(attn.proj.bias)
    return attn


#: ``nn.MultiheadAttention``'s parameter names in a state dict of the ViT blocks saved
#: before they held :class:`SelfAttention` (same shapes and layout)
_MHA_NAMES = {"attn.in_proj_weight": "attn.qkv.weight", "attn.in_proj_bias": "attn.qkv.bias",
              "attn.out_proj.weight": "attn.proj.weight", "attn.out_proj.bias": "attn.proj.bias"}


class _Block(nn.Module):
    """Pre-LayerNorm transformer block: ``x + SelfAttention(LN(x))``, then
    ``x + MLP(LN(x))`` (GELU MLP ×4).

    ``forward(x, cls_only=True)`` returns the class token's output only, ``(B, 1, W)``:
    its query, output projection and MLP are computed for that token alone (the keys
    and values still come from every token), which is the first row of the full
    block's output at a fraction of the cost."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = _self_attention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(),
                                 nn.Linear(4 * width, width))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for old, new in _MHA_NAMES.items():  # a ViT saved with nn.MultiheadAttention
            if prefix + old in state_dict and prefix + new not in state_dict:
                state_dict[prefix + new] = state_dict.pop(prefix + old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: Tensor, cls_only: bool = False) -> Tensor:
        h, a, w = self.norm1(x), self.attn, x.shape[-1]
        if cls_only:  # the class token's query; keys and values of every token
            q = F.linear(h[:, :1], a.qkv.weight[:w], a.qkv.bias[:w])
            k, v = F.linear(h, a.qkv.weight[w:], a.qkv.bias[w:]).chunk(2, dim=-1)
            x = x[:, :1] + self._attend(q, k, v)
        else:
            x = x + self._attend(*a.qkv(h).chunk(3, dim=-1))
        return x + self.mlp(self.norm2(x))

    def _attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """``proj`` of the unmasked multi-head attention of queries ``q`` (B, Q, W) to
        keys ``k`` and values ``v`` (B, L, W) (:class:`SelfAttention`'s computation,
        without its key-padding mask: every token attends to every token)."""
        a = self.attn

        def heads(t: Tensor) -> Tensor:
            return t.view(t.shape[0], t.shape[1], a.heads, a.head_dim).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v))
        return a.proj(out.transpose(1, 2).flatten(2))


class ViTImageTower(nn.Module):
    """The ``vit`` image tower of the module docstring."""

    def __init__(self, cfg: CLIPConfig):
        super().__init__()
        w, n = cfg.image_width, (cfg.resolution // cfg.patch_size) ** 2
        self.patch = nn.Conv2d(cfg.in_channels, w, cfg.patch_size, stride=cfg.patch_size)
        self.cls = nn.Parameter(torch.randn(1, 1, w) / w ** 0.5)
        self.position = nn.Parameter(torch.randn(n + 1, w) / w ** 0.5)
        self.blocks = nn.Sequential(*[_Block(w, cfg.image_heads)
                                      for _ in range(cfg.image_layers)])
        self.norm = nn.LayerNorm(w)
        self.proj = nn.Linear(w, cfg.embed_dim)

    def forward(self, images: Tensor) -> Tensor:
        tokens = self.patch(images).flatten(2).transpose(1, 2)
        h = torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], dim=1) + self.position
        for block in self.blocks[:-1]:
            h = block(h)
        cls = self.blocks[-1](h, cls_only=True)[:, 0]  # only the class token is read
        return self.proj(self.norm(cls))


class CLIPModel(nn.Module):
    """An image tower, a text tower and the learnable temperature (see the module doc)."""

    Config = CLIPConfig

    def __init__(self, config: CLIPConfig | None = None):
        super().__init__()
        self.config = cfg = config or CLIPConfig()
        self.image = (CNNImageTower(cfg) if cfg.image_tower == "cnn" else ViTImageTower(cfg))
        self.text_encoder = TextTransformer(cfg.text_config())
        # the conditioner's learned null is not part of CLIP (no gradient reaches it)
        self.text_encoder.null_states.requires_grad_(False)
        self.text_proj = nn.Linear(cfg.text_width, cfg.embed_dim, bias=False)
        self.log_scale = nn.Parameter(torch.tensor(float(cfg.init_log_scale)))

    def decay_split(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """The trainable parameters CLIP decays and those it does not: weight decay
        applies to the weight matrices, convolution kernels and embeddings (two or more
        dimensions), not to gains, biases or the temperature (Radford et al. 2021, §2.5;
        one dimension or none)."""
        trainable = [p for p in self.parameters() if p.requires_grad]
        return [p for p in trainable if p.dim() >= 2], [p for p in trainable if p.dim() < 2]

    def save_assets(self, path) -> None:
        """The text tower's tokenizer files (called by :func:`gaf.save`)."""
        self.text_encoder.save_assets(path)

    def load_assets(self, path) -> None:
        """Restore the tokenizer saved by :meth:`save_assets` (called by :func:`gaf.load`)."""
        self.text_encoder.load_assets(path)

    def tokenize(self, captions: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Token ids and the real-token mask ``(B, max_length)`` (pads ``False``)."""
        ids, mask = self.text_encoder.tokenize(list(captions))
        device = self.log_scale.device
        return ids.to(device), mask.to(device)

    def text_ids(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """``(states (B, L, text_width), features (B, embed_dim))`` of tokenised captions."""
        states = self.text_encoder.encode_ids(ids, mask)
        weights = mask.to(states.dtype).unsqueeze(-1)
        pooled = (states * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)
        return states, self.text_proj(pooled)

    def text_features(self, ids: Tensor, mask: Tensor) -> Tensor:
        """``(B, embed_dim)`` features of tokenised captions: :meth:`text_ids`'s second
        half without the pads' states, which it never reads
        (:meth:`~gaf.plugins.conditioners.TextTransformer.mean_state`)."""
        return self.text_proj(self.text_encoder.mean_state(ids, mask))

    def text(self, captions: Sequence[str]) -> tuple[Tensor, Tensor]:
        """``(states, features)`` of ``captions`` (see :meth:`text_ids`)."""
        return self.text_ids(*self.tokenize(captions))

    def encode_text(self, captions: Sequence[str]) -> Tensor:
        """``(B, embed_dim)`` text features (not normalised)."""
        return self.text_features(*self.tokenize(captions))

    def encode_image(self, images: Tensor) -> Tensor:
        """``(B, embed_dim)`` image features (not normalised) of images in [-1, 1]."""
        return self.image(images)

    def forward(self, images: Tensor, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(image features, text features, log_scale)``: what the loss takes."""
        return self.encode_image(images), self.text_features(ids, mask), self.log_scale

    @torch.no_grad()
    def similarity(self, images: Tensor, captions: Sequence[str]) -> Tensor:
        """Cosine similarity ``(N_images, N_captions)``."""
        img = F.normalize(self.encode_image(images), dim=-1)
        txt = F.normalize(self.encode_text(captions), dim=-1)
        return img @ txt.T
