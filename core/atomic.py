"""Files written whole or not at all, and read back with errors that name them.

Writes go to a temporary name in the same directory and are renamed into place, so a
crash leaves either the old file or the new one, never half of one. Reads never
unpickle: JSON and safetensors only, and an unreadable file becomes
:class:`~gaf.errors.BadData` naming it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import BadData

if TYPE_CHECKING:  # pragma: no cover
    import torch


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save_tensors(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike[str],
                        metadata: Mapping[str, str] | None = None) -> None:
    """safetensors ``save_file`` through a temporary file and a rename."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        save_file(contiguous, tmp, metadata=dict(metadata) if metadata else None)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_tensors(path: str | os.PathLike[str], device: str = "cpu") -> dict[str, torch.Tensor]:
    """Read a safetensors file; an unreadable file becomes :class:`BadData` naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError) as exc:
        raise BadData(f"cannot read safetensors: {exc}", path=str(path)) from None


def read_json(path: str | os.PathLike[str]) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise BadData(f"cannot read: {exc.strerror}", path=str(path)) from None
    except json.JSONDecodeError as exc:
        raise BadData(f"invalid JSON: {exc.msg}", path=str(path), line=exc.lineno) from None
    except UnicodeDecodeError as exc:
        raise BadData(f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
                      f"{exc.start})", path=str(path)) from None


def load_state(module: Any, tensors: Mapping[str, torch.Tensor], *, where: str) -> None:
    """``load_state_dict(strict=True)`` with a readable error for mismatched files."""
    try:
        module.load_state_dict(dict(tensors), strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0:3]
        raise BadData("weights do not fit the model: " + " ".join(first), path=where) from None
