"""Text-to-image pipelines that tie the parts together: the ``ldm`` objective
(:mod:`.ldm`), its sampler :class:`~.diffusion_pipeline.DiffusionPipeline` and its evaluation
(:mod:`.ldm_eval`), and :mod:`.training_data` (the conditions a dataset provides)."""
