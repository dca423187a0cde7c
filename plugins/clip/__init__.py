"""CLIP (Radford et al. 2021): contrastive text–image towers, trained from scratch.

:mod:`.loss` holds the symmetric InfoNCE loss with duplicate captions as positives, the
temperature clamp and the differentiable all-gather for data parallelism.
"""
