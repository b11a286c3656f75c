"""Projection checkpoints: plain dicts loadable with torch.load(..., weights_only=True).

Writes/reads one `.pt` file: {"format", "version", "config" (ContrastiveConfig as a dict),
"audio_dim", "text_dim", "state_dict" (ProjectionHeads), "epoch", "val_metrics", "history",
"train_cache", "val_cache", "encoders" (the train cache's audio/text provenance)}.
"""

import hashlib
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from ..atomic import atomic_path
from ..errors import UserError
from .config import ContrastiveConfig
from .heads import ProjectionHeads

FORMAT = "diffatr-projection"
VERSION = 1


@dataclass
class Projection:
    """Trained projection heads and how they were made."""

    config: ContrastiveConfig
    heads: ProjectionHeads
    meta: dict

    @property
    def audio_dim(self) -> int:
        return self.heads.audio_dim

    @property
    def text_dim(self) -> int:
        return self.heads.text_dim

    @property
    def joint_dim(self) -> int:
        return self.heads.joint_dim


def save_projection(path: str | os.PathLike, proj: Projection) -> None:
    """Write the checkpoint atomically (a crash never leaves a half-written file)."""
    blob = {
        "format": FORMAT,
        "version": VERSION,
        "config": asdict(proj.config),
        "audio_dim": proj.audio_dim,
        "text_dim": proj.text_dim,
        "state_dict": {k: v.detach().cpu().clone() for k, v in proj.heads.state_dict().items()},
        **proj.meta,
    }
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def load_projection(path: str | os.PathLike, device: torch.device | str = "cpu") -> Projection:
    """Read a checkpoint written by `save_projection`, refusing anything else clearly."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such projection checkpoint")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"{path}: not a readable diffatr checkpoint ({exc!s:.120})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        found = blob.get("format") if isinstance(blob, dict) else None
        raise UserError(
            f"{path}: not a projection checkpoint (format {found!r}, expected {FORMAT!r}); "
            "make one with `diffatr train-contrastive`"
        )
    if blob.get("version") != VERSION:
        raise UserError(
            f"{path}: projection checkpoint version {blob.get('version')}; this diffatr reads "
            f"{VERSION}"
        )
    known = {f.name for f in fields(ContrastiveConfig)}
    try:
        cfg = ContrastiveConfig(**{k: v for k, v in blob["config"].items() if k in known})
        heads = ProjectionHeads(int(blob["audio_dim"]), int(blob["text_dim"]), cfg.joint_dim)
        heads.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        raise UserError(f"{path}: damaged projection checkpoint ({exc!s:.160})") from None
    reserved = {"format", "version", "config", "audio_dim", "text_dim", "state_dict"}
    meta = {k: v for k, v in blob.items() if k not in reserved}
    return Projection(cfg, heads.to(device).eval(), meta)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
