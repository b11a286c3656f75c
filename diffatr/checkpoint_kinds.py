"""What a checkpoint is, recognised from its content (never its name), in one place.

Reads: a `.pt`/`.pth` file (through `torch.load(weights_only=True)`), or a folder / local
Hugging Face cache entry holding a `transformers` model. Writes nothing.

Unpickling: every checkpoint loads with `weights_only=True`. A file that refuses (it pickles
objects beyond tensors and plain values, which is how a file runs code when loaded) is loaded
only when the user passed `--trust-checkpoint` on that command (`trust=True` here); otherwise it
is one line saying why (`pickle_refusal`). No environment variable or file metadata turns it on.

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
import re
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
TRUST_OPTION = "--trust-checkpoint"
PICKLE_WARNING = (
    "warning: {path}: not loadable with weights_only=True; loading it as a full pickle, which "
    f"runs code from the file, because {TRUST_OPTION} was given"
)
_PANNS_KEYS = ("conv_block1.conv1.weight", "resnet.layer1.0.conv1.weight")


@dataclass(frozen=True)
class Recognised:
    """A checkpoint and what it is: `blob` is the loaded dict (None for folders and hub names)."""

    path: str  # as given
    kind: str  # one of JOINT_KINDS, "panns", or a value of HEAD_FORMATS
    blob: dict | None = None
    folder: Path | None = None  # clap: the folder holding config.json (a snapshot for hub names)


def is_pickle_refusal(error: BaseException) -> bool:
    """Whether `torch.load(weights_only=True)` refused a file for what it unpickles (as opposed
    to a file that is damaged or not a checkpoint at all)."""
    text = str(error)
    if "weights_only" not in text and "Weights only" not in text:
        return False
    # A disallowed global or call is what a code-running pickle trips; "Unsupported operand"
    # and the like are damaged bytes, which full unpickling would not read either.
    return "GLOBAL" in text or "global" in text or "reduce" in text


def pickle_refusal(path: str | os.PathLike, error: BaseException) -> str:
    """The one-line refusal of a file that only full unpickling would load."""
    found = re.search(r"GLOBAL ([\w.]+)", str(error))
    why = f"it pickles {found.group(1)}" if found else "it pickles more than tensors and values"
    return (
        f"{path}: not loaded: {why}, and loading it would run code from the file; if you trust "
        f"its source, pass {TRUST_OPTION}"
    )


def _numpy_data_globals() -> list:
    """NumPy arrays, scalars and dtypes for the weights-only unpickler: data, no code (the
    released PANNs files keep training state as NumPy values beside the weights). Named under
    both numpy 2's `numpy._core` and numpy 1's `numpy.core`, which old files were pickled with."""
    import numpy as np

    core = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    pairs = [(core._reconstruct, "_reconstruct"), (core.scalar, "scalar")]
    allowed: list = [np.ndarray, np.dtype]
    if hasattr(np, "dtypes"):  # numpy >= 1.25 pickles a dtype through its class
        allowed += [
            cls
            for name, cls in vars(np.dtypes).items()
            if name.endswith("DType") and isinstance(cls, type) and name != "ObjectDType"
        ]
    for obj, name in pairs:
        allowed += [(obj, f"numpy._core.multiarray.{name}"), (obj, f"numpy.core.multiarray.{name}")]
    return allowed


def torch_load(path: str | os.PathLike, trust: bool = False):
    """`torch.load` on CPU with weights_only=True (NumPy data allowed); a file that needs full
    unpickling is a UserError (`pickle_refusal`) unless `trust`, then loaded as a full pickle
    with a warning. Other failures (a damaged file) propagate for the caller to word."""
    import torch

    try:
        with torch.serialization.safe_globals(_numpy_data_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        if not is_pickle_refusal(e):
            raise
        if not trust:
            raise UserError(pickle_refusal(path, e)) from None
    print(PICKLE_WARNING.format(path=path), file=sys.stderr)
    return torch.load(path, map_location="cpu", weights_only=False)


def load_torch_file(path: str | os.PathLike, *, trust: bool = False):
    """`torch_load`, with a file torch cannot read at all (truncated, not a checkpoint) a
    UserError naming it."""
    file = Path(path)
    try:
        return torch_load(file, trust)
    except UserError:
        raise
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


def recognise_joint(path: str, trust: bool = False) -> Recognised:
    """Recognise a `--joint-model` argument, refusing anything that is not a joint model with
    a one-line UserError that names it and says what to do (`trust`: --trust-checkpoint)."""
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
    blob = load_torch_file(file, trust=trust)
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


def checkpoint_kind(path: str | os.PathLike, trust: bool = False) -> str | None:
    """The kind of a readable checkpoint file, else None: the caller's own loader then says
    what is wrong with it (`trust`: --trust-checkpoint was given)."""
    file = Path(path)
    if not file.is_file():
        return None
    try:
        return kind_of_blob(load_torch_file(file, trust=trust))
    except UserError:
        return None
