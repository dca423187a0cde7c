"""The ``tokens`` pipeline: images from a token model run (``dalle``), sampled one image
code at a time with a KV cache and classifier-free guidance on the logits, through any
registered ``sampler``, then decoded by the frozen VQGAN.

``gaf sample --pipeline RUN_DIR --prompt … --guidance 3 --sampler top-k --set k=32``:
``--sampler`` and ``--set`` are load options (``sampler``, ``sampler_options``; the
run's own sampler and options when not given), ``--guidance`` a call option.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import Tensor

from gaf.config import from_dict, option
from gaf.errors import BadConfig

from ..diffusion_pipeline import call_inputs
from .sampling import sample_codes

__all__ = ["TokenOptions", "TokenPipeline", "rerank"]


@attrs.define
class TokenOptions:
    """Call options of the ``tokens`` pipeline (``gaf sample --option KEY=VALUE``)."""

    guidance: float = option(2.0, "classifier-free guidance on each token's logits, "
                                  "1 = none (the unconditional half is skipped)", ge=0)
    candidates: int = option(1, "images sampled per caption; above 1 the run's generation "
                                "CLIP keeps the one closest to the caption", ge=1, le=256)


class TokenPipeline:
    """Sample image codes with :func:`~.sampling.sample_codes`, decode them with the
    first stage (see the module docstring)."""

    Options = TokenOptions

    def __init__(self, model: Any, autoencoder: Any, sampler: Any, *, guidance: float = 2.0,
                 reranker: Any = None):
        self.model, self.autoencoder, self.sampler = model, autoencoder, sampler
        self.default_guidance = float(guidance)
        #: the generation CLIP that ranks candidates (never the evaluation CLIP)
        self.reranker = reranker

    @property
    def device(self) -> torch.device:
        return self.model.device

    @classmethod
    def from_run(cls, run_dir: str | Path, *, sampler: str | None = None,
                 sampler_options: dict[str, Any] | None = None, device: Any = "cpu",
                 registry: Any = None) -> TokenPipeline:
        """Load a ``dalle`` run (``RUN_DIR/pipeline.json``); ``sampler`` (a registered
        name) and ``sampler_options`` replace the run's sampler and its options."""
        from gaf.components import load_from
        from gaf.registry import REGISTRY

        from ..run_meta import component_ref, field, module_dirs, read_meta

        registry = registry or REGISTRY
        meta = read_meta(run_dir, "tokens", "dalle")
        dirs = module_dirs(meta, False, required=("token_model",))
        first = component_ref(meta, "autoencoder")
        saved = component_ref(meta, "sampler") or {"name": "top-k", "options": {}}
        guidance = field(meta, "guidance", (int, float), default=2.0)
        rerank = field(meta, "rerank_clip", str, default=None, allow_none=True)
        model = load_from(registry, "token-model", dirs["token_model"]).to(device).eval()
        if first is None:
            raise meta.fail("autoencoder", "missing")
        if first.get("path"):
            path = Path(first["path"])
            ae = load_from(registry, "autoencoder", path if path.is_absolute()
                           else meta.root / path)
        else:
            ae = registry.create("autoencoder", first["name"], **first.get("options", {}))
        name = sampler or saved["name"]
        options = {**(saved.get("options", {}) if name == saved["name"] else {}),
                   **(sampler_options or {})}
        reranker = None
        if rerank:
            from ...clip.frozen import load_clip

            reranker = load_clip(rerank, who=f"{meta.path}: rerank_clip").to(device)
        return cls(model, ae.to(device).eval(), registry.create("sampler", name, **options),
                   guidance=guidance, reranker=reranker)

    def options(self, **options: Any) -> TokenOptions:
        """:attr:`Options` from keyword options (the run's guidance by default)."""
        return from_dict(self.Options, {"guidance": self.default_guidance, **options},
                         where="pipeline tokens")

    def evaluations_per_image(self, **options: Any) -> float:
        """Per candidate: one transformer call per image token (×2 with guidance: the
        two halves run as one batch but cost two rows each), one prefill of the caption
        counted as one, and the first-stage decode; with ``candidates`` N > 1, N of
        those plus N CLIP image encodings and one CLIP text encoding."""
        opts = self.options(**options)
        one = (self.model.image_tokens + 1) * (2 if opts.guidance != 1.0 else 1) + 1
        n = opts.candidates
        return float(one * n + (n + 1 if n > 1 else 0))

    @torch.inference_mode()
    def __call__(self, conditions: Sequence[str], *, seed: int = 0,
                 generators: Sequence[torch.Generator] | None = None,
                 **options: Any) -> Tensor:
        """One image per caption in ``[-1, 1]``; image ``i`` draws from
        ``generators[i]`` (default: seeded ``seed + i``)."""
        opts = self.options(**options)
        conditions, generators = call_inputs(conditions, seed, generators)
        n = opts.candidates
        if n > 1 and self.reranker is None:
            raise BadConfig(f"candidates={n} needs a generation CLIP to rank them: train the "
                            "run with objective.rerank_clip=RUN_DIR (a clip run other than "
                            "the evaluation CLIP)")
        # caption i's n candidates are consecutive rows drawing in turn from generator i,
        # so image i depends on its caption and its seed only
        text = self.model.tokenize(conditions).repeat_interleave(n, dim=0)
        codes = sample_codes(self.model, text, sampler=self.sampler, guidance=opts.guidance,
                             generators=[g for g in generators for _ in range(n)])
        cfg = self.model.config
        grid = codes.view(len(text), cfg.rows, cfg.cols).to(self.device)
        images = self.autoencoder.decode_indices(grid).float().clamp(-1, 1)
        if n == 1:
            return images
        return rerank(self.reranker, images, conditions, n)


def rerank(clip: Any, images: Tensor, captions: Sequence[str], n: int) -> Tensor:
    """For each caption, the one of its ``n`` consecutive candidate ``images`` whose CLIP
    image embedding has the highest cosine with the caption's text embedding."""
    import torch.nn.functional as F

    img = F.normalize(clip.encode_image(images).float(), dim=-1).view(len(captions), n, -1)
    txt = F.normalize(clip.encode_text(list(captions)).float(), dim=-1)
    best = torch.einsum("bnd,bd->bn", img, txt).argmax(dim=1)
    return images.view(len(captions), n, *images.shape[1:])[torch.arange(len(captions)), best]
