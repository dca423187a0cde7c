"""Latent diffusion plugins: first-stage autoencoders, noise schedulers and the LDM pieces.

The public scheduler bases are :class:`NoiseSchedule` (the forward process: ``add_noise``,
``velocity``, ``training_target``) and :class:`SchedulerBase` (plus ``set_timesteps``,
``step``, ``new_state``); a third-party sampler subclasses ``SchedulerBase``. They are
imported lazily, so importing this package stays torch-free.
"""

from __future__ import annotations

from typing import Any

__all__ = ["NoiseSchedule", "SchedulerBase", "SchedulerConfig"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import scheduler_base
        return getattr(scheduler_base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
