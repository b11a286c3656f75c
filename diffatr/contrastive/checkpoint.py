"""Projection checkpoints: plain dicts loadable with torch.load(..., weights_only=True).

Writes/reads one `.pt` file: {"format", "version", "config" (ContrastiveConfig as a dict),
"audio_dim", "text_dim", "state_dict" (ProjectionHeads), "epoch", "val_metrics", "history",
"train_cache", "val_cache", "encoders" (the train cache's audio/text provenance)}.
"""

import os
from dataclasses import asdict, dataclass

import torch

from ..checkpoints import config_from, read_checkpoint, write_checkpoint
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
    write_checkpoint(path, blob)


def load_projection(
    path: str | os.PathLike, device: torch.device | str = "cpu", trust: bool = False
) -> Projection:
    """Read a checkpoint written by `save_projection`, refusing anything else clearly."""
    blob = read_checkpoint(path, FORMAT, VERSION, "projection", "diffatr train-contrastive", trust)
    try:
        cfg = config_from(ContrastiveConfig, blob["config"], path)
        heads = ProjectionHeads(int(blob["audio_dim"]), int(blob["text_dim"]), cfg.joint_dim)
        heads.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        raise UserError(f"{path}: damaged projection checkpoint ({exc!s:.160})") from None
    reserved = {"format", "version", "config", "audio_dim", "text_dim", "state_dict"}
    meta = {k: v for k, v in blob.items() if k not in reserved}
    return Projection(cfg, heads.to(device).eval(), meta)
