"""Text-to-image pipelines that tie the parts together: the ``ldm`` objective
(:mod:`.ldm`), its sampler :class:`~.diffusion_pipeline.DiffusionPipeline`, the
text-conditional GAN (:mod:`.gan`: ``gan-int-cls``, its ``gan`` pipeline), the one
evaluation of every text-to-image generator (:mod:`.evaluation`), and
:mod:`.training_data` (the conditions a dataset provides)."""
