"""Imagen (Saharia et al. 2022): a frozen text-only language model as the text encoder
(:mod:`gaf.plugins.conditioners.frozen_lm`, trained by :mod:`.stages`), a pixel-space
base diffusion model and a super-resolution stage with noise-conditioning augmentation
(:mod:`gaf.plugins.diffusion.augmentation`), trained by :mod:`.objective` and sampled by
the ``cascade`` pipeline (:mod:`.pipeline`)."""
