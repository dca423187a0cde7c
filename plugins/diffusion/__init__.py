"""Latent diffusion plugins: first-stage autoencoders, noise schedulers and the LDM pieces."""
