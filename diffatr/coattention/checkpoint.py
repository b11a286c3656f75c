"""Co-attention checkpoints: plain dicts loadable with torch.load(..., weights_only=True).

Writes/reads one `.pt` file: {"format": "diffatr-coattention-head", "version", "config"
(CoAttentionConfig as a dict), "dims" ({"frames": Df, "tokens": Dl}), "state_dict", "epoch",
"val_metrics", "history", "train_cache", "val_cache"}.
"""

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from ..atomic import atomic_path
from ..errors import UserError
from .config import CoAttentionConfig
from .model import CoAttentionHead

FORMAT = "diffatr-coattention-head"
VERSION = 1


@dataclass
class CoHead:
    """A co-attention head with the settings it was trained with and its training record."""

    config: CoAttentionConfig
    model: CoAttentionHead
    meta: dict

    @property
    def dims(self) -> dict[str, int]:
        return {"frames": self.model.frame_dim, "tokens": self.model.token_dim}


def save_coattention(path: str | os.PathLike, head: CoHead) -> None:
    """Write the checkpoint atomically (a crash never leaves a half-written file)."""
    blob = {
        "format": FORMAT,
        "version": VERSION,
        "config": asdict(head.config),
        "dims": head.dims,
        "state_dict": {k: v.detach().cpu().clone() for k, v in head.model.state_dict().items()},
        **head.meta,
    }
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def _read(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"{path}: not a readable diffatr checkpoint ({exc!s:.120})") from None


def is_coattention_checkpoint(path: str | os.PathLike) -> bool:
    """Whether `path` is a readable file whose `format` says co-attention head (else False:
    the caller's own loader then explains what is wrong with it)."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        blob = _read(path)
    except UserError:
        return False
    return isinstance(blob, dict) and blob.get("format") == FORMAT


def load_coattention(path: str | os.PathLike, device: torch.device | str = "cpu") -> CoHead:
    """Read a checkpoint written by `save_coattention`, refusing anything else clearly."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint file")
    blob = _read(path)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        found = blob.get("format") if isinstance(blob, dict) else None
        raise UserError(
            f"{path}: not a co-attention checkpoint (format {found!r}, expected {FORMAT!r}); "
            "make one with `diffatr train-coattention`"
        )
    if blob.get("version") != VERSION:
        raise UserError(
            f"{path}: checkpoint version {blob.get('version')}; this diffatr reads {VERSION}"
        )
    known = {f.name for f in fields(CoAttentionConfig)}
    try:
        cfg = CoAttentionConfig(**{k: v for k, v in blob["config"].items() if k in known})
        model = CoAttentionHead(int(blob["dims"]["frames"]), int(blob["dims"]["tokens"]), cfg)
        model.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        raise UserError(f"{path}: damaged co-attention checkpoint ({exc!s:.200})") from None
    reserved = {"format", "version", "config", "dims", "state_dict"}
    meta = {k: v for k, v in blob.items() if k not in reserved}
    return CoHead(config=cfg, model=model.to(device).eval(), meta=meta)
