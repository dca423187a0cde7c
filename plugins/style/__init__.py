"""Neural style transfer (Gatys, Ecker and Bethge 2016) without a pretrained VGG.

``gaf stylize --content C.png --style S.png --out O.png`` repaints a content image
with the Gram-matrix statistics of a style image by optimising the pixels with
L-BFGS. The parts, one module each:

* :mod:`.losses`: the Gram matrix, Gatys' style loss (``1/(4 N² M²)`` per layer,
  weights ``w_l``) and content loss (``½‖F − P‖²``);
* :mod:`.extractors`: the feature networks (kind ``style-features``): ``random-cnn``
  (an untrained multi-scale CNN, Ustyuzhaninov et al. 2016), ``feature-net`` (the
  project's in-domain classifier) and ``clip-image`` (a trained CLIP's CNN image
  tower); :func:`~.extractors.resolve_features` turns a name or a path into one;
* :mod:`.transfer`: the ``gatys`` stylizer (kind ``stylizer``): the loss and the L-BFGS
  optimisation;
* :mod:`.textures`: the ``textures`` dataset (kind ``dataset``): procedural style
  images (stripes, checks, dots, waves, noise), deterministic per seed.

A plugin adds a feature network by registering a ``style-features`` component that
meets the contract in :mod:`.extractors`, or a whole method as a ``stylizer``
(contract in :mod:`.transfer`); ``gaf stylize --features NAME`` / ``--method NAME``
then find it.
"""
