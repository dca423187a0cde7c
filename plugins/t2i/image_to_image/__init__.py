"""Image-to-image diffusion (SR3 / Palette): super-resolution, inpainting, uncropping and
colourisation, optionally guided by a caption.

* :mod:`~gaf.plugins.t2i.image_to_image.masks` — the mask kinds (1 = generate) and
  their checks;
* :mod:`~gaf.plugins.t2i.image_to_image.tasks` — each task's source and the
  ``[image ; mask]`` condition layout;
* :mod:`~gaf.plugins.t2i.image_to_image.objective` — the ``image-to-image`` objective;
* :mod:`~gaf.plugins.t2i.image_to_image.pipeline` — the ``image-to-image`` pipeline;
* :mod:`~gaf.plugins.t2i.image_to_image.evaluation` — each task against its baseline.
"""
