"""How `diffatr search --audio-example FILE` embeds a sound: the audio encoder a cache was
extracted with, rebuilt from the cache's record, so the file is embedded exactly as a clip of the
cache was.

Reads: the cache's `extract_config` root attribute (the `ExtractConfig` of the run) and its
/audio provenance, the model the config names (checksum-checked against the provenance before
it is loaded), and the example files. Writes nothing.

Steps:
1. the run's `ExtractConfig`, with only the device replaced (and the audio side alone built):
   same model, checkpoint, feature, precision, frames;
2. before loading: the checkpoint file's (or CLAP folder's weights') sha256 must equal the
   recorded `checkpoint_sha256`; `random:SEED` weights must carry the recorded seed;
3. after loading: the rebuilt encoder's provenance must equal the recorded one (encoder,
   feature kind, checksum, sample rate, every setting but the device), so no setting that
   changes the numbers can differ;
4. per file: `audio_io.load_audio` (same decoding, mono mix, soxr resampling), the encoder's own
   `prepare` (the same short-clip padding), one `embed` call, then the cache's stored dtype
   (a float16 cache's clips were rounded to float16; so is the query).
"""

import json
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import torch

from ..cache import Cache
from ..errors import UserError
from ..extract import AudioEncoderConfig, ExtractConfig, TextEncoderConfig, load_audio
from ..extract.audio_io import BadClip
from ..extract.joint import JointConfig
from .cache_models import check_recorded_model

# The audio encoder of an example is the cache's own, never another: there is no option to
# name one, so the one-line refusals say to re-extract instead.
_NO_OPTION = "the model that made the cache (or re-extract the library)"
_DEVICE_KEYS = ("device", "device_type")  # where it ran, not what it computed
_NESTED = {"audio": AudioEncoderConfig, "text": TextEncoderConfig, "joint": JointConfig}


def recorded_config(cache: Cache) -> ExtractConfig:
    """The `ExtractConfig` a cache was written with (UserError if it records none)."""
    raw = cache.attrs.get("extract_config")
    try:
        data = json.loads(raw) if isinstance(raw, str) else None
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise UserError(
            f"{cache.path}: records no extraction settings (not written by `diffatr extract`), "
            "so its audio encoder cannot be rebuilt for --audio-example"
        )
    return _dataclass(ExtractConfig, data)


def _dataclass(cls, data: dict):
    kwargs = {}
    for f in fields(cls):
        if f.name in data:  # a setting an older release did not record keeps its default
            value = data[f.name]
            kwargs[f.name] = _dataclass(_NESTED[f.name], value) if f.name in _NESTED else value
    return cls(**kwargs)


def _plain(value):
    """JSON's view of a value (tuples become lists), as the cache stored it."""
    return json.loads(json.dumps(value, sort_keys=True))


def _check_weights(cache: Cache, cfg: ExtractConfig, recorded: dict) -> None:
    """Step 2: the weights on disk are the ones the cache was made with."""
    want = str(recorded.get("checkpoint_sha256", ""))
    source = cfg.joint.model or cfg.audio.checkpoint
    if source.startswith("random:") and not cfg.joint.model:
        if str(recorded.get("random_weights_seed", "")) != source.split(":", 1)[1]:
            raise UserError(f"{cache.path}: its audio encoder's record does not say {source}")
        return
    path = Path(source)
    if not path.exists():
        if cfg.joint.model and not path.is_absolute() and "/" in source.strip("/"):
            # a hub name: its local snapshot's weights digest, as extraction recorded it
            check_recorded_model(source, want, cache.path, "audio encoder", _NO_OPTION)
            return
        raise UserError(
            f"{cache.path}: its audio encoder {source} is not here; the example must be "
            "embedded with the model that made the cache"
        )
    check_recorded_model(source, want, cache.path, "audio encoder", _NO_OPTION)


def _check_provenance(cache: Cache, encoder, recorded: dict) -> None:
    """Step 3: nothing that decides the numbers differs from the record."""
    rebuilt = _plain(encoder.provenance())
    recorded = _plain(recorded)
    differ = [
        key
        for key in sorted(set(rebuilt) | set(recorded))
        if key != "settings" and rebuilt.get(key) != recorded.get(key)
    ]
    mine, theirs = rebuilt.get("settings") or {}, recorded.get("settings") or {}
    differ += [
        f"settings.{key}"
        for key in sorted(set(mine) | set(theirs))
        if key not in _DEVICE_KEYS and mine.get(key) != theirs.get(key)
    ]
    if differ:
        raise UserError(
            f"{cache.path}: the audio encoder rebuilt from its record differs in "
            f"{', '.join(differ[:5])}; the example would not be embedded as the clips were"
        )


class AudioQueryEncoder:
    """encode(paths) -> (Q, D) float32: each file embedded as the cache's clips were."""

    def __init__(self, cache: Cache, device: str = "cpu", trust: bool = False):
        from ..extract.run import default_encoders

        cfg = recorded_config(cache)
        recorded = cache.side_attrs("audio")
        _check_weights(cache, cfg, recorded)
        cfg = replace(
            cfg,
            audio_only=True,
            text_only=False,
            # --trust-checkpoint is the user's word now, never the cache's record
            audio=replace(cfg.audio, device=device, trust_checkpoint=trust),
            text=replace(cfg.text, device=device),
            joint=replace(cfg.joint, trust_checkpoint=trust),
        )
        self.encoder, _ = default_encoders(cfg)
        _check_provenance(cache, self.encoder, recorded)
        self.dtype = np.dtype(cfg.dtype)
        self.sample_rate = int(self.encoder.sample_rate)
        self.describe = (
            f"{recorded.get('encoder', '?')} ({cfg.joint.model or cfg.audio.checkpoint})"
        )

    def encode_wave(self, wave: np.ndarray) -> np.ndarray:
        """One decoded waveform at `sample_rate` -> (D,) float32, as the pipeline embeds it."""
        prepared = self.encoder.prepare(wave)
        emb, _ = self.encoder.embed(torch.from_numpy(prepared[None]))
        return np.asarray(emb[0]).astype(self.dtype).astype(np.float32)

    def encode(self, paths: list[str]) -> torch.Tensor:
        rows = []
        for path in paths:
            try:
                wave = load_audio(path, self.sample_rate)
            except BadClip as e:
                raise UserError(f"{path}: {e.reason}") from None
            rows.append(self.encode_wave(wave))
        return torch.from_numpy(np.stack(rows))
