"""Diffusion-head checkpoints: plain dicts loadable with torch.load(..., weights_only=True).

Writes/reads one `.pt` file: {"format", "version", "config" (HeadConfig as a dict), "dim",
"t2a", "a2t" (Denoiser state dicts), "epoch", "val_metrics", "history", "train_cache"}.
"""

import os
from dataclasses import asdict, dataclass

import torch

from ..checkpoints import config_from, read_checkpoint, write_checkpoint
from ..errors import UserError
from .config import HeadConfig
from .denoiser import Denoiser
from .schedule import make_betas

FORMAT = "diffatr-diffusion-head"
VERSION = 1
DIRECTIONS = ("t2a", "a2t")


@dataclass
class Head:
    """A trained head: both directions' denoisers, the schedule they were trained with."""

    config: HeadConfig
    t2a: Denoiser
    a2t: Denoiser
    meta: dict

    @property
    def dim(self) -> int:
        return self.t2a.dim

    @property
    def betas(self) -> torch.Tensor:
        return make_betas(self.config.schedule, self.config.K)


def new_denoiser(dim: int, K: int, init: bool = True) -> Denoiser:
    return Denoiser(dim, max_steps=max(K, 1000), init=init)


def save_head(path: str | os.PathLike, head: Head) -> None:
    """Write the checkpoint atomically (a crash never leaves a half-written file)."""
    blob = {
        "format": FORMAT,
        "version": VERSION,
        "config": asdict(head.config),
        "dim": head.dim,
        # clone: a training run's parameters are views of both directions' stacked storage,
        # which torch.save would otherwise write whole for every tensor
        "t2a": {k: v.detach().cpu().clone() for k, v in head.t2a.state_dict().items()},
        "a2t": {k: v.detach().cpu().clone() for k, v in head.a2t.state_dict().items()},
        **head.meta,
    }
    write_checkpoint(path, blob)


def load_head(
    path: str | os.PathLike, device: torch.device | str = "cpu", trust: bool = False
) -> Head:
    """Read a checkpoint written by `save_head`, refusing anything else with a clear message."""
    blob = read_checkpoint(path, FORMAT, VERSION, "diffusion-head", "diffatr train-head", trust)
    try:
        cfg = config_from(HeadConfig, blob["config"], path)
        dim = int(blob["dim"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"{path}: damaged head checkpoint (config or dim: {exc!s:.80})") from None
    nets = {}
    for direction in DIRECTIONS:
        net = new_denoiser(dim, cfg.K, init=False)  # every weight comes from the checkpoint
        try:
            net.load_state_dict(blob[direction])
        except (KeyError, RuntimeError) as exc:
            raise UserError(
                f"{path}: the {direction} weights do not fit a {dim}-d denoiser ({exc!s:.200})"
            ) from None
        nets[direction] = net.to(device).eval()
    reserved = {"format", "version", "config", "dim", *DIRECTIONS}
    meta = {k: v for k, v in blob.items() if k not in reserved}
    return Head(config=cfg, t2a=nets["t2a"], a2t=nets["a2t"], meta=meta)
