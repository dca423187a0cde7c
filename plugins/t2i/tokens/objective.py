"""``dalle``: autoregressive text-to-image over the codes of a frozen VQGAN.

``gaf run --objective dalle`` trains, in one run directory:

1. **the tokenizer of images**: the ``vqgan`` first stage (f = 4 on 32×32 ``shapes``:
   8×8 = 64 codes from a 256-entry codebook), trained for
   ``objective.first_stage_steps`` steps in ``RUN_DIR/first_stage/`` unless
   ``--autoencoder RUN_DIR`` names a trained one (:func:`~gaf.plugins.t2i.ldm.
   frozen_first_stage`, shared with ``ldm``). Its reconstruction caps every result, so
   the evaluation reports it (``tokenizer_psnr`` on held-out images);
2. **the token model** (``--token-model``, default ``dalle``:
   :class:`~.dalle.DalleTransformer`) on ``(caption tokens, image codes)`` pairs: every
   training image is encoded to its codes once; each step draws a batch in the
   ``"dalle-order"`` epoch order and replaces a caption by the null caption with
   probability ``p_uncond`` (drawn from the ``"dalle-drop"`` stream at the step, so a
   resumed run draws what the uninterrupted one would), so that sampling can use
   classifier-free guidance; the loss is the model's (``(L_text + 7 L_img) / 8``);
3. **the evaluation**: the shared text-to-image evaluation
   (:func:`gaf.plugins.t2i.evaluation.evaluate_pipeline`) of the ``tokens`` pipeline
   with the run's ``sampler`` (``--sampler top-k --set sampler.k=…``) at each of
   ``eval_guidance``, on ``eval_split``; with ``rerank_clip`` (a clip run: the
   *generation* CLIP, never the evaluation one) also at each of ``eval_candidates``:
   N images per caption, the one the CLIP puts closest to the caption kept.

The token model's shape must fit the first stage: ``token-model.codebook`` its
codebook size, ``rows`` × ``cols`` its latent grid; a mismatch is a
:class:`~gaf.errors.BadConfig` naming the options to set.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

import attrs
import torch
from torch import Tensor

from gaf.atomic import atomic_write_text
from gaf.config import option
from gaf.config import to_dict as config_dict
from gaf.errors import BadConfig, BadData
from gaf.interfaces import ObjectiveBase
from gaf.runs import RunContext
from gaf.seeding import EpochOrder, torch_generator

from ...images.batches import stack_images
from ..ldm import frozen_first_stage
from ..run_meta import PIPELINE_FILE
from ..training_data import conditions_of

__all__ = ["TokenT2I", "TokenT2IConfig", "PartiT2I", "tokenizer_quality"]


@attrs.define
class TokenT2IConfig:
    """Options of the ``dalle`` objective (the ``[objective]`` section)."""

    p_uncond: float = option(0.1, "probability of training a caption as the null caption "
                                  "(classifier-free guidance)", ge=0, lt=1)
    first_stage_steps: int = option(2000, "steps of the vqgan stage when --autoencoder is "
                                          "not a trained one", ge=0)
    encode_batch_size: int = option(250, "images per batch when encoding the codes", ge=1)
    rerank_clip: str = option("", "a clip run (not the evaluation CLIP) that ranks the "
                                  "candidates of pipeline option candidates > 1")
    eval_candidates: tuple[int, ...] = option((1,), "candidates per caption evaluated at "
                                                    "fd_guidance (above 1: reranked by "
                                                    "rerank_clip)", ge=1)
    eval_images: int = option(200, "captions per evaluation set (0 = no evaluation)", ge=0)
    eval_split: Literal["eval", "validation"] = option(
        "eval", "held-out split the evaluation reads ('validation' for tuning)")
    eval_guidance: tuple[float, ...] = option((1.0, 2.0, 3.0), "guidance scales evaluated",
                                              ge=0)
    fd_guidance: float = option(2.0, "guidance of the headline row (FD/KID, floors, "
                                     "swapped pairs, diversity)", ge=0)
    eval_batch_size: int = option(100, "images per sampling batch in the evaluation", ge=1)
    fd: bool = option(True, "report the in-domain FD of the samples (and its floor)")
    eval_clip_steps: int = option(3000, "training steps of the evaluation CLIP (0 = no "
                                        "CLIP score)", ge=0)
    eval_clip_dir: str = option("", "directory of the evaluation CLIP (default "
                                    "RUN_DIR/evaluation_clip); one can serve many runs")
    throughput_batch: int = option(100, "images in the timed sampling pass (0 = none)",
                                   ge=0)
    grid_prompts: int = option(8, "columns of samples/grid.png", ge=0)

    def __attrs_post_init__(self) -> None:
        self.eval_guidance = tuple(float(g) for g in self.eval_guidance)
        self.eval_candidates = tuple(int(n) for n in self.eval_candidates)


class TokenT2I(ObjectiveBase):
    """Autoregressive text-to-image over VQGAN codes (see the module docstring)."""

    Config = TokenT2IConfig
    uses = {"token-model": "dalle", "autoencoder": "vqgan", "dataset": "shapes",
            "sampler": "top-k"}
    #: top-k 8 and guidance 2 (fd_guidance): the lowest FD of the validation table in
    #: docs/results.md § DALL-E and Parti
    component_defaults = {"sampler": {"k": 8}}
    unit = "images"
    timeline = {"year": 2021, "method": "DALL-E (autoregressive over VQGAN codes)",
                "paper": "Ramesh et al., Zero-Shot Text-to-Image Generation (arXiv 2102.12092)"}
    # the step count keeps the whole default run (the vqgan stage included) within the
    # issue's time budget; docs/results.md § DALL-E and Parti has the timing and the
    # validation table the sampling defaults come from
    train_defaults = {"steps": 1600, "batch_size": 64, "lr": 1e-3, "warmup_steps": 100,
                      "schedule": "cosine", "weight_decay": 0.01, "max_grad_norm": 1.0,
                      "log_every": 50}
    plot_keys = ("loss", "loss_image", "loss_text", "lr", "grad_norm")

    def __init__(self, config: TokenT2IConfig | None = None):
        self.config = config or TokenT2IConfig()

    # ------------------------------------------------------------------ setup

    def setup(self, ctx: RunContext) -> None:
        cfg = self.config
        self.device, self.world, self.seed = ctx.device, ctx.world, ctx.spec.seed
        self.batch_size = ctx.spec.train.batch_size
        self.dataset = ctx.component("dataset")
        if len(self.dataset) < 1:
            raise BadData("the dataset has no images")
        self.model = ctx.component("token-model")
        self._check_shapes(ctx)  # before a first stage is trained for nothing
        self.reranker = self._reranker(ctx)
        self.autoencoder, self.autoencoder_source = frozen_first_stage(
            ctx, self.dataset, cfg.first_stage_steps)
        self.codes = self._encode_dataset()
        self.captions = conditions_of(self.dataset, "caption")
        self.text = torch.cat([self.model.tokenize(self.captions[s:s + 1000])
                               for s in range(0, len(self.captions), 1000)])
        self.order = EpochOrder(len(self.dataset), self.seed, "dalle-order")
        self.sampler_spec = ctx.spec.components["sampler"]
        self.sampler = ctx.component("sampler")
        if ctx.world.is_main:
            self._write_pipeline_file(ctx)
        ctx.log(f"{ctx.spec.objective}: {len(self.codes)} training images as "
                f"{tuple(self.codes.shape[1:])} codes of {self.model.config.codebook}, "
                f"first stage {self.autoencoder_source or 'built'}")

    def _reranker(self, ctx: RunContext) -> Any:
        """The generation CLIP of ``rerank_clip`` (None without one); it may not be the
        evaluation CLIP, whose scores would then reward their own choice."""
        cfg = self.config
        if max(cfg.eval_candidates) > 1 and not cfg.rerank_clip:
            raise BadConfig("objective.eval_candidates above 1 needs objective.rerank_clip "
                            "(a clip run that ranks the candidates)")
        if not cfg.rerank_clip:
            return None
        from pathlib import Path

        from ...clip.frozen import load_clip

        path = Path(cfg.rerank_clip).resolve()
        evaluation = Path(cfg.eval_clip_dir or ctx.run_dir / "evaluation_clip").resolve()
        if path == evaluation or evaluation in path.parents:
            raise BadConfig(f"objective.rerank_clip={cfg.rerank_clip!r} is the evaluation "
                            "CLIP; rank candidates with another clip run")
        self.rerank_path = str(path)
        return load_clip(path, who="objective.rerank_clip").to(ctx.device)

    @torch.no_grad()
    def _encode_dataset(self) -> Tensor:
        """Every training image's code grid ``(n, rows, cols)``, computed once."""
        n, step = len(self.dataset), self.config.encode_batch_size
        out = [self.autoencoder.encode_indices(
            stack_images(self.dataset, range(s, min(n, s + step))).to(self.device)).cpu()
            for s in range(0, n, step)]
        return torch.cat(out).long()

    def _check_shapes(self, ctx: RunContext) -> None:
        """The token model must read the first stage's codes: its ``codebook`` the
        codebook size, ``rows`` × ``cols`` the latent grid of the dataset's images."""
        ae = ctx.component("autoencoder")
        if not callable(getattr(ae, "encode_indices", None)):
            raise BadConfig(f"objective {ctx.spec.objective} reads image codes: the "
                            "autoencoder must be a vector-quantised one (--autoencoder "
                            "vqgan or a vqgan run)")
        size = stack_images(self.dataset, [0]).shape[-2:]
        f = int(ae.config.downsample)
        grid, codebook = (size[0] // f, size[1] // f), int(ae.config.n_embed)
        cfg = self.model.config
        if (cfg.rows, cfg.cols) != grid or cfg.codebook != codebook:
            raise BadConfig(f"the first stage gives {grid[0]}x{grid[1]} codes of {codebook}, "
                            f"but the token model reads {cfg.rows}x{cfg.cols} of "
                            f"{cfg.codebook}; set token-model.rows={grid[0]}, "
                            f"token-model.cols={grid[1]} and token-model.codebook={codebook}")

    def _write_pipeline_file(self, ctx: RunContext) -> None:
        comp = ctx.spec.components["autoencoder"]
        first = ({"path": self.autoencoder_source} if self.autoencoder_source
                 else {"name": comp.name, "options": comp.options})
        sampler = self.sampler_spec
        meta = {"format_version": 1, "objective": ctx.spec.objective, "pipeline": "tokens",
                "modules": {"token_model": "token_model"}, "autoencoder": first,
                "sampler": {"name": sampler.name, "options": dict(sampler.options)},
                "guidance": self.config.fd_guidance, "condition_key": "caption",
                "rerank_clip": self.rerank_path if self.reranker is not None else None,
                "sample_shape": [int(self.autoencoder.config.in_channels),
                                 *stack_images(self.dataset, [0]).shape[-2:]]}
        atomic_write_text(ctx.run_dir / PIPELINE_FILE, json.dumps(meta, indent=2) + "\n")

    def modules(self) -> dict[str, Any]:
        return {"token_model": self.model}

    # ------------------------------------------------------------------- data

    def train_batch(self, index: int) -> dict[str, Tensor]:
        """This rank's share of global batch ``index``: caption tokens, codes and the
        captions dropped to the null one (a pure function of ``index`` and the seed)."""
        start, count = self.world.shard(index * self.batch_size, self.batch_size)
        picks = torch.as_tensor(self.order.slice(start, count))
        # the global batch's draws, this rank's share: any number of ranks trains alike
        every = torch.rand(self.batch_size, generator=torch_generator(
            self.seed, "dalle-drop", index)) < self.config.p_uncond
        offset = start - index * self.batch_size
        drop = every[offset:offset + count]
        return {"text": self.text[picks].to(self.device),
                "codes": self.codes[picks].flatten(1).to(self.device),
                "drop": drop.to(self.device)}

    def loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        loss, metrics = self.model.loss(batch["text"], batch["codes"], batch["drop"])
        return loss, {**metrics, "dropped": float(batch["drop"].float().mean())}

    # ------------------------------------------------------------- evaluation

    def pipeline(self) -> Any:
        from .pipeline import TokenPipeline

        return TokenPipeline(self.model, self.autoencoder, self.sampler,
                             guidance=self.config.fd_guidance, reranker=self.reranker)

    def evaluate(self, ctx: RunContext) -> dict[str, float]:
        """The shared text-to-image evaluation at ``fd_guidance`` (the headline) and
        every other ``eval_guidance`` (a sweep), with the tokenizer's reconstruction."""
        from ..evaluation import evaluate_pipeline, evaluation_splits, train_wall_seconds
        from ..ldm import reused_first_stage

        cfg = self.config
        if cfg.eval_images == 0:
            return {}
        eval_ds, swapped, extra = evaluation_splits(ctx, cfg.eval_split, self.dataset, ctx.log)
        extra.update(self._tokenizer_quality(eval_ds))
        sweep = {f"guidance_{g:g}": {"guidance": g} for g in cfg.eval_guidance
                 if g != cfg.fd_guidance}
        sweep.update({f"candidates_{n}": {"guidance": cfg.fd_guidance, "candidates": n}
                      for n in cfg.eval_candidates if n > 1})
        info = {"trainable_parameters": float(sum(p.numel() for p in self.model.parameters())),
                "frozen_parameters": float(sum(p.numel()
                                               for p in self.autoencoder.parameters())),
                # a first stage reused with --autoencoder: its run's time counts too
                "train_wall_s": round(train_wall_seconds(
                    ctx.run_dir, reused_first_stage(self.autoencoder_source)), 2)}
        return {**extra, **evaluate_pipeline(
            self.pipeline(), {"guidance": cfg.fd_guidance}, train_ds=self.dataset,
            eval_ds=eval_ds, swapped_ds=swapped, sweep=sweep, condition_key="caption",
            n_captions=cfg.eval_images, fd_images=cfg.eval_images if cfg.fd else 0,
            features_dir=ctx.run_dir / "features",
            clip_dir=cfg.eval_clip_dir or ctx.run_dir / "evaluation_clip",
            clip_steps=cfg.eval_clip_steps, batch_size=cfg.eval_batch_size,
            throughput_batch=cfg.throughput_batch, grid_prompts=cfg.grid_prompts,
            out_dir=ctx.run_dir, seed=ctx.spec.seed, info=info, log=ctx.log)}

    def _tokenizer_quality(self, eval_ds: Any) -> dict[str, float]:
        """:func:`tokenizer_quality` on the first 200 held-out images."""
        n = min(200, len(eval_ds))
        evaluator = eval_ds.evaluator() if hasattr(eval_ds, "evaluator") else None
        return tokenizer_quality(self.autoencoder, stack_images(eval_ds, range(n)).to(
            self.device), conditions_of(eval_ds, "caption")[:n], evaluator)


@torch.no_grad()
def tokenizer_quality(autoencoder: Any, images: Tensor, captions: Sequence[str],
                      evaluator: Any = None) -> dict[str, float]:
    """The ceiling of any image made from the first stage's codes: the PSNR of the
    reconstructions of ``images`` (``tokenizer_psnr``) and, with an evaluator, its
    reading of them against their own ``captions`` (``tokenizer_{attr}`` with ``_se``:
    what a token model that drew the real images' codes exactly would score)."""
    from ..evaluation import attribute_scores

    recon = autoencoder.decode_indices(autoencoder.encode_indices(images))
    recon = recon.float().clamp(-1, 1)
    mse = ((recon - images) / 2).pow(2).flatten(1).mean(1)
    psnr = (-10 * torch.log10(mse.clamp_min(1e-10))).mean()
    out = {"tokenizer_psnr": round(float(psnr), 3)}
    if evaluator is not None:
        scores = attribute_scores(evaluator, recon.cpu(), list(captions))
        out.update({f"tokenizer_{k}": v for k, v in scores.items() if k != "n"})
    return out


class PartiT2I(TokenT2I):
    """``parti``: the same training and evaluation with the ``parti`` encoder–decoder
    token model (its caption dropout replaces the encoder's states with its learned
    null context)."""

    uses = {**TokenT2I.uses, "token-model": "parti"}
    timeline = {"year": 2022, "method": "Parti (encoder-decoder over VQGAN codes)",
                "paper": "Yu et al., Scaling Autoregressive Models for Content-Rich "
                         "Text-to-Image Generation (arXiv 2206.10789)"}
