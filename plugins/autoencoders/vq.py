"""``vqgan``: the LDM first stage with a vector-quantised latent.

Same encoder and decoder as ``kl-vae`` (:mod:`.blocks`), with ``c`` encoder output
channels, a 1x1 ``quant_conv``, the codebook, a 1x1 ``post_quant_conv`` and the
decoder.

Quantiser (van den Oord et al. 2017, as in taming-transformers / LDM)
----------------------------------------------------------------------
The codebook holds ``n_embed`` (|Z|) vectors ``e_k`` of dimension ``c``. Each latent
vector ``z`` (one per position) is replaced by its nearest code
``z_q = e_k, k = argmin_k ||z - e_k||^2``. The decoder receives the straight-through
value ``z + sg(z_q - z)``: equal to ``z_q`` in the forward pass, with gradient the
identity with respect to ``z`` (the decoder's gradient is copied to the encoder).
Losses (means over all latent elements):

* commitment ``beta * ||z - sg(z_q)||^2`` (``beta = 0.25``) pulls the encoder to its codes;
* codebook ``||sg(z) - z_q||^2`` moves the codes to the encoder outputs — only when
  ``ema`` is off. With ``ema = true`` the codebook is not trained by gradients
  (it is not a trainable parameter) but by exponential moving averages
  (van den Oord et al. 2017, appendix; decay ``gamma = ema_decay``):

      N_k <- gamma N_k + (1 - gamma) n_k          n_k = #vectors assigned to k in the batch
      m_k <- gamma m_k + (1 - gamma) s_k          s_k = sum of those vectors
      N~_k = (N_k + eps) / (sum_j N_j + K eps) * sum_j N_j   (Laplace smoothing)
      e_k = m_k / N~_k

  (``N`` starts at 1 and ``m`` at the initial codebook, so ``e`` starts unchanged.)

Dead-code restarts (``restart_after = N > 0``, with or without EMA): every training
forward pass counts, per code, the passes since it was last assigned; a code unused
for ``N`` passes is re-initialised to an encoder output drawn at random (global torch
RNG) from the current batch, and its EMA statistics are reset to that vector with
count 1. ``QuantizerOutput.restarts`` reports how many codes were restarted.

Updates (EMA and restarts) happen only in ``forward`` when the module is in training
mode; ``decode`` never changes the codebook.

Under ``torch.distributed`` (several ranks training one model, each on its shard of the
batch) the codebook is not a gradient-trained parameter, so DDP would leave each rank's
to follow its own shard. The update therefore sums ``n_k`` and ``s_k`` over the ranks
first (both are additive: the EMA is then the single-process EMA over the global batch,
and the unused-pass counters agree), and a restarted code takes rank 0's drawn vector
on every rank. The ranks' codebooks stay identical.

Latents
-------
As in the LDM, ``encode(x)`` returns the **pre-quantisation** latents (after
``quant_conv``) and ``decode(z)`` quantises them first, so a diffusion model runs on
continuous latents and its samples are snapped to the codebook when decoded.
``encode_indices`` / ``decode_indices`` give the discrete codes ``(B, H/f, W/f)``.

Statistics: ``perplexity = exp(-sum_k p_k log p_k)`` of the code frequencies ``p`` in
a batch (``n_embed`` when all codes are used equally, 1 when one code takes all), and
the per-code ``counts`` from which the objective computes codebook usage (fraction
of codes used) over the whole evaluation set.
"""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from gaf.config import option

from .blocks import AutoencoderConfig, Decoder, Encoder, FirstStage, check_image
from .kl import AutoencoderOutput

__all__ = ["VQConfig", "VQAutoencoder", "VectorQuantizer", "QuantizerOutput", "perplexity"]


@attrs.define
class VQConfig(AutoencoderConfig):
    """Options of ``vqgan``: the architecture plus the codebook."""

    n_embed: int = option(256, "codebook size |Z|", ge=2)
    beta: float = option(0.25, "commitment weight beta on ||z - sg(z_q)||^2", ge=0)
    ema: bool = option(True, "update the codebook by exponential moving averages "
                             "instead of the codebook loss")
    ema_decay: float = option(0.99, "EMA decay gamma", gt=0, lt=1)
    ema_eps: float = option(1e-5, "Laplace smoothing of the EMA cluster sizes", gt=0)
    restart_after: int = option(10, "re-initialise a code unused for this many training "
                                     "forward passes from the batch (0 = never)", ge=0)


def perplexity(counts: Tensor) -> Tensor:
    """``exp(entropy)`` of the code frequencies ``counts / counts.sum()``."""
    p = counts.double() / counts.sum().clamp_min(1)
    return torch.exp(-(p * torch.log(p.clamp_min(1e-30))).sum())


@attrs.define
class QuantizerOutput:
    """The quantiser's result for a batch of latents ``z`` of shape ``(B, c, h, w)``.

    ``z_q`` is the straight-through value ``z + sg(z_q - z)``; ``indices`` ``(B, h, w)``;
    ``commitment`` = ``mean((z - sg(z_q))^2)`` and ``codebook`` = ``mean((sg(z) - z_q)^2)``
    (both unweighted; ``loss`` = ``codebook + beta * commitment`` without EMA,
    ``beta * commitment`` with EMA); ``counts`` ``(n_embed,)`` assignments per code;
    ``perplexity`` of this batch; ``restarts`` codes restarted by this call.
    """

    z_q: Tensor
    indices: Tensor
    loss: Tensor
    commitment: Tensor
    codebook: Tensor
    counts: Tensor
    perplexity: Tensor
    restarts: int = 0


class VectorQuantizer(nn.Module):
    """Nearest-code lookup with a straight-through estimator, optional EMA and restarts."""

    def __init__(self, n_embed: int, dim: int, *, beta: float = 0.25, ema: bool = True,
                 decay: float = 0.99, eps: float = 1e-5, restart_after: int = 10):
        super().__init__()
        self.n_embed, self.dim, self.beta = n_embed, dim, beta
        self.ema, self.decay, self.eps, self.restart_after = ema, decay, eps, restart_after
        weight = torch.empty(n_embed, dim).uniform_(-1.0 / n_embed, 1.0 / n_embed)
        self.embedding = nn.Parameter(weight, requires_grad=not ema)
        self.register_buffer("cluster_size", torch.ones(n_embed))
        self.register_buffer("embed_sum", weight.clone())
        self.register_buffer("unused_steps", torch.zeros(n_embed, dtype=torch.long))

    def lookup(self, flat: Tensor) -> Tensor:
        """Nearest code index for each row of ``flat`` ``(N, dim)``."""
        w = self.embedding.detach().float()
        flat = flat.detach().float()
        dist = flat.pow(2).sum(1, keepdim=True) - 2.0 * flat @ w.t() + w.pow(2).sum(1)[None]
        return dist.argmin(dim=1)

    def forward(self, z: Tensor, update: bool | None = None) -> QuantizerOutput:
        """Quantise ``z`` ``(B, dim, h, w)``; ``update`` (default: ``self.training``)
        applies the EMA and restart updates after the lookup."""
        update = self.training if update is None else update
        b, _, h, w = z.shape
        flat = rearrange(z, "b c h w -> (b h w) c")
        idx = self.lookup(flat)
        counts = torch.bincount(idx, minlength=self.n_embed).to(torch.float32)
        z_q = rearrange(self.embedding[idx].to(z.dtype), "(b h w) c -> b c h w", b=b, h=h, w=w)
        commitment = F.mse_loss(z, z_q.detach())
        codebook = F.mse_loss(z.detach(), z_q)
        loss = self.beta * commitment if self.ema else codebook + self.beta * commitment
        restarts = 0
        if update:
            restarts = self._update(flat.detach().float(), idx, counts)
        z_st = z + (z_q - z).detach()
        return QuantizerOutput(z_st, idx.view(b, h, w), loss, commitment.detach(),
                               codebook.detach(), counts, perplexity(counts).float(), restarts)

    @torch.no_grad()
    def _update(self, flat: Tensor, idx: Tensor, counts: Tensor) -> int:
        dist = _distributed()
        if dist is not None:  # the global batch's counts (module doc)
            counts = counts.clone()
            dist.all_reduce(counts)
        if self.ema:
            sums = torch.zeros_like(self.embed_sum).index_add_(0, idx, flat)
            if dist is not None:
                dist.all_reduce(sums)
            self.cluster_size.mul_(self.decay).add_(counts, alpha=1.0 - self.decay)
            self.embed_sum.mul_(self.decay).add_(sums, alpha=1.0 - self.decay)
            n = self.cluster_size.sum()
            smoothed = (self.cluster_size + self.eps) / (n + self.n_embed * self.eps) * n
            self.embedding.data.copy_(self.embed_sum / smoothed[:, None])
        self.unused_steps.add_(1).masked_fill_(counts > 0, 0)
        if not self.restart_after:
            return 0
        dead = (self.unused_steps >= self.restart_after).nonzero().flatten()
        if dead.numel() == 0:
            return 0
        picks = torch.randint(0, flat.shape[0], (dead.numel(),), device=flat.device)
        fresh = flat[picks]
        if dist is not None:  # every rank restarts with rank 0's vectors
            dist.broadcast(fresh, src=0)
        self.embedding.data[dead] = fresh.to(self.embedding.dtype)
        self.embed_sum[dead] = fresh
        self.cluster_size[dead] = 1.0
        self.unused_steps[dead] = 0
        return int(dead.numel())


def _distributed() -> object | None:
    """``torch.distributed`` when a process group of more than one rank is running."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist
    return None


class VQAutoencoder(FirstStage):
    """LDM vector-quantised autoencoder (``vqgan``): ``encode`` gives pre-quantisation latents."""

    Config = VQConfig
    regularizer = "vq"

    def __init__(self, config: VQConfig | None = None):
        super().__init__()
        self.config = cfg = config or VQConfig()
        c = cfg.latent_channels
        self.encoder = Encoder(cfg, c)
        self.quant_conv = nn.Conv2d(c, c, 1)
        self.quantizer = VectorQuantizer(cfg.n_embed, c, beta=cfg.beta, ema=cfg.ema,
                                         decay=cfg.ema_decay, eps=cfg.ema_eps,
                                         restart_after=cfg.restart_after)
        self.post_quant_conv = nn.Conv2d(c, c, 1)
        self.decoder = Decoder(cfg, c)

    def encode(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` -> continuous pre-quantisation latents ``(B, c, H/f, W/f)``."""
        check_image(x, self.config.in_channels, self.config.downsample)
        return self.quant_conv(self.encoder(x))

    def quantize(self, z: Tensor, update: bool = False) -> QuantizerOutput:
        return self.quantizer(z, update=update)

    def decode(self, z: Tensor) -> Tensor:
        """Quantise ``z`` to the codebook (no codebook update), then decode."""
        return self.decoder(self.post_quant_conv(self.quantize(z).z_q))

    def encode_indices(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` -> code indices ``(B, H/f, W/f)``."""
        return self.quantize(self.encode(x)).indices

    def decode_indices(self, indices: Tensor) -> Tensor:
        """Code indices ``(B, h, w)`` -> images."""
        z_q = rearrange(self.quantizer.embedding[indices], "b h w c -> b c h w")
        return self.decoder(self.post_quant_conv(z_q))

    def forward(self, x: Tensor, sample: bool = True) -> AutoencoderOutput:
        """Encode, quantise (updating the codebook in training mode), decode.
        ``sample`` is accepted for symmetry with ``kl-vae`` and ignored."""
        quant = self.quantize(self.encode(x), update=self.training)
        return AutoencoderOutput(self.decoder(self.post_quant_conv(quant.z_q)), quant.z_q,
                                 quant=quant)
