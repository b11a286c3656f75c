"""The project's checkpoints on disk: plain dicts that `torch.load(..., weights_only=True)` reads.

Reads/writes one `.pt` file. Every checkpoint the stages write (the projection heads, the
diffusion head, the co-attention head) carries `format` (what it is), `version` and `config`
(its stage's settings as a dict) beside its tensors; this module owns what they share: the
atomic write, the refusals of a missing, unreadable, foreign or newer file, the config read back
into its dataclass (unknown settings refused, missing ones warned about, by name), and the file
hash that provenance records.
"""

import hashlib
import os
from dataclasses import asdict, fields
from pathlib import Path

import torch

from .atomic import atomic_path
from .checkpoint_kinds import torch_load
from .errors import UserError
from .progress import warn


def write_checkpoint(path: str | os.PathLike, blob: dict) -> None:
    """torch.save `blob` atomically (a crash never leaves a half-written file)."""
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


_MADE_BY = "train-contrastive, train-head or train-coattention"


def _load(path: Path, trust: bool = False):
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04" and magic[:1] != b"\x80":  # torch.save's zip, or a raw pickle
        raise UserError(
            f"{path}: not a checkpoint: not a file torch.save wrote "
            f"(diffatr's come from {_MADE_BY})"
        )
    try:
        return torch_load(path, trust)  # weights_only=True unless --trust-checkpoint
    except UserError:
        raise
    except Exception as exc:
        raise UserError(
            f"{path}: a PyTorch file that cannot be read as a diffatr checkpoint "
            f"({type(exc).__name__}: {exc!s:.120}); diffatr's come from {_MADE_BY}"
        ) from None


def checkpoint_format(path: str | os.PathLike) -> str | None:
    """The `format` of a readable checkpoint file, else None (its loader then says why)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        blob = _load(path)
    except UserError:
        return None
    return blob.get("format") if isinstance(blob, dict) else None


def read_checkpoint(
    path: str | os.PathLike, fmt: str, version: int, what: str, made_by: str, trust: bool = False
) -> dict:
    """The checkpoint dict at `path`, or a UserError naming the file and what to do.

    `what` names the kind in messages ("projection"), `made_by` the command that makes one;
    `trust` (--trust-checkpoint) allows a file that needs full unpickling, which diffatr's own
    checkpoints never do.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such {what} checkpoint")
    blob = _load(path, trust)
    if not isinstance(blob, dict) or blob.get("format") != fmt:
        found = blob.get("format") if isinstance(blob, dict) else None
        raise UserError(
            f"{path}: not a {what} checkpoint (format {found!r}, expected {fmt!r}); "
            f"make one with `{made_by}`"
        )
    if blob.get("version") != version:
        raise UserError(
            f"{path}: {what} checkpoint version {blob.get('version')}; this diffatr reads {version}"
        )
    return blob


def config_from(cls, values: dict, path: str | os.PathLike = "checkpoint"):
    """A stage's config dataclass from a checkpoint's `config` dict (`path` names it in messages).

    Keys this diffatr does not know (a checkpoint from another version) are refused by name:
    settings that made the weights would be silently lost. Missing keys (a checkpoint from
    before a setting existed) take today's defaults, with a warning naming each.
    """
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise UserError(
            f"{path}: its config has settings this diffatr does not know ({', '.join(unknown)}); "
            "it was made by another version of diffatr: use that version, or retrain"
        )
    missing = [name for name in known if name not in values]
    if missing:
        defaults = asdict(cls())
        shown = ", ".join(f"{name}={defaults[name]!r}" for name in missing)
        warn(f"{path}: its config lacks {shown}; using these defaults (made by an older diffatr?)")
    return cls(**values)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks (checkpoints are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
