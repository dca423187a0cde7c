"""Diffusion-DPO (Wallace et al. 2023): preference fine-tuning of a trained ``ldm`` run
with the project's preference losses.

* :mod:`~gaf.plugins.t2i.diffusion_dpo.loss` — the margin ``h`` from denoising errors
  (shared ``t`` and ``ε``, the v-to-ε weight) and the named preference loss on it;
* :mod:`~gaf.plugins.t2i.diffusion_dpo.data` — image pairs: read from a JSONL file, or
  sampled from the base run and labelled by a generation CLIP;
* :mod:`~gaf.plugins.t2i.diffusion_dpo.base` — loading the base run (modules, records,
  dataset);
* :mod:`~gaf.plugins.t2i.diffusion_dpo.objective` — the ``diffusion-dpo`` objective.
"""
