"""Frozen PANNs audio encoders (CNN14, ResNet38): 32 kHz waveforms -> clip and frame features.

Reads: the PANNs checkpoint the user names (`{"model": state_dict}`, e.g. `Cnn14_mAP=0.431.pth`
or `ResNet38_mAP=0.434.pth`); read only, never modified, never downloaded. `random:SEED`
instead builds the network with random weights from SEED (a smoke test of extraction without a
released file), said in a warning and recorded in the cache's encoder name.
Writes: nothing; `AudioEncoder.provenance()` describes the features for the cache's attributes.

Notation: B clips, L samples at 32 kHz, T = L // 320 + 1 mel frames, F = 64 mel bins,
C = 2048 channels of the last conv block, T' = T // 32 feature frames (0.32 s each).

Features (Mei et al., 2022; `method.md`, Phase 1 encoders):
  frames   h = mean over frequency of the last conv block's output     (B, T', C)
  pre_fc1  z = max_t h + mean_t h, the input of fc1 (the default)      (B, C)
  embedding  relu(fc1(z)), what panns_inference calls `embedding`      (B, C)
All dropout is off (eval mode), so these equal the original forward's tensors.

Determinism: every clip is encoded whole, and a batch holds clips of one length only, so a clip
gives the same features alone or in any batch. Clips shorter than 1 s are zero-padded at the end
to 1 s by `prepare` (see `ClipPadder`).

Precision: "fp32" runs the original model's ops. "bf16" (CPU or CUDA) and "fp16" (CUDA only) run
the conv trunk under `torch.autocast`, with each BatchNorm folded into the conv before it, conv
weights stored in that dtype and channels-last layout (~2x faster on CPU); the log-mel front end,
the pooling and fc1 stay in float32. Outputs are always float32.
"""

import contextlib
import importlib
import importlib.machinery
import importlib.util
import sys
import types
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..checkpoint_kinds import JOINT_KINDS, kind_of_blob, torch_load
from ..checkpoints import file_sha256
from ..device import resolve_device
from ..errors import UserError
from ..progress import warn
from ..torch_files import load_failure
from .audio_io import SAMPLE_RATE
from .bf16 import warn_if_emulated
from .resnet38 import ResNet38

AUDIO_ENCODERS = ("cnn14", "resnet38")
AUDIO_FEATURES = ("pre_fc1", "embedding")
PRECISIONS = ("fp32", "bf16", "fp16")

# The log-mel settings both released checkpoints were trained with (keyword names of their
# constructors).
MEL_SETTINGS = {
    "sample_rate": SAMPLE_RATE,
    "window_size": 1024,
    "hop_size": 320,
    "mel_bins": 64,
    "fmin": 50,
    "fmax": 14000,
}
CLASSES_NUM = 527  # AudioSet classes; a checkpoint with another head size is followed instead
FEATURE_DIM = 2048  # C: channels of the last conv block, and fc1's width
TIME_POOLING = 32  # both trunks halve time five times (floor), so T' = T // 32
MIN_SECONDS = 1.0
MIN_SAMPLES = int(MIN_SECONDS * SAMPLE_RATE)  # 32000 samples -> T = 101, T' = 3
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_PANNS_ALIAS = "_diffatr_panns_inference"  # private module name for panns_inference's files
RANDOM_CHECKPOINT = "random:"  # --audio-checkpoint random:SEED: random weights, no file
_TELLTALE_KEYS = {"cnn14": "conv_block6.conv1.weight", "resnet38": "resnet.layer1.0.conv1.weight"}


@dataclass(frozen=True)
class AudioEncoderConfig:
    encoder: str = "cnn14"  # "cnn14" (panns_inference's Cnn14) or "resnet38" (resnet38.py)
    checkpoint: str = ""  # path to the PANNs .pth (required, never downloaded), or random:SEED
    feature: str = "pre_fc1"  # "pre_fc1" (input of fc1, Mei et al.) or "embedding" (relu(fc1))
    frames: bool = False  # also return frame features (T', 2048) per clip
    precision: str = "fp32"  # "fp32", "bf16" (autocast, CPU or CUDA) or "fp16" (CUDA only)
    device: str = "auto"  # "auto" = CUDA when present, else CPU
    trust_checkpoint: bool = False  # --trust-checkpoint: allow a checkpoint that runs code


@dataclass(frozen=True)
class ClipPadder:
    """`prepare` rule: zero-pad a clip shorter than `min_samples` at its end; else unchanged.

    Both trunks pool time by 32 with floor rounding, so a clip needs at least 32 mel frames
    (9,920 samples, 0.31 s) to reach the last block at all; 1 s gives 3 feature frames. Zeros
    are what PANNs' own training pipeline pads short AudioSet clips with. A picklable value
    object (not a bound method), so DataLoader workers receive it without the model."""

    min_samples: int = MIN_SAMPLES

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        wave = np.ascontiguousarray(wave, dtype=np.float32)  # (L,)
        if wave.ndim != 1:
            raise ValueError(f"expected a mono waveform (L,), got shape {wave.shape}")
        if len(wave) >= self.min_samples:
            return wave
        return np.pad(wave, (0, self.min_samples - len(wave)))  # (min_samples,)


def load_panns_models() -> types.ModuleType:
    """`panns_inference/models.py` as a module, without running `panns_inference/__init__.py`.

    The package's `__init__` imports `config.py`, which runs `wget` at import time (offline it
    leaves an empty label file behind that breaks every later import). `find_spec` on a
    top-level name only locates the package; we then register a stand-in parent package under a
    private name whose search path is the package folder, and import `models` beneath it (its
    relative import of `pytorch_utils` resolves there too)."""
    name = f"{_PANNS_ALIAS}.models"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec("panns_inference")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the CNN14 encoder needs the panns-inference package: pip install it")
    parent_spec = importlib.machinery.ModuleSpec(_PANNS_ALIAS, None, is_package=True)
    parent_spec.submodule_search_locations = list(spec.submodule_search_locations)
    sys.modules[_PANNS_ALIAS] = importlib.util.module_from_spec(parent_spec)
    return importlib.import_module(name)


def build_model(encoder: str, classes_num: int = CLASSES_NUM) -> nn.Module:
    """A randomly initialised PANNs model with the released checkpoints' architecture."""
    if encoder == "cnn14":
        return load_panns_models().Cnn14(**MEL_SETTINGS, classes_num=classes_num)
    if encoder == "resnet38":
        return ResNet38(**MEL_SETTINGS, classes_num=classes_num)
    raise UserError(f"--audio-encoder {encoder!r}: choose one of {', '.join(AUDIO_ENCODERS)}")


def read_checkpoint(path: str | Path, trust: bool = False) -> dict[str, torch.Tensor]:
    """The state dict inside a PANNs checkpoint file, which is only read.

    `torch.load(weights_only=True)`, with NumPy values allowed as data: the released PANNs files
    keep training state as NumPy values beside the weights. A file that needs more (it would
    run code when unpickled) is refused in one line unless `trust` (--trust-checkpoint)."""
    file = Path(path)
    fix = "pass --audio-checkpoint the released PANNs .pth (e.g. Cnn14_mAP=0.431.pth)"
    if not str(path):
        raise UserError(f"audio extraction needs a checkpoint: {fix}; nothing is downloaded")
    if not file.exists():
        raise UserError(f"{file}: checkpoint not found; {fix}")
    if not file.is_file():
        raise UserError(f"{file}: checkpoint is not a file; {fix}")
    try:
        ckpt = torch_load(file, trust)
    except UserError:
        raise
    except Exception as e:
        raise UserError(
            f"{file}: not a PyTorch checkpoint ({load_failure(file, e)}); {fix}"
        ) from None
    kind = kind_of_blob(ckpt)
    if kind in JOINT_KINDS:
        raise UserError(
            f"{file}: a {kind} joint audio-text model, not a PANNs checkpoint; pass it to "
            "--joint-model (it writes a joint-space cache)"
        )
    state = ckpt.get("model") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        found = sorted(map(str, ckpt))[:5] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise UserError(
            f"{file}: not a PANNs checkpoint: expected a dict whose 'model' entry is a state dict "
            f"(found {found}); {fix}, or save yours as torch.save({{'model': state_dict}}, path)"
        )
    return state


def random_weights_seed(checkpoint: str) -> int | None:
    """SEED of a `random:SEED` checkpoint (random weights, for smoke tests), else None."""
    if not checkpoint.startswith(RANDOM_CHECKPOINT):
        return None
    seed = checkpoint.removeprefix(RANDOM_CHECKPOINT)
    if not seed.isdigit():
        raise UserError(f"--audio-checkpoint {checkpoint}: random weights take random:SEED")
    return int(seed)


def guess_encoder(state: dict) -> str | None:
    """Which of AUDIO_ENCODERS a state dict belongs to, from one key only that one has."""
    return next((name for name, key in _TELLTALE_KEYS.items() if key in state), None)


def check_state_dict(model: nn.Module, state: dict, path: str | Path, encoder: str) -> None:
    """Raise a UserError naming the file when `state` does not fit `model` exactly."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if not (missing or unexpected or reshaped):
        return
    problems = [
        f"{len(keys)} {what} (e.g. {keys[0]})"
        for keys, what in ((missing, "missing keys"), (unexpected, "unexpected keys"))
        if keys
    ]
    problems += [
        f"{k} has shape {tuple(state[k].shape)}, expected {tuple(expected[k].shape)}"
        for k in reshaped[:2]
    ]
    raise UserError(
        f"{path}: does not fit {encoder} ({'; '.join(problems)}); pass a checkpoint of the "
        f"{encoder} architecture to --audio-checkpoint or choose the matching --audio-encoder"
    )


def fold_batchnorm(model: nn.Module) -> None:
    """Fold each eval-mode BatchNorm2d that directly follows a Conv2d into that conv, in place.

    Both trunks compute `bnK(convK(x))` in their conv blocks, and `[pool, conv, bn]` in the
    ResNet shortcuts; each pair becomes one conv with w' = w * gamma / sqrt(var + eps) and
    b' = beta + (b - mean) * gamma / sqrt(var + eps), which saves a pass over the activations.
    bn0 (after the log-mel front end) follows no conv and stays."""
    for module in model.modules():
        for conv_name, bn_name in (("conv1", "bn1"), ("conv2", "bn2")):
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(module, conv_name, fuse_conv_bn_eval(conv.eval(), bn.eval()))
                setattr(module, bn_name, nn.Identity())
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                if isinstance(module[i], nn.Conv2d) and isinstance(module[i + 1], nn.BatchNorm2d):
                    module[i] = fuse_conv_bn_eval(module[i].eval(), module[i + 1].eval())
                    module[i + 1] = nn.Identity()


def _cnn14_trunk(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """panns_inference Cnn14's conv blocks in eval mode (dropout is then the identity)."""
    for block in (model.conv_block1, model.conv_block2, model.conv_block3, model.conv_block4):
        x = block(x, pool_size=(2, 2), pool_type="avg")
    x = model.conv_block5(x, pool_size=(2, 2), pool_type="avg")  # (B, 1024, T/32, F/32)
    return model.conv_block6(x, pool_size=(1, 1), pool_type="avg")  # (B, 2048, T', F')


def _resnet38_trunk(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.trunk(x)  # (B, 2048, T', F')


_TRUNKS = {"cnn14": _cnn14_trunk, "resnet38": _resnet38_trunk}


class AudioEncoder:
    """A frozen PANNs model on one device: equal-length waveform batches -> features."""

    def __init__(self, cfg: AudioEncoderConfig):
        for value, allowed, option in (
            (cfg.encoder, AUDIO_ENCODERS, "--audio-encoder"),
            (cfg.feature, AUDIO_FEATURES, "--audio-feature"),
            (cfg.precision, PRECISIONS, "--precision"),
        ):
            if value not in allowed:
                raise UserError(f"{option} {value!r}: choose one of {', '.join(allowed)}")
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        if cfg.precision == "fp16" and self.device.type != "cuda":
            raise UserError("--precision fp16 needs a CUDA device; on CPU use bf16 or fp32")
        if (
            cfg.precision == "bf16"
            and self.device.type == "cuda"
            and not torch.cuda.is_bf16_supported()
        ):
            raise UserError("--precision bf16: this GPU has no bfloat16 support; use fp16")
        warn_if_emulated(cfg.precision, self.device.type)
        self.random_seed = random_weights_seed(cfg.checkpoint)
        if self.random_seed is None:
            model = self._trained_model(cfg)
            self.checkpoint_sha256 = file_sha256(cfg.checkpoint)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.random_seed)
                model = build_model(cfg.encoder)
            model.eval().requires_grad_(False)
            self.checkpoint_sha256 = ""
            warn(
                f"--audio-checkpoint {cfg.checkpoint}: {cfg.encoder} with RANDOM weights, a "
                "smoke test of the pipeline; its features mean nothing (the cache records it)"
            )
        self.memory_format = torch.contiguous_format
        if cfg.precision != "fp32":
            # fp32 runs the original ops unchanged. Reduced precision gets the fast form:
            # BN folded into the convs, conv weights stored in the autocast dtype (no cast per
            # call) and channels-last layout, ~2x faster for bf16 on CPU (oneDNN) and the
            # layout tensor cores want on CUDA.
            fold_batchnorm(model)
            for module in model.modules():
                if isinstance(module, nn.Conv2d):  # trunk only: the STFT is a Conv1d
                    module.to(_AUTOCAST_DTYPES[cfg.precision])
            self.memory_format = torch.channels_last
        self.model = model.to(self.device).to(memory_format=self.memory_format)
        self.sample_rate = SAMPLE_RATE
        self.dim = FEATURE_DIM
        self.frame_dim = FEATURE_DIM
        self.prepare = ClipPadder(MIN_SAMPLES)

    @staticmethod
    def _trained_model(cfg: AudioEncoderConfig) -> nn.Module:
        """The network with the weights of the checkpoint file, checked against its kind."""
        state = read_checkpoint(cfg.checkpoint, cfg.trust_checkpoint)
        guess = guess_encoder(state)
        if guess not in (None, cfg.encoder):  # say so before building an 80M-parameter model
            raise UserError(
                f"{cfg.checkpoint}: a {guess} checkpoint, not {cfg.encoder}: "
                f"use --audio-encoder {guess}"
            )
        head = state.get("fc_audioset.weight")
        classes = head.shape[0] if head is not None and head.ndim == 2 else CLASSES_NUM
        model = build_model(cfg.encoder, classes)
        check_state_dict(model, state, cfg.checkpoint, cfg.encoder)
        model.load_state_dict(state, strict=True)
        return model.eval().requires_grad_(False)

    def n_frames(self, num_samples: int) -> int:
        """T' for a clip of `num_samples` samples (after `prepare`)."""
        return (num_samples // MEL_SETTINGS["hop_size"] + 1) // TIME_POOLING

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.cfg.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_AUTOCAST_DTYPES[self.cfg.precision])

    @torch.inference_mode()
    def features(self, waves: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
        """waves (B, L), one length, L >= 1 s -> float32 pre_fc1 (B, C), embedding (B, C),
        frames (B, T', C)."""
        x = torch.as_tensor(waves, dtype=torch.float32)
        if x.ndim != 2 or x.shape[1] < MIN_SAMPLES:
            raise ValueError(
                f"expected waveforms (B, L) with L >= {MIN_SAMPLES}, got {tuple(x.shape)}; "
                "pass each clip through prepare() and batch equal lengths"
            )
        m = self.model
        x = x.to(self.device, non_blocking=True)
        x = m.spectrogram_extractor(x)  # (B, 1, T, 513), float32 outside autocast
        x = m.logmel_extractor(x)  # (B, 1, T, F)
        x = m.bn0(x.transpose(1, 3)).transpose(1, 3)  # BN over mel bins, (B, 1, T, F)
        x = x.contiguous(memory_format=self.memory_format)
        with self._autocast():
            x = _TRUNKS[self.cfg.encoder](m, x)  # (B, C, T', F')
        frames = x.float().mean(dim=3)  # (B, C, T')
        pre_fc1 = frames.amax(dim=2) + frames.mean(dim=2)  # (B, C)
        embedding = F.relu(m.fc1(pre_fc1))  # (B, C)
        return {
            "pre_fc1": pre_fc1.cpu().numpy(),
            "embedding": embedding.cpu().numpy(),
            "frames": frames.transpose(1, 2).contiguous().cpu().numpy(),  # (B, T', C)
        }

    def embed(self, waves: torch.Tensor | np.ndarray) -> tuple[np.ndarray, list[np.ndarray] | None]:
        """waves (B, L), all one length -> clip features (B, dim) float32 and, with
        cfg.frames, B arrays (T', frame_dim) float32."""
        out = self.features(waves)
        frames = list(out["frames"]) if self.cfg.frames else None
        return out[self.cfg.feature], frames

    def provenance(self) -> dict:
        """Keyword arguments for `CacheWriter.set_attrs("audio", ...)`."""
        settings = {
            **{k: v for k, v in asdict(self.cfg).items() if k != "trust_checkpoint"},
            **MEL_SETTINGS,
            "device_type": self.device.type,
            "min_samples": MIN_SAMPLES,
            "short_clip_rule": f"zero-pad at the end to {MIN_SECONDS:g} s",
            "frame_seconds": TIME_POOLING * MEL_SETTINGS["hop_size"] / SAMPLE_RATE,
            "reduced_precision_scope": "conv trunk, BN folded (log-mel, pooling, fc1 float32)",
        }
        prov = {
            "encoder": self.cfg.encoder,
            "feature_kind": self.cfg.feature,
            "settings": settings,
            "checkpoint_sha256": self.checkpoint_sha256,
            "sample_rate": SAMPLE_RATE,
        }
        if self.random_seed is not None:  # loud wherever the encoder is shown (cache info)
            prov["encoder"] = f"{self.cfg.encoder} RANDOM WEIGHTS (seed {self.random_seed})"
            prov["random_weights_seed"] = self.random_seed
        return prov
