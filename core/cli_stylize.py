"""``gaf stylize``: neural style transfer of one picture (Gatys et al. 2016).

    gaf stylize --content C.png --style S.png --out O.png
    gaf stylize --content C.png --texture stripes --out O.png --save-style S.png
                [--features NAME|PATH] [--method NAME] [--steps N] [--size PX]
                [--content-weight A] [--style-weight B] [--init content|noise]
                [--seed N] [--device auto|cpu|cuda|cuda:N]

The method is a registered ``stylizer`` (``gatys``: L-BFGS on the pixels against the
Gram matrices of a fixed network) and the network a ``style-features`` name or path
(``gaf list style-features``; the plugin :mod:`gaf.plugins.style` provides both,
reached through the registry, so the core imports no plugin). The style is a picture
(``--style``) or a procedural texture (``--texture``: item 0 of the ``textures``
dataset with ``textures=[NAME]`` and ``--seed``). Both images are read at the content
picture's own size, or at ``--size`` × ``--size``, and the style is resized to it.

Everything a user can get wrong is checked before the optimisation starts (the
pictures, the output path, the method, the network, the weights, the texture name),
and reported as one line with exit code 2; the result is written atomically (a
temporary file in the output's directory, then a rename), so a failed or interrupted
run leaves nothing behind.

``gaf.cli`` names this command lazily by its module name, as the registry names its
targets, so this module sits above ``gaf.cli`` and reuses its picture helpers
(``read_image``, ``check_output_file``, ``write_grid``). It imports torch only inside
the command.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import click

from .cli import DEVICE, FINITE_GUIDANCE, check_output_file, read_image, write_grid
from .errors import BadConfig, BadData
from .registry import REGISTRY

__all__ = ["stylize_cmd", "picture_size", "write_png"]


@click.command("stylize")
@click.option("--content", "content_path", required=True, metavar="PNG",
              type=click.Path(exists=True, dir_okay=False),
              help="the picture whose layout is kept")
@click.option("--style", "style_path", default=None, metavar="PNG",
              type=click.Path(exists=True, dir_okay=False),
              help="the picture whose texture is copied (or --texture)")
@click.option("--texture", default=None, metavar="NAME",
              help="a procedural texture as the style: stripes, checks, dots, waves, noise")
@click.option("--out", "out_path", required=True, metavar="PNG",
              type=click.Path(dir_okay=False), help="where the result is written (.png)")
@click.option("--save-style", "style_out", default=None, metavar="PNG",
              type=click.Path(dir_okay=False),
              help="also write the style image as used (resized; the texture drawn)")
@click.option("--features", default=None, metavar="NAME|PATH",
              help="feature network: random-cnn, or a path to a feature net directory or a "
                   "trained clip run (gaf list style-features) [default: the method's]")
@click.option("--method", default="gatys", show_default=True, metavar="NAME",
              help="the stylizer (gaf list stylizer)")
@click.option("--steps", type=click.IntRange(1), default=None,
              help="optimisation steps (L-BFGS iterations) [default: the method's]")
@click.option("--size", type=click.IntRange(8, 4096), default=None, metavar="PX",
              help="work at PX x PX [default: the content picture's size]")
@click.option("--content-weight", type=FINITE_GUIDANCE, default=None,
              help="alpha [default: the feature network's]")
@click.option("--style-weight", type=FINITE_GUIDANCE, default=None,
              help="beta [default: the feature network's]")
@click.option("--init", type=click.Choice(["content", "noise"]), default=None,
              help="start from the content picture or from noise [default: the method's]")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**63 - 1),
              help="seed of the noise start and of --texture")
@click.option("--device", type=DEVICE, default="auto", show_default=True)
def stylize_cmd(content_path: str, style_path: str | None, texture: str | None,
                out_path: str, style_out: str | None, features: str | None, method: str,
                steps: int | None, size: int | None, content_weight: float | None,
                style_weight: float | None, init: str | None, seed: int,
                device: str) -> None:
    """Repaint a picture with the texture of another (Gatys et al. 2016).

    \b
    gaf stylize --content scene.png --style texture.png --out out.png
    gaf stylize --content scene.png --texture stripes --features runs/clip --out out.png
    """
    if (style_path is None) == (texture is None):
        raise BadConfig("gaf stylize needs exactly one of --style PNG and --texture NAME")
    for flag, given in (("--out", out_path), ("--save-style", style_out)):
        if given is not None and Path(given).suffix.lower() != ".png":
            raise BadConfig(f"{flag} {given}: the picture is written as PNG; give a file name "
                            "ending in .png")
    out = check_output_file(Path(out_path), ".png")
    saved = check_output_file(Path(style_out), ".png") if style_out else None
    if saved is not None and saved.resolve() == out.resolve():
        raise BadConfig(f"--save-style {style_out} is the --out file; give another name")
    height, width = (size, size) if size else picture_size(Path(content_path))
    options = {"features": features, "steps": steps, "content_weight": content_weight,
               "style_weight": style_weight, "init": init}
    stylizer = REGISTRY.create("stylizer", method,
                               **{k: v for k, v in options.items() if v is not None})
    style_source: Any = texture
    if texture is not None:
        side = max(height, width)
        textures = REGISTRY.create("dataset", "textures", textures=[texture], resolution=side,
                                   size=1, seed=seed)
    import torch

    from .device import resolve_device

    dev = resolve_device(device)
    content = torch.from_numpy(read_image(Path(content_path), (3, height, width)))
    if texture is not None:
        style = textures[0]["image"][:, :height, :width]
        style_source = textures[0]["caption"]
    else:
        style = torch.from_numpy(read_image(Path(style_path), (3, height, width)))
        style_source = style_path
    result = stylizer(content, style, seed=seed, device=dev)
    write_png(result.image, out)
    if saved is not None:
        write_png(style, saved)
    click.echo(f"style: {style_source}; {getattr(stylizer, 'gaf_name', method)} with "
               f"{getattr(stylizer.config, 'features', '?')}, {result.iterations} iterations")
    click.echo(f"style loss {result.style_loss_start:.4g} -> {result.style_loss:.4g} "
               f"({result.style_fraction:.3f} of the start); content loss "
               f"{result.content_loss:.4g}")
    click.echo(f"written to {out}" + (f" (style: {saved})" if saved is not None else ""))


def picture_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` of the picture at ``path``; a file Pillow cannot read is a
    :class:`BadData` naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as picture:
            width, height = picture.size
    except (UnidentifiedImageError, OSError) as exc:
        raise BadData(f"cannot read the image: {exc}", path=str(path)) from None
    if min(height, width) < 8:
        raise BadData(f"the picture is {width}x{height}; style transfer needs at least 8x8 "
                      "(or give --size)", path=str(path))
    return height, width


def write_png(image: Any, path: Path) -> Path:
    """Write one image ``(C, H, W)`` in ``[-1, 1]`` as a PNG, atomically: a temporary
    file in ``path``'s directory (made if needed), then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        write_grid(image[None], 1, 1, Path(tmp), pad=0)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path
