"""Text-conditional GANs: GAN-INT-CLS (Reed et al. 2016) and a modern stable variant.

:mod:`.networks` holds the DCGAN generator and the discriminator (concat or projection
head, BatchNorm or spectral norm), :mod:`.losses` the loss terms, :mod:`.objective`
the ``gan-int-cls`` objective, :mod:`.pipeline` the ``gan`` pipeline and
:mod:`.figures` the paper's two figures.
"""
