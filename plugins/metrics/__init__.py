"""gaf.plugins.metrics: image metrics.

* :mod:`gaf.plugins.metrics.pixel` — ``psnr`` and ``ssim`` (reference vs reconstruction).
* :mod:`gaf.plugins.metrics.frechet` — ``fd`` and ``kid``: in-domain Fréchet distance
  and kernel distance on the features of a network trained on the real training split
  (not Inception FID / KID; see that module), and
  :func:`~gaf.plugins.metrics.frechet.distribution_distances`, the text-to-image
  protocol: samples for the captions of one real set against a disjoint real set,
  with the real-vs-real floors and KID standard errors.
* :mod:`gaf.plugins.metrics.features` — that feature network and its training: the
  default ``layout`` variant keeps a 3x3 map (position, size and count of the
  objects), the version-1 ``pooled`` one pools globally.
"""
