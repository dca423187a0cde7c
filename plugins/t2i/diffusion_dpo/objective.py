"""``diffusion-dpo``: preference fine-tuning of a trained ``ldm`` run (Wallace et al. 2023,
Diffusion-DPO) with the project's preference losses.

``gaf run --objective diffusion-dpo --set objective.init_run=RUN_DIR`` (or with
``--data pairs.jsonl``) trains, in one run directory:

1. **the preference data** (:mod:`.data`): with ``preferences = "sample"`` (what
   ``"auto"`` means without ``--data``) ``samples_per_prompt`` images of each of the
   first ``prompts`` distinct training captions of the base run's dataset (0 = all of
   them, a long job on a CPU; the default 500 gives about 3,000 pairs) are sampled
   from the base run's pipeline and labelled by a **generation CLIP**, never the
   evaluation CLIP: ``reward_clip`` (a ``clip`` run directory) or one trained for
   ``reward_clip_steps`` steps on the training split as a stage in
   ``RUN_DIR/reward_clip/``; the pairs are cached in ``RUN_DIR/data/preferences.jsonl``
   (and ``data/images/``), which a resumed run reads back. With ``preferences =
   "file"`` (what ``"auto"`` means with ``--data FILE``) the pairs are the file's.
   ``pairs = "best-worst"`` then keeps only each caption's pair of largest reward
   margin (:func:`.data.widest_pairs`): the generation CLIP's small margins are the
   pairs it orders least reliably;
2. **the noise model**, initialised from the base run's (its EMA weights by default,
   ``init_ema``), against a frozen copy of those same weights as the reference; the
   conditioner and the first stage are the base run's, frozen; the training scheduler
   is the base run's;
3. **the evaluation**: ``ldm``'s (:meth:`LDM.evaluate`, the shared text-to-image
   evaluation on the base run's held-out captions), with the base run's cached
   evaluation CLIP and feature net when it has them, so the figures compare with the
   base run's.

Loss (:mod:`.loss`)
-------------------
For micro-batch ``i`` of ``B`` pairs: one ``t`` and one ``ε`` per pair (stream
``"diffusion-dpo-noise"`` at the micro-batch and the rank's first position; the pairs
from the ``"diffusion-dpo-order"`` :class:`~gaf.seeding.EpochOrder`), shared by its
winner and loser; the ``2B`` noised latents go through the policy in one call and
through the reference in one call without gradients; the errors become ε errors
(:func:`.loss.epsilon_error_weight`: ``ᾱ_t ‖v − v̂‖²`` for a v-prediction model),
averaged over the latent elements (``error_reduction``); ``h`` is
``losses.margin(−e_θ^w, −e_θ^l, −e_ref^w, −e_ref^l)`` times ``T·ω(λ_t) = 1`` (ω
constant as in the paper, ``T`` folded into ``β``), and the loss is the named
preference loss (``loss``: ``dpo``, ``cdpo``, ``robust``, ``ipo`` or ``hinge``) with
``β`` (``beta``). With ``p_uncond > 0`` a pair's caption is replaced by the
conditioner's null for both images (off by default).

**The baseline** ``loss = "sft"`` fine-tunes on the winners only: the base run's own
loss (the mean squared error in the model's parameterisation, as ``ldm`` trains) on
each pair's chosen image at the pair's ``t`` and ``ε``; the loser and the reference
are still run so that the same metrics are logged (``implicit_accuracy`` tells whether
plain fine-tuning on the winners also separates the pairs).

**β and the learning rate were chosen on the validation split** (docs/results.md §
Diffusion-DPO): the paper's 2,500–5,000 are for Stable Diffusion's 4×64×64 latents and
do not transfer by themselves. Here lower β or a higher learning rate moved the model
away from the base and made every evaluator score worse; β = 3000 at a learning rate
of 1e-5 was the setting of highest mean attribute accuracy among the fine-tuned ones
(and none beat the base beyond one standard error with the generation CLIP's labels).

Logged per step: ``loss``; ``implicit_accuracy``, the fraction of pairs with
``h > 0``; ``margin``, the mean ``h``; ``rewards/margins``, the mean ``β·h``;
``error_chosen``/``error_rejected`` (the policy's mean ε errors); and
``reward_margin``, the mean labelling-reward difference of the batch's pairs when the
data carries one.

The run's ``pipeline.json`` names the ``diffusion`` pipeline with the fine-tuned noise
model and the base run's conditioner, first stage and scheduler (by absolute path), so
``gaf sample --pipeline RUN_DIR`` samples it.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Literal

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor

from gaf.atomic import atomic_write_text
from gaf.config import option
from gaf.errors import BadConfig, BadData
from gaf.runs import RunContext
from gaf.seeding import EpochOrder, torch_generator

from ..diffusion_pipeline import PIPELINE_FILE
from ..ldm import LDM, LDMConfig
from .base import base_context, load_base
from .data import (PreferencePairs, read_preferences, sample_preferences, widest_pairs,
                   write_preferences)
from .loss import denoising_errors, epsilon_error_weight, pair_loss, pair_margin

__all__ = ["DiffusionDPO", "DiffusionDPOConfig"]

#: where a run keeps its sampled preference pairs (its images in ``data/images/``)
PREFERENCES_FILE = "data/preferences.jsonl"
#: where a run trains its generation CLIP when ``reward_clip`` is not given
REWARD_CLIP_DIR = "reward_clip"


@attrs.define
class DiffusionDPOConfig(LDMConfig):
    """Options of ``diffusion-dpo``: ``ldm``'s evaluation options (its
    ``first_stage_steps`` is unused: the first stage is the base run's) and its own."""

    init_run: str = option("", "the trained ldm run to fine-tune (its directory; required)")
    init_ema: bool = option(True, "start from, and refer to, the base run's EMA weights "
                                  "(what its pipeline samples with)")
    loss: Literal["dpo", "cdpo", "robust", "ipo", "hinge", "sft"] = option(
        "dpo", "preference loss applied to the margin h (gaf.plugins.preference.losses), "
               "or 'sft': the baseline that fine-tunes on the winners only")
    beta: float = option(3000.0, "β of the loss, T folded in (chosen on the validation "
                                 "split with the default learning rate)", gt=0)
    label_smoothing: float = option(0.1, "ε of cdpo and robust (assumed label-flip rate)",
                                    ge=0, lt=0.5)
    error_reduction: Literal["mean", "sum"] = option(
        "mean", "denoising errors averaged or summed over the latent elements")
    preferences: Literal["auto", "sample", "file"] = option(
        "auto", "the pairs: 'sample' (the base run's samples labelled by a generation "
                "CLIP), 'file' (task.path, set by --data) or 'auto' (file when a path is "
                "given, else sample)")
    samples_per_prompt: int = option(4, "images sampled per training caption (K)", ge=2)
    pairs: Literal["all", "best-worst"] = option(
        "all", "the pairs trained on: every strictly ordered pair of a caption's images, "
               "or only its pair of largest reward margin (the best image against the "
               "worst; needs the rewards, which sampled pairs carry)")
    prompts: int = option(500, "training captions to sample for (the first distinct ones; "
                               "0 = all)", ge=0)
    sample_steps: int = option(50, "sampling steps of the preference images", ge=1)
    sample_guidance: float = option(3.0, "guidance scale of the preference images", ge=0)
    sample_scheduler: str = option("ddim", "scheduler that samples the preference images")
    reward_clip: str = option("", "a clip run that labels the sampled pairs (not the "
                                  "evaluation CLIP); default: one trained in "
                                  "RUN_DIR/reward_clip")
    reward_clip_steps: int = option(3000, "training steps of the generation CLIP trained "
                                          "when reward_clip is not given", ge=1)
    p_uncond: float = option(0.0, "probability of training a pair with the null condition",
                             ge=0, lt=1)
    ema_decay: float = option(0.0, "EMA decay cap of the fine-tuned noise model (0 = none: "
                                   "sampling uses the trained weights)", ge=0, lt=1)


class DiffusionDPO(LDM):
    """Diffusion-DPO fine-tuning of an ``ldm`` run (see the module docstring)."""

    Config = DiffusionDPOConfig
    #: ``--data FILE`` sets the ``jsonl`` task's path; everything else is the base run's
    uses = {"task": "jsonl"}
    unit = "pairs"
    #: a row of the timeline table; ``init_run`` names the baseline whose run it
    #: fine-tunes (examples/timeline.py passes that run as ``objective.init_run``)
    timeline = {"year": 2023, "method": "latent diffusion + Diffusion-DPO",
                "paper": "Wallace et al., Diffusion Model Alignment Using Direct Preference "
                         "Optimization (arXiv 2311.12908)",
                "init_run": "ldm"}
    train_defaults = {"steps": 500, "batch_size": 16, "lr": 1e-5, "warmup_steps": 20,
                      "schedule": "constant", "max_grad_norm": 1.0, "log_every": 10}
    plot_keys = ("loss", "implicit_accuracy", "margin", "reward_margin", "lr", "grad_norm")

    def __init__(self, config: DiffusionDPOConfig | None = None):
        self.config = config or DiffusionDPOConfig()

    # ------------------------------------------------------------------ setup

    def setup(self, ctx: RunContext) -> None:
        cfg = self.config
        if ctx.world.enabled and ctx.spec.train.parallel == "fsdp":
            raise BadConfig("objective diffusion-dpo trains with train.parallel=ddp")
        self.device, self.world, self.seed = ctx.device, ctx.world, ctx.spec.seed
        self.batch_size = ctx.spec.train.batch_size
        self.base = load_base(cfg.init_run, ema=cfg.init_ema, device=ctx.device,
                              registry=ctx.registry)
        self.view = base_context(ctx, self.base)
        parts = self.base.parts
        self.noise_model = parts["noise_model"]
        for p in self.noise_model.parameters():
            p.requires_grad_(True)
        self.reference = copy.deepcopy(self.noise_model).eval()
        for p in self.reference.parameters():
            p.requires_grad_(False)
        self.autoencoder, self.conditioner = parts["autoencoder"], parts["conditioner"]
        for module in (self.autoencoder, self.conditioner):
            if module is not None:
                module.eval()
                for p in module.parameters():
                    p.requires_grad_(False)
        if self.conditioner is None:
            raise BadConfig(f"{self.base.root} has no conditioner: diffusion-dpo needs a "
                            f"caption-conditioned run")
        self.autoencoder_source = str(self.base.autoencoder_record.get("path", ""))
        self.scheduler = parts["scheduler"]
        self.sample_shape = tuple(parts["sample_shape"])
        self.dataset = self.view.component("dataset")
        self.pairs = self._preferences(ctx)
        if cfg.pairs == "best-worst":
            self.pairs = widest_pairs(self.pairs)
        self.latents = self._encode(self.pairs.images)
        self.order = EpochOrder(len(self.pairs), self.seed, "diffusion-dpo-order")
        self.ema = {}
        if cfg.ema_decay > 0:
            from ...nn.ema import make_shadow

            self.ema = {"noise_model_ema": make_shadow(self.noise_model)}
        if ctx.world.is_main:
            atomic_write_text(ctx.run_dir / PIPELINE_FILE,
                              json.dumps(self._pipeline_meta(ctx), indent=2) + "\n")
        ctx.log(f"diffusion-dpo: {len(self.pairs)} pairs over {len(self.latents)} images, "
                f"loss {cfg.loss}, beta {cfg.beta:g}, base {self.base.root}")

    def _preferences(self, ctx: RunContext) -> PreferencePairs:
        """The training pairs (module docstring, step 1)."""
        cfg = self.config
        task = ctx.component("task")
        path = str(getattr(getattr(task, "config", None), "path", "") or "")
        source = cfg.preferences if cfg.preferences != "auto" else ("file" if path else "sample")
        shape = tuple(self._image_shape())
        if source == "file":
            if not path:
                raise BadConfig("objective.preferences='file' reads task.path: pass "
                                "--data FILE.jsonl")
            skip = getattr(task.config, "on_error", "raise") == "skip"
            return read_preferences(path, shape, skip_errors=skip)
        if path:
            raise BadConfig(f"objective.preferences='sample' but --data {path!r} was given; "
                            f"drop one of them")
        if self.base.condition_key != "caption":
            raise BadConfig(f"diffusion-dpo samples captions for its pairs; the base run is "
                            f"conditioned on {self.base.condition_key!r}: pass --data")
        cache = ctx.run_dir / PREFERENCES_FILE
        # rank 0 decides: another rank must not see a cache rank 0 has just written
        if ctx.world.broadcast(not cache.is_file() if ctx.world.is_main else None):
            captions = self._training_captions()
            reward = self._reward_clip(ctx, shape)
            ctx.log(f"diffusion-dpo: sampling {cfg.samples_per_prompt} images for each of "
                    f"{len(captions)} training captions, labelled by {self.reward_path}")
            pipe = self._base_pipeline(cfg.sample_scheduler)
            images, rewards = sample_preferences(
                pipe, reward, captions, k=cfg.samples_per_prompt, seed=self.seed,
                batch_size=cfg.eval_batch_size, log=ctx.log, steps=cfg.sample_steps,
                guidance=cfg.sample_guidance)
            if ctx.world.is_main:
                write_preferences(ctx.path(PREFERENCES_FILE), captions, images, rewards)
            ctx.world.barrier()
        try:
            return read_preferences(cache, shape)
        except BadData as exc:
            raise BadData(f"{exc} (the cached preference pairs of this run: delete "
                          f"{cache.parent} to sample them again)") from None

    def _image_shape(self) -> tuple[int, ...]:
        from ...images.batches import stack_images

        return tuple(stack_images(self.dataset, [0]).shape[1:])

    def _training_captions(self) -> list[str]:
        from ..training_data import conditions_of

        captions = list(dict.fromkeys(conditions_of(self.dataset, "caption")))
        return captions[:self.config.prompts] if self.config.prompts else captions

    def _reward_clip(self, ctx: RunContext, shape: tuple[int, ...]) -> Any:
        """The generation CLIP that labels the samples (module docstring); never the
        evaluation CLIP."""
        from gaf.launch import train_stage

        from ...clip.frozen import load_clip

        cfg = self.config
        if cfg.reward_clip:
            path = Path(cfg.reward_clip).expanduser().resolve()
        else:
            path = ctx.run_dir / REWARD_CLIP_DIR
            if not (path / "encoder" / "gaf.json").is_file():
                ctx.log(f"training the generation CLIP ({cfg.reward_clip_steps} steps) in "
                        f"{path}")
                train_stage(self.view, path, "clip", ("dataset",),
                            {"steps": cfg.reward_clip_steps},
                            components={"encoder": {"name": "clip", "in_channels": shape[0],
                                                    "resolution": shape[-1]}},
                            label="reward clip stage")
        judges = {self.evaluation_clip_dir(ctx).resolve(),
                  (self.base.root / "evaluation_clip").resolve()}
        if any(path == j or j in path.parents for j in judges):
            raise BadConfig(f"objective.reward_clip={cfg.reward_clip!r} is the evaluation "
                            f"CLIP, the judge of the result; label the pairs with another "
                            f"clip run")
        self.reward_path = str(path)
        return load_clip(path, who="objective.reward_clip").to(ctx.device)

    def _base_pipeline(self, scheduler: str) -> Any:
        """The base run's pipeline: the reference weights, sampled with ``scheduler``."""
        import gaf

        from ..diffusion_pipeline import DiffusionPipeline
        from ..ldm import _plain

        sched = gaf.REGISTRY.get("scheduler", scheduler).from_config(
            _plain(self.scheduler.config))
        return DiffusionPipeline(self.reference, sched, autoencoder=self.autoencoder,
                                 conditioner=self.conditioner, sample_shape=self.sample_shape)

    @torch.no_grad()
    def _encode(self, images: Tensor) -> Tensor:
        """Every pair image's scaled latent, computed once (as ``ldm`` does)."""
        ae, scale, out = self.autoencoder, float(self.autoencoder.scale_factor), []
        for start in range(0, len(images), self.config.encode_batch_size):
            chunk = images[start:start + self.config.encode_batch_size].to(self.device)
            out.append(ae.encode(chunk).float() * scale)
        latents = torch.cat(out)
        if tuple(latents.shape[1:]) != self.sample_shape:
            raise BadData(f"the pair images encode to latents {tuple(latents.shape[1:])}; the "
                          f"base run's noise model takes {self.sample_shape}")
        if not torch.isfinite(latents).all():
            raise BadData("the first stage produced non-finite latents")
        return latents

    def _pipeline_meta(self, ctx: RunContext) -> dict[str, Any]:
        base = self.base
        return {"format_version": 1, "objective": ctx.spec.objective, "pipeline": "diffusion",
                "modules": {"noise_model": "noise_model"},
                "ema_modules": {"noise_model": "noise_model_ema"} if self.ema else None,
                "conditioner": base.conditioner_record,
                "autoencoder": base.autoencoder_record, "scheduler": base.scheduler_record,
                "sample_shape": list(self.sample_shape),
                "condition_key": self.conditioner.condition_key, "init_run": str(base.root)}

    def modules(self) -> dict[str, Any]:
        return {"noise_model": self.noise_model, **self.ema}

    # ------------------------------------------------------------------- data

    def train_batch(self, index: int) -> dict[str, Any]:
        start, count = self.world.shard(index * self.batch_size, self.batch_size)
        picks = [int(k) for k in self.order.slice(start, count)]
        gen = torch_generator(self.seed, "diffusion-dpo-noise", index, start)
        T = self.scheduler.config.num_train_timesteps
        t = torch.randint(0, T, (count,), generator=gen)
        noise = torch.randn((count, *self.sample_shape), generator=gen)
        drop = torch.rand(count, generator=gen) < self.config.p_uncond
        p, d = self.pairs, self.device
        return {"z_chosen": self.latents[[p.chosen[k] for k in picks]],
                "z_rejected": self.latents[[p.rejected[k] for k in picks]],
                "conditions": [p.prompts[k] for k in picks],
                "reward_margin": torch.tensor([p.reward_margin[k] for k in picks],
                                              dtype=torch.float64),
                "t": t.to(d), "noise": noise.to(d), "drop": drop.to(d)}

    # ------------------------------------------------------------------- loss

    def predict(self, model: Any, z0: Tensor, t: Tensor, noise: Tensor,
                context: Tensor) -> tuple[Tensor, Tensor]:
        """``model``'s output at ``x_t`` of ``z0`` and its training target (in the
        model's own parameterisation: ε, v or x0)."""
        sched = self.scheduler
        out = model(sched.add_noise(z0, noise, t), t, context)
        return out, sched.training_target(z0, noise, t)

    def errors(self, out: Tensor, target: Tensor, t: Tensor) -> Tensor:
        """``(N,)`` ε errors of the outputs ``out`` at timesteps ``t`` (:mod:`.loss`)."""
        sched = self.scheduler
        alpha_bar = sched.alphas_cumprod.to(t.device)[t]
        weight = epsilon_error_weight(sched.config.prediction_type, alpha_bar)
        return denoising_errors(out, target, weight, self.config.error_reduction)

    def loss(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
        cfg = self.config
        n = len(batch["t"])
        z0 = torch.cat([batch["z_chosen"], batch["z_rejected"]])
        t = batch["t"].repeat(2)  # winner and loser share t and ε
        noise = batch["noise"].repeat(2, *([1] * (batch["noise"].dim() - 1)))
        with torch.no_grad():
            context = self.conditioner(batch["conditions"])
            null = self.conditioner.null(n).to(context)
            context = torch.where(batch["drop"][:, None, None], null, context)
        context = torch.cat([context, context])
        out, target = self.predict(self.noise_model, z0, t, noise, context)
        errors = self.errors(out, target, t)
        with torch.no_grad():
            ref_errors = self.errors(*self.predict(self.reference, z0, t, noise, context), t)
        h = pair_margin(errors, ref_errors)
        if cfg.loss == "sft":  # the baseline: the base run's own loss on the winners only
            loss = F.mse_loss(out[:n].float(), target[:n].float())
        else:
            loss = pair_loss(cfg.loss, h, cfg.beta, cfg.label_smoothing).mean()
        seen = h.detach()
        metrics = {"implicit_accuracy": float((seen > 0).float().mean()),
                   "margin": float(seen.mean()), "rewards/margins": float(cfg.beta * seen.mean()),
                   "error_chosen": float(errors[:n].detach().mean()),
                   "error_rejected": float(errors[n:].detach().mean())}
        known = batch["reward_margin"][~torch.isnan(batch["reward_margin"])]
        if len(known):
            metrics["reward_margin"] = float(known.mean())
        return loss, metrics

    # ------------------------------------------------------------- evaluation

    def evaluate(self, ctx: RunContext) -> dict[str, float]:
        """``ldm``'s evaluation of the fine-tuned model on the base run's held-out captions
        (module docstring)."""
        return super().evaluate(base_context(ctx, self.base))

    def features_dir(self, ctx: RunContext) -> Path:
        shared = self.base.root / "features"
        return shared if shared.is_dir() else ctx.run_dir / "features"

    def evaluation_clip_dir(self, ctx: RunContext) -> Path:
        shared = self.base.root / "evaluation_clip"
        if self.config.eval_clip_dir or not shared.is_dir():
            return super().evaluation_clip_dir(ctx)
        return shared

    def _evaluation_info(self, ctx: RunContext) -> dict[str, float]:
        """Parameters (trainable: the noise model; frozen: the first stage and the
        conditioner) and ``train_wall_s``: this run's wall time plus the base run's."""
        from ..evaluation import parameters_used, train_wall_seconds

        return {"trainable_parameters": float(sum(p.numel() for p in
                                                  self.noise_model.parameters())),
                "frozen_parameters": float(sum(p.numel() for p in self.autoencoder.parameters())
                                           + parameters_used(self.conditioner)),
                "train_wall_s": round(train_wall_seconds(ctx.run_dir, self.base.root), 2)}

