"""CLAP models in `transformers` format (`ClapModel` + `ClapProcessor`), deterministic.

Reads: a folder made with `save_pretrained` (model + processor) or the local Hugging Face cache
snapshot of a hub name (`local_files_only=True`). Writes nothing.

Audio (W = the feature extractor's window, `max_length_s * sampling_rate` samples, 10 s):
  a clip of L <= W samples: `get_audio_features` on the feature extractor's input for that clip
      alone (repeat-padded to W), exactly transformers' own one-clip pipeline;
  a clip of L > W samples: n = ceil(L / W) windows of W consecutive samples starting at k * W,
      the last one ending at the clip's end; a = normalize(mean_k normalize(f(window_k))).
  transformers would crop a long clip at random ("rand_trunc"), and fused models pick random
  chunks and a random "is longer" flag, so one clip gives other vectors on other runs
  (LAION-AI/CLAP#166, #90). Here no window is ever longer than W, so no crop happens, and each
  window's `is_longer` is what the extractor sets for a clip alone (fused: True; unfused:
  unused), so a clip gives the same vector alone, in a batch, and on every run.
  The feature extractor's `truncation` decides only the input's shape (fusion: 4 mel channels;
  otherwise 1), and the model's `enable_fusion` decides which shape it takes: a folder whose two
  disagree (a `truncation: fusion` extractor saved beside an unfused model, or the reverse) would
  fail inside the model, so the extractor is set to the model's (no crop happens either way).
Text: `get_text_features` on the tokenizer's ids (padding to the batch's longest, no clean-up),
  stopped at the model's position limit. The folder's own tokenizer: `--text-encoder` is refused.
Both towers are called as `get_*_features` computes them in transformers 4.40 to 5.x
(`audio_projection(audio_model(...).pooler_output)`, normalised; likewise for text): 4.x returns
a tensor from `get_*_features` and 5.x an output object, so the submodules are called directly.
Outputs are L2-normalised float32; `--frames` is refused (no frame features are defined here).
"""

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F

from ...device import resolve_device
from ...errors import UserError
from ..hf_quiet import quiet_transformers
from ..panns import ClipPadder
from ..text import _weights_sha256
from .audio import _AUTOCAST, check_precision
from .config import LONG_CLIP_POLICY, JointConfig, Runtime
from .text import JointTextEncoder, text_limit


def window_starts(n_samples: int, window: int) -> list[int]:
    """Start of each window of a clip of `n_samples` (the last one ends at the clip's end)."""
    if n_samples <= window:
        return [0]
    n = math.ceil(n_samples / window)
    return [min(k * window, n_samples - window) for k in range(n)]


class ClapJointAudio:
    """A frozen CLAP audio tower on one device: equal-length batches -> (B, E) float32."""

    def __init__(self, model, feature_extractor, *, device: str, precision: str, provenance):
        self.device = resolve_device(device)
        check_precision(precision, self.device)
        self.precision = precision
        self.model = model.to(self.device)
        self.fe = feature_extractor
        self.sample_rate = int(feature_extractor.sampling_rate)
        self.window = int(feature_extractor.nb_max_samples)
        self.fused = bool(getattr(model.config.audio_config, "enable_fusion", False))
        self.dim = int(model.config.projection_dim)
        self.frame_dim = 0
        self.prepare = ClipPadder(1)  # the extractor repeat-pads short clips itself
        self._provenance = provenance

    def _features(self, windows: list[np.ndarray]) -> torch.Tensor:
        """Windows (each <= W samples) -> (n, E), each as if it were a clip alone."""
        inputs = self.fe(
            [w.astype(np.float64) for w in windows],
            sampling_rate=self.sample_rate,
            return_tensors="pt",
        )
        if self.fused:  # a clip alone gets is_longer = True (the extractor's rule for one clip)
            inputs["is_longer"] = torch.ones_like(inputs["is_longer"])
        x = inputs["input_features"].to(self.device)
        with torch.autocast(self.device.type, dtype=_AUTOCAST.get(self.precision, torch.float32),
                            enabled=self.precision != "fp32"):  # fmt: skip
            pooled = self.model.audio_model(
                input_features=x, is_longer=inputs["is_longer"].to(self.device)
            ).pooler_output
            out = self.model.audio_projection(pooled)  # (n, E)
        return F.normalize(out.float(), dim=-1)  # in float32 (bf16 runs)

    @torch.inference_mode()
    def features(self, waves) -> torch.Tensor:
        """waves (B, L) of one length -> (B, E) float32, normalised."""
        waves = np.asarray(waves, dtype=np.float32)
        starts = window_starts(waves.shape[1], self.window)
        windows = [wave[s : s + self.window] for wave in waves for s in starts]
        e = self._features(windows)  # (B * n, E)
        if len(starts) == 1:
            return e.cpu()
        e = e.view(len(waves), len(starts), -1).mean(dim=1)  # (B, E)
        return F.normalize(e, dim=-1).cpu()

    def embed(self, waves) -> tuple[np.ndarray, None]:
        return self.features(np.asarray(waves)).numpy(), None

    def provenance(self) -> dict:
        settings = dict(self._provenance["settings"])
        settings.update(
            device_type=self.device.type,
            precision=self.precision,
            window_samples=self.window,
            fused=self.fused,
            long_clip_rule=f"windows of {self.window} samples: {LONG_CLIP_POLICY}",
            short_clip_rule="the feature extractor's padding (repeatpad), as transformers",
        )
        return {**self._provenance, "settings": settings, "sample_rate": self.sample_rate}


def matching_extractor(fe, config):
    """The feature extractor with the `truncation` the model's `enable_fusion` takes."""
    fused = bool(getattr(config.audio_config, "enable_fusion", False))
    want = "fusion" if fused else "rand_trunc"
    if (fe.truncation == "fusion") == fused:
        return fe
    fe = copy.deepcopy(fe)  # the processor's own stays as saved
    fe.truncation = want  # only the input shape changes: windows are never cropped here
    return fe


def load_clap(rec, cfg: JointConfig, rt: Runtime) -> tuple:
    """(ClapJointAudio | None, JointTextEncoder | None, provenance) of a CLAP folder."""
    from transformers import ClapModel, ClapProcessor

    if rt.frames:
        raise UserError(f"{rec.path}: --frames: CLAP models give no frame features here")
    if cfg.text_encoder:  # another tokenizer would feed CLAP's RoBERTa ids it was not trained on
        raise UserError(
            f"--text-encoder {cfg.text_encoder}: a CLAP model ({rec.path}) brings its own "
            "tokenizer and text model; drop --text-encoder"
        )
    try:
        with quiet_transformers():
            processor = ClapProcessor.from_pretrained(rec.folder, local_files_only=True)
            model = ClapModel.from_pretrained(rec.folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise UserError(f"{rec.path}: cannot load a CLAP model and processor ({first})") from None
    model = model.float().eval().requires_grad_(False)  # any saved dtype, in 4.x and 5.x
    feature_extractor = matching_extractor(processor.feature_extractor, model.config)
    shared = {
        "joint_model": cfg.model,
        "joint_kind": "clap",
        "text_encoder": cfg.text_encoder,
        "model_config": model.config.to_json_string(use_diff=False),
    }
    provenance = {
        "encoder": "joint:clap",
        "feature_kind": "joint",
        "checkpoint_sha256": _weights_sha256(rec.folder),
    }
    audio = None
    if rt.audio:
        audio = ClapJointAudio(
            model,
            feature_extractor,
            device=rt.audio_device,
            precision=rt.precision,
            provenance={**provenance, "settings": dict(shared)},
        )
    text = None
    if rt.text:
        tokenizer = processor.tokenizer
        device = resolve_device(rt.text_device)
        check_precision(rt.precision, device)
        text_model = model.to(device)

        def forward(ids: torch.Tensor, mask: torch.Tensor):
            out = text_model.text_model(input_ids=ids, attention_mask=mask)
            e = text_model.text_projection(out.pooler_output)  # (B, E), normalised by the caller
            return e, out.last_hidden_state

        text = JointTextEncoder(
            tokenizer,
            forward,
            dim=int(model.config.projection_dim),
            token_dim=int(model.config.text_config.hidden_size),
            cleanup=None,
            max_length=text_limit(tokenizer, model.config.text_config, None),
            device=device,
            precision=rt.precision,
        )
    return audio, text, {**provenance, "settings": shared}
