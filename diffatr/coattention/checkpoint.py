"""Co-attention checkpoints: plain dicts loadable with torch.load(..., weights_only=True).

Writes/reads one `.pt` file: {"format": "diffatr-coattention-head", "version", "config"
(CoAttentionConfig as a dict), "dims" ({"frames": Df, "tokens": Dl}), "state_dict", "epoch",
"val_metrics", "history", "train_cache", "val_cache"}.
"""

import os
from dataclasses import asdict, dataclass

import torch

from ..checkpoints import checkpoint_format, config_from, read_checkpoint, write_checkpoint
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
    write_checkpoint(path, blob)


def is_coattention_checkpoint(path: str | os.PathLike) -> bool:
    """Whether `path` is a readable file whose `format` says co-attention head (else False:
    the caller's own loader then explains what is wrong with it)."""
    return checkpoint_format(path) == FORMAT


def load_coattention(
    path: str | os.PathLike, device: torch.device | str = "cpu", trust: bool = False
) -> CoHead:
    """Read a checkpoint written by `save_coattention`, refusing anything else clearly."""
    blob = read_checkpoint(
        path, FORMAT, VERSION, "co-attention", "diffatr train-coattention", trust
    )
    try:
        cfg = config_from(CoAttentionConfig, blob["config"], path)
        model = CoAttentionHead(int(blob["dims"]["frames"]), int(blob["dims"]["tokens"]), cfg)
        model.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        raise UserError(f"{path}: damaged co-attention checkpoint ({exc!s:.200})") from None
    reserved = {"format", "version", "config", "dims", "state_dict"}
    meta = {k: v for k, v in blob.items() if k not in reserved}
    return CoHead(config=cfg, model=model.to(device).eval(), meta=meta)
