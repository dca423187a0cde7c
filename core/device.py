"""Device selection (``--device auto|cpu|cuda|cuda:N``) and mixed precision."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .errors import GafError

if TYPE_CHECKING:  # pragma: no cover
    import torch

DEVICES = ("auto", "cpu", "cuda")
#: the forms a device name may take (run spec, ``--device``), for error messages
DEVICE_FORMS = "auto, cpu, cuda, cuda:N"


def is_device_name(name: str) -> bool:
    """Whether ``name`` is a device name the run spec and ``--device`` accept:
    ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    return name in DEVICES or (name.startswith("cuda:") and name[5:].isascii()
                               and name[5:].isdigit())


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU. Asking for CUDA without one is an error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise GafError(f"--device {name}: CUDA is not available on this machine "
                           "(use --device cpu or auto)")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise GafError(f"unknown device {name!r}; use one of {', '.join(DEVICES)}")


@contextlib.contextmanager
def autocast(device: torch.device, precision: str = "auto") -> Iterator[None]:
    """bf16 autocast on CUDA with ``precision`` auto, and on any device, CPU included, with
    ``precision`` bf16 (docs/benchmarks.md § bf16 autocast); full precision otherwise."""
    import torch

    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if use_bf16:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    else:
        yield
