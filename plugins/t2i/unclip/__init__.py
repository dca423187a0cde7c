"""unCLIP (DALL-E 2): a diffusion prior from a caption to a CLIP image embedding
(:mod:`gaf.plugins.diffusion.prior`), a decoder from the embedding to an image, their
objective (:mod:`.objective`), pipeline (:mod:`.pipeline`) and own figures
(:mod:`.evaluation`)."""
