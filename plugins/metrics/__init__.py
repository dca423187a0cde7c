"""gaf.plugins.metrics: image metrics.

* :mod:`gaf.plugins.metrics.pixel` — ``psnr`` and ``ssim`` (reference vs reconstruction).
* :mod:`gaf.plugins.metrics.frechet` — ``fd`` and ``kid``: in-domain Fréchet distance
  and kernel distance on the features of a network trained on the real training split
  (not Inception FID / KID; see that module).
* :mod:`gaf.plugins.metrics.features` — that feature network and its training.
"""
