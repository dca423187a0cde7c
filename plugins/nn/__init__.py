"""Network pieces shared across families: :mod:`.ema` (moving averages of weights, used by
the diffusion models and any generator sampled from averaged weights) and :mod:`.resample`
(the nearest x2 + 3x3 conv upsampler of the UNet and the autoencoders)."""
