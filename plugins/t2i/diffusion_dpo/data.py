"""Preference pairs of images for ``diffusion-dpo``: read from a JSONL file, or sampled
from the base run and labelled by a generation CLIP.

**A file** (``--data FILE`` or ``objective.preferences = "file"`` with
``task.path=FILE``): the rows of the ``jsonl`` task's preference forms, read by its
reader (:func:`gaf.plugins.tasks.jsonl.read_jsonl`, so its checks and messages hold),
whose responses are image paths, absolute or relative to the file's directory::

    {"prompt": "a red circle", "chosen": "img/0001.png", "rejected": "img/0002.png"}

A ranked list (``responses``/``ranking``) gives each of its ordered pairs; an unpaired
``label`` row is refused. Every row is used for training (the task's held-out
fractions are not applied: the evaluation reads the base run's held-out captions).
Images must have the run's image shape (channels and size); a missing, unreadable or
wrongly sized image is a :class:`~gaf.errors.BadData` naming the file, the line, the
field (``chosen``, ``rejected`` or ``responses``) and the image's path. Optional
numeric ``chosen_reward``/``rejected_reward`` keys give the reward margin that the
objective logs.

**Sampled** (:func:`sample_preferences`): ``K`` images per caption from the base run's
pipeline, caption ``i``'s image ``j`` drawn with the seed ``seed + i·K + j``; each image
is scored with the cosine similarity of its CLIP image embedding and its caption's
text embedding under a *generation* CLIP (never the evaluation CLIP, which judges the
result); every pair with strictly different scores becomes (higher, lower) and ties
are dropped. :func:`write_preferences` stores them as such a file (PNGs in
``images/`` beside it), which is how a run caches them and a resumed run reads them
back: the training data is always what the file holds (8-bit images).
:func:`widest_pairs` keeps each prompt's pair of largest reward margin (the best image
against the worst; the objective's ``pairs = "best-worst"``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor

from gaf.errors import BadData

__all__ = ["PreferencePairs", "read_preferences", "sample_preferences", "write_preferences",
           "clip_rewards", "ordered_pairs", "widest_pairs"]


@attrs.define
class PreferencePairs:
    """Images and the pairs over them: pair ``p`` prefers ``images[chosen[p]]`` to
    ``images[rejected[p]]`` for ``prompts[p]``; ``reward_margin[p]`` is the reward
    difference (NaN when unknown); ``paths[i]`` is the file image ``i`` was read from
    (empty when the images were not read from files)."""

    images: Tensor  # (M, C, H, W) in [-1, 1]
    prompts: list[str]
    chosen: list[int]
    rejected: list[int]
    reward_margin: list[float]
    paths: list[Path] = attrs.field(factory=list)

    def __len__(self) -> int:
        return len(self.prompts)

    def select(self, keep: Sequence[int]) -> PreferencePairs:
        """Pairs ``keep`` (in that order) over the same images."""
        return PreferencePairs(self.images, [self.prompts[p] for p in keep],
                               [self.chosen[p] for p in keep], [self.rejected[p] for p in keep],
                               [self.reward_margin[p] for p in keep], self.paths)


def ordered_pairs(rewards: Sequence[float]) -> list[tuple[int, int]]:
    """Every ``(winner, loser)`` of items ``i < j`` with ``rewards`` strictly different,
    in the order of ``(i, j)``; ties are dropped."""
    out = []
    for i in range(len(rewards)):
        for j in range(i + 1, len(rewards)):
            if rewards[i] > rewards[j]:
                out.append((i, j))
            elif rewards[j] > rewards[i]:
                out.append((j, i))
    return out


@torch.no_grad()
def clip_rewards(model: Any, images: Tensor, captions: Sequence[str],
                 batch_size: int = 250) -> Tensor:
    """``(N,)``: the cosine similarity of image ``i``'s CLIP embedding with caption
    ``i``'s under ``model`` (a :class:`~gaf.plugins.clip.towers.CLIPModel`)."""
    out = []
    device = next(model.parameters()).device
    for s in range(0, len(captions), batch_size):
        img = F.normalize(model.encode_image(images[s:s + batch_size].to(device)), dim=-1)
        txt = F.normalize(model.encode_text(list(captions[s:s + batch_size])), dim=-1)
        out.append((img * txt).sum(-1).float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


def sample_preferences(pipe: Any, reward_model: Any, captions: Sequence[str], *, k: int,
                       seed: int, batch_size: int, log: Any = print,
                       **options: Any) -> tuple[Tensor, list[list[float]]]:
    """``(images (len(captions)·K, C, H, W), rewards per caption)`` (module docstring);
    ``options`` (``steps``, ``guidance``) go to the pipeline."""
    from ..evaluation import sample_in_batches

    conditions = [c for c in captions for _ in range(k)]
    seeds = [seed + n for n in range(len(conditions))]
    images = sample_in_batches(pipe, conditions, seeds, batch_size=batch_size, **options)
    rewards = clip_rewards(reward_model, images, conditions)
    log(f"diffusion-dpo: sampled {len(images)} images ({k} per caption), mean reward "
        f"{float(rewards.mean()):.4f}")
    return images, [rewards[i * k:(i + 1) * k].tolist() for i in range(len(captions))]


def write_preferences(path: Path, captions: Sequence[str], images: Tensor,
                      rewards: Sequence[Sequence[float]]) -> int:
    """Write the sampled images (``images/NNNNNN.png`` beside ``path``) and every
    strictly ordered pair of each caption's images (:func:`ordered_pairs`) as JSONL
    rows ``{prompt, chosen, rejected, chosen_reward, rejected_reward}``; returns the
    number of pairs. The JSONL file is written last, atomically: its presence means
    the images are complete."""
    from gaf.atomic import atomic_write_text

    from ...images.grid import save_grid

    folder = path.parent / "images"
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for n, image in enumerate(images):
        names.append(f"images/{n:06d}.png")
        save_grid(image[None, None], path.parent / names[-1], pad=0)
    rows, k = [], len(images) // max(1, len(captions))
    for i, caption in enumerate(captions):
        r = list(rewards[i])
        for w, lo in ordered_pairs(r):
            rows.append(json.dumps({"prompt": caption, "chosen": names[i * k + w],
                                    "rejected": names[i * k + lo], "chosen_reward": r[w],
                                    "rejected_reward": r[lo]}))
    atomic_write_text(path, "".join(row + "\n" for row in rows))
    return len(rows)


def read_preferences(path: str | Path, image_shape: Sequence[int], *,
                     skip_errors: bool = False) -> PreferencePairs:
    """The pairs of the JSONL file ``path`` (module docstring), images loaded once each;
    every problem a :class:`BadData` naming the file, line and field."""
    from gaf.plugins.tasks.jsonl import read_jsonl

    shape = tuple(int(n) for n in image_shape)
    records, _ = read_jsonl(str(path), skip_errors=skip_errors)
    folder = Path(path).expanduser().resolve().parent
    rewards = _rewards(Path(path).expanduser())
    index: dict[Path, int] = {}
    images: list[Tensor] = []
    prompts, chosen, rejected, margins = [], [], [], []
    for group in records:
        _, _, line = (getattr(group, "source", "") or f"{path}:0").rpartition(":")
        line_no = int(line) if line.isdigit() else None
        if not hasattr(group, "pairs"):
            raise BadData("diffusion-dpo trains on preference rows ({prompt, chosen, "
                          "rejected}), not SFT examples", path=str(path), line=line_no,
                          field="chosen")
        if group.labels is not None:
            raise BadData("diffusion-dpo trains on pairs; an unpaired row (completion, "
                          "label) has none", path=str(path), line=line_no, field="label")
        fields = (("chosen", "rejected") if len(group.responses) == 2
                  else ("responses",) * len(group.responses))
        rows = []
        for response, field in zip(group.responses, fields):
            image_path = Path(response).expanduser()
            image_path = image_path if image_path.is_absolute() else folder / image_path
            if image_path not in index:
                images.append(_load(image_path, shape, path, line_no, field))
                index[image_path] = len(images) - 1
            rows.append(index[image_path])
        margin = rewards.get(line_no, math.nan)
        for i, j in group.pairs:
            prompts.append(group.prompt)
            chosen.append(rows[i])
            rejected.append(rows[j])
            margins.append(margin if len(group.responses) == 2 else math.nan)
    if not prompts:
        raise BadData("no preference pairs", path=str(path))
    return PreferencePairs(torch.stack(images), prompts, chosen, rejected, margins,
                           list(index))


def widest_pairs(pairs: PreferencePairs) -> PreferencePairs:
    """Each prompt's one pair with the largest reward margin (the first on ties), in the
    order the prompts first appear; with every ordered pair of ``K`` scored images
    (what :func:`write_preferences` keeps) that is the best image against the worst.
    A pair without a reward margin is a :class:`BadData`: there is nothing to rank by."""
    best: dict[str, int] = {}
    for p, (prompt, margin) in enumerate(zip(pairs.prompts, pairs.reward_margin)):
        if math.isnan(margin):
            raise BadData(f"pair {p} ({prompt!r}) has no reward margin (chosen_reward and "
                          f"rejected_reward): the widest pair of a prompt needs them")
        if prompt not in best or margin > pairs.reward_margin[best[prompt]]:
            best[prompt] = p
    return pairs.select(list(best.values()))


def _load(image_path: Path, shape: tuple[int, ...], path: Any, line: int | None,
          field: str) -> Tensor:
    from gaf.cli import read_image

    if not image_path.is_file():
        raise BadData(f"image not found: {image_path}", path=str(path), line=line, field=field)
    try:
        array = read_image(image_path, shape, resize=False)
    except BadData as exc:
        detail = str(exc).removeprefix(f"{image_path}: ")
        raise BadData(f"{image_path}: {detail}", path=str(path), line=line,
                      field=field) from None
    return torch.from_numpy(array.copy())


def _rewards(path: Path) -> dict[int, float]:
    """Line number → ``chosen_reward − rejected_reward`` of the rows that have both
    as numbers (the sampled preference files); other lines are left out."""
    out: dict[int, float] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return out
    for n, text in enumerate(lines, start=1):
        try:
            row = json.loads(text)
        except ValueError:
            continue
        if isinstance(row, dict):
            a, b = row.get("chosen_reward"), row.get("rejected_reward")
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b)):
                out[n] = float(a) - float(b)
    return out
