"""What a checkpoint is, recognised from its content (never its name), in one place.

Reads: a `.pt`/`.pth` file (through `torch.load`, `weights_only=True` first), or a folder / local
Hugging Face cache entry holding a `transformers` model. Writes nothing.

Kinds:
  panns                 `{"model": PANNs state dict}` (CNN14 / ResNet38), for --audio-checkpoint
  wavcaps               WavCaps retrieval `{"model", "config", "epoch"}`, keys `audio_encoder.*`,
                        `text_encoder.*`, `audio_proj.*`, `text_proj.*`
  audio_text_retrieval  Mei et al. 2022 `{"model", "optimizer", "epoch"}`, keys `audio_enc.*`,
                        `text_enc.*`, `audio_linear.*`, `text_linear.*`
  clap                  a `transformers` ClapModel: a `save_pretrained` folder or a cached hub name
  projection, diffusion_head, coattention_head
                        this project's own checkpoints (their `format` entry)

Callers: `diffatr extract --joint-model` (the three joint kinds; the loaded blob is handed on, so
a 1 GB file is read once) and `diffatr evaluate --head` (which head). A new model kind is one
more entry here and one module under `extract/joint/`.
"""

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .torch_files import load_failure

JOINT_KINDS = ("wavcaps", "audio_text_retrieval", "clap")
HEAD_FORMATS = {
    "diffatr-projection": "projection",
    "diffatr-diffusion-head": "diffusion_head",
    "diffatr-coattention-head": "coattention_head",
}
PICKLE_WARNING = (
    "warning: {path}: not loadable with weights_only=True; loading it as a full pickle, which "
    "runs code from the file: use checkpoints from a source you trust"
)
_PANNS_KEYS = ("conv_block1.conv1.weight", "resnet.layer1.0.conv1.weight")


@dataclass(frozen=True)
class Recognised:
    """A checkpoint and what it is: `blob` is the loaded dict (None for folders and hub names)."""

    path: str  # as given
    kind: str  # one of JOINT_KINDS, "panns", or a value of HEAD_FORMATS
    blob: dict | None = None
    folder: Path | None = None  # clap: the folder holding config.json (a snapshot for hub names)


def load_torch_file(path: str | os.PathLike, *, allow_pickle: bool = True):
    """`torch.load` on CPU: weights_only=True first; a file refused by that is loaded as a full
    pickle only when `allow_pickle`, with a warning. A file torch cannot read at all (truncated,
    not a checkpoint) is a UserError naming it."""
    import torch

    file = Path(path)
    try:
        try:
            return torch.load(file, map_location="cpu", weights_only=True)
        except Exception as e:
            if not allow_pickle or ("weights_only" not in str(e) and "Weights only" not in str(e)):
                raise
            print(PICKLE_WARNING.format(path=file), file=sys.stderr)
            return torch.load(file, map_location="cpu", weights_only=False)
    except Exception as e:
        raise UserError(
            f"{file}: not a readable PyTorch checkpoint ({load_failure(file, e)})"
        ) from None


def _state_kind(state: dict) -> str | None:
    keys = [k for k in state if isinstance(k, str)]
    if any(k.startswith("audio_encoder.audio_enc.") for k in keys) and any(
        k.startswith("audio_proj.") for k in keys
    ):
        return "wavcaps"
    if any(k.startswith("audio_enc.audio_enc.") for k in keys) and any(
        k.startswith("audio_linear.") for k in keys
    ):
        return "audio_text_retrieval"
    if any(key in state for key in _PANNS_KEYS):
        return "panns"
    return None


def kind_of_blob(blob) -> str | None:
    """The kind of a loaded checkpoint object, or None when it is none we know."""
    if not isinstance(blob, dict):
        return None
    fmt = blob.get("format")
    if isinstance(fmt, str) and fmt in HEAD_FORMATS:
        return HEAD_FORMATS[fmt]
    state = blob.get("model")
    if isinstance(state, dict):
        return _state_kind(state)
    return None


def _hub_folder(name: str) -> Path | None:
    """The local snapshot folder of a hub model name, if its config.json is cached."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on it
        return None
    try:
        found = try_to_load_from_cache(name, "config.json")
    except Exception:  # a name that cannot be a repo id
        return None
    return Path(found).parent if isinstance(found, str) else None


def _clap_folder(folder: Path, shown: str) -> Recognised:
    config = folder / "config.json"
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (OSError, ValueError) as e:
        raise UserError(f"{shown}: a folder without a readable config.json ({e})") from None
    if model_type != "clap":
        raise UserError(
            f"{shown}: a transformers model of type {model_type!r}; --joint-model reads CLAP "
            "models (model_type 'clap'), WavCaps and audio-text_retrieval checkpoints"
        )
    return Recognised(shown, "clap", folder=folder)


def recognise_joint(path: str) -> Recognised:
    """Recognise a `--joint-model` argument, refusing anything that is not a joint model with
    a one-line UserError that names it and says what to do."""
    file = Path(path)
    if file.is_dir():
        return _clap_folder(file, path)
    if not file.exists():
        folder = _hub_folder(path) if path.count("/") <= 1 and path else None
        if folder is not None:
            return _clap_folder(folder, path)
        raise UserError(
            f"{path}: no such file or folder, and no model of that name in the local Hugging "
            "Face cache (nothing is downloaded)"
        )
    blob = load_torch_file(file)
    kind = kind_of_blob(blob)
    if kind == "panns":
        raise UserError(
            f"{path}: a PANNs audio checkpoint (backbone only, no text side); pass it to "
            "--audio-checkpoint instead of --joint-model"
        )
    if kind in HEAD_FORMATS.values():
        raise UserError(f"{path}: a diffatr {kind.replace('_', ' ')} checkpoint, not a joint model")
    if kind is None:
        found = sorted(map(str, blob))[:5] if isinstance(blob, dict) else type(blob).__name__
        raise UserError(
            f"{path}: not a joint audio-text model (found {found}); --joint-model reads WavCaps "
            "retrieval checkpoints, audio-text_retrieval checkpoints and CLAP folders"
        )
    return Recognised(path, kind, blob=blob)


def checkpoint_kind(path: str | os.PathLike) -> str | None:
    """The kind of a readable checkpoint file (weights_only loading only), else None: the
    caller's own loader then says what is wrong with it."""
    file = Path(path)
    if not file.is_file():
        return None
    try:
        return kind_of_blob(load_torch_file(file, allow_pickle=False))
    except UserError:
        return None
