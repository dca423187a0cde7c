"""Autoregressive text-to-image over VQGAN tokens: a DALL-E-style decoder
(:mod:`.dalle`) and the guided, cached sampling loop every token model shares
(:mod:`.sampling`)."""
