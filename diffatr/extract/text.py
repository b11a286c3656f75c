"""Caption features from a frozen Hugging Face text encoder: [CLS] or masked-mean pooling.

Reads: a model and tokenizer (`AutoModel`/`AutoTokenizer`) from a local folder made with
`save_pretrained`, or by hub name from the local Hugging Face cache. Local files only, always:
the hub is never asked, whatever HF_HUB_OFFLINE says. Writes: nothing; returns float32 arrays.

Notation: h = last_hidden_state (B, L, D), m = attention_mask (B, L), 1 = real token.
    cls   e_j = h[j, 0]                               (the first token; padding is on the right)
    mean  e_j = sum_l m[j, l] h[j, l] / sum_l m[j, l]  (over non-padding tokens only)
    tokens (cfg.tokens): T_j = h[j, m[j] == 1] -> (L_j, D): every non-padding token, the special
          tokens included ([CLS] ... [SEP] for BERT), so L_j = sum_l m[j, l].
Pooling runs in float32 whatever the autocast precision; outputs are float32.

Truncation: a caption longer than the max length (special tokens included) is cut by the
tokenizer, which keeps [CLS] and [SEP]. Max length used = min(cfg.max_length,
tokenizer.model_max_length, config.max_position_embeddings); `n_truncated` counts the captions
cut so far (over all `encode` calls).
Batching: captions are tokenized once, sorted by token count (longest first) inside windows of
32 batches, padded per batch to its longest member, and the results put back in input order.
With the attention mask a caption gives the same vector alone or in any batch (to ~1e-6).
"""

import contextlib
import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..device import resolve_device
from ..errors import UserError
from .bf16 import warn_if_emulated
from .hf_quiet import quiet_transformers

POOLINGS = ("cls", "mean")
PRECISIONS = ("fp32", "bf16", "fp16")
_WINDOW_BATCHES = 32  # length-sort window (in batches): bounds memory at WavCaps scale
_WEIGHT_SUFFIXES = (".safetensors", ".bin")  # what from_pretrained loads, safetensors first


@dataclass(frozen=True)
class TextEncoderConfig:
    name: str = "bert-base-uncased"  # hub name or local folder (the paper's BERT)
    pooling: str = "cls"  # "cls" (the paper) or "mean" (sentence-transformers models)
    tokens: bool = False  # also return per-token features (ragged)
    precision: str = "fp32"  # fp32 | bf16 (autocast, CPU and CUDA) | fp16 (autocast, CUDA only)
    device: str = "auto"  # auto = CUDA when present, else CPU
    max_length: int = 512  # token limit per caption, special tokens included


def _looks_like_path(name: str) -> bool:
    """A name that can only be a folder (a hub name is "model" or "org/model")."""
    if name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1:
        return True
    return "/" in name and os.path.isdir(name.split("/")[0])


def _load(name: str):
    """(tokenizer, model) from a folder or the hub cache, never the network; UserError saying
    which names were looked for where, and what to do, if neither has it."""
    from huggingface_hub import constants
    from transformers import AutoModel, AutoTokenizer

    def load(local_only: bool):
        kw = {"local_files_only": local_only}
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(name, **kw)
            model = AutoModel.from_pretrained(name, **kw)
        return tokenizer, model.float()  # float32 whatever the saved dtype (no `dtype=` in 4.x)

    if os.path.isdir(name):
        try:
            return load(True)
        except (OSError, ValueError, KeyError) as e:
            raise UserError(
                f"--text-encoder {name}: cannot load a model and tokenizer from this folder "
                f"({str(e).splitlines()[0]}); save one with save_pretrained"
            ) from None
    if _looks_like_path(name):
        raise UserError(f"--text-encoder {name}: no such folder")
    try:
        return load(True)
    except (OSError, ValueError):  # transformers' own text talks of a connection never tried
        where = Path(constants.HF_HUB_CACHE) / f"models--{name.replace('/', '--')}"
        raise UserError(
            f"--text-encoder {name}: not a folder, and not in the local Hugging Face cache "
            f"(looked for {where}); extraction never downloads: pass "
            "a local folder made with save_pretrained (--text-encoder /path/to/model), or "
            f"fetch it once with `huggingface-cli download {name}`"
        ) from None


def _weights_sha256(folder: Path) -> str:
    """sha256 of the weight files' bytes in name order (= sha256sum of the file when single)."""
    for suffix in _WEIGHT_SUFFIXES:
        files = sorted(p for p in folder.iterdir() if p.name.endswith(suffix))
        if files:
            digest = hashlib.sha256()
            for path in files:
                with open(path, "rb") as f:
                    while chunk := f.read(1 << 20):
                        digest.update(chunk)
            return digest.hexdigest()
    return ""


def _model_folder(name: str) -> Path | None:
    """The folder the weights were loaded from: the local folder or the hub cache snapshot."""
    if os.path.isdir(name):
        return Path(name)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # no snapshot: the hash is then left empty, as the format allows
        return None


def model_digest(name: str) -> str | None:
    """The digest extraction records for the model `name` (`_weights_sha256` of its folder, or
    of its local Hugging Face cache snapshot), or None when it is not here or holds no weights."""
    folder = _model_folder(name)
    if folder is None or not folder.is_dir():
        return None
    return _weights_sha256(folder) or None


class TextEncoder:
    """A frozen text encoder: `encode(captions)` -> (n, dim) float32 features in input order."""

    def __init__(self, cfg: TextEncoderConfig):
        if cfg.pooling not in POOLINGS:
            raise UserError(f"--pooling {cfg.pooling}: choose one of {', '.join(POOLINGS)}")
        if cfg.precision not in PRECISIONS:
            raise UserError(f"--precision {cfg.precision}: choose one of {', '.join(PRECISIONS)}")
        if cfg.max_length < 2:
            raise UserError(f"text max_length {cfg.max_length}: needs room for [CLS] and [SEP]")
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        if cfg.precision == "fp16" and self.device.type != "cuda":
            raise UserError("--precision fp16 needs a CUDA device; use bf16 or fp32 on CPU")
        bf16_cuda = cfg.precision == "bf16" and self.device.type == "cuda"
        if bf16_cuda and not torch.cuda.is_bf16_supported():
            raise UserError("--precision bf16: this GPU has no bfloat16; use fp16 or fp32")
        warn_if_emulated(cfg.precision, self.device.type)
        self.tokenizer, model = _load(cfg.name)
        if getattr(model.config, "is_encoder_decoder", False):
            model = model.get_encoder()
        self.model = model.to(self.device).eval()
        self.tokenizer.padding_side = "right"  # cls pooling reads position 0
        if self.tokenizer.pad_token is None:
            fill = self.tokenizer.eos_token or self.tokenizer.unk_token
            if fill is None:
                raise UserError(f"--text-encoder {cfg.name}: its tokenizer has no padding token")
            self.tokenizer.pad_token = fill  # masked out: any token id will do
        config = self.model.config
        self.dim: int = int(getattr(config, "hidden_size", 0) or config.d_model)
        limits = [cfg.max_length, getattr(config, "max_position_embeddings", None)]
        limits.append(getattr(self.tokenizer, "model_max_length", None))
        self.max_length: int = min(int(x) for x in limits if x and x < 1_000_000)
        self.n_truncated = 0
        self._inputs = [k for k in self.tokenizer.model_input_names if k != "attention_mask"]
        self._sha256: str | None = None

    def _autocast(self):
        if self.cfg.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.cfg.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _tokenize(self, captions: list[str]) -> dict[str, list[list[int]]]:
        """Token ids per caption (no padding), truncated to max_length; counts truncations."""
        tok = self.tokenizer
        enc = dict(tok(captions, truncation=False, verbose=False))
        long = [i for i, ids in enumerate(enc["input_ids"]) if len(ids) > self.max_length]
        if long:
            cut = tok([captions[i] for i in long], truncation=True, max_length=self.max_length)
            for key, rows in enc.items():
                for i, row in zip(long, cut[key], strict=True):
                    rows[i] = row
            self.n_truncated += len(long)
        return enc

    @torch.no_grad()
    def _forward(self, batch: dict[str, list[list[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded forward pass: h (B, L, D) float32 and m (B, L) of one batch."""
        padded = self.tokenizer.pad(batch, padding=True, return_tensors="pt")
        inputs = {k: padded[k].to(self.device) for k in self._inputs if k in padded}
        m = padded["attention_mask"].to(self.device)  # (B, L)
        with self._autocast():
            h = self.model(**inputs, attention_mask=m).last_hidden_state
        return h.float(), m  # (B, L, D), (B, L)

    def _pool(self, h: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        if self.cfg.pooling == "cls":
            return h[:, 0]  # (B, D)
        w = m.unsqueeze(-1).to(h.dtype)  # (B, L, 1)
        return (h * w).sum(1) / w.sum(1).clamp(min=1e-9)  # (B, D)

    @torch.no_grad()
    def encode(
        self, captions: list[str], batch_size: int = 64
    ) -> tuple[np.ndarray, list[np.ndarray] | None]:
        """Features (n, dim) float32 in input order, and per-caption token features if asked."""
        if batch_size < 1:
            raise UserError(f"--batch-size {batch_size}: must be at least 1")
        captions = list(captions)
        n = len(captions)
        out = np.zeros((n, self.dim), dtype=np.float32)
        empty = np.zeros((0, self.dim), dtype=np.float32)
        tokens = [empty] * n if self.cfg.tokens else None  # every slot is filled below
        window = batch_size * _WINDOW_BATCHES
        for w0 in range(0, n, window):
            enc = self._tokenize(captions[w0 : w0 + window])
            lengths = [len(ids) for ids in enc["input_ids"]]
            order = sorted(range(len(lengths)), key=lambda i: -lengths[i])  # stable
            for b0 in range(0, len(order), batch_size):
                idx = order[b0 : b0 + batch_size]
                h, m = self._forward({k: [v[i] for i in idx] for k, v in enc.items()})
                e = self._pool(h, m).cpu().numpy()  # (B, D)
                rows = [w0 + i for i in idx]
                out[rows] = e
                if tokens is not None:
                    keep = m.bool()
                    for j, row in enumerate(rows):
                        tokens[row] = h[j][keep[j]].cpu().numpy()  # (L_j, D)
        return out, tokens

    def checkpoint_sha256(self) -> str:
        """Hash of the weight files loaded (empty if they cannot be found on disk)."""
        if self._sha256 is None:
            folder = _model_folder(self.cfg.name)
            self._sha256 = _weights_sha256(folder) if folder else ""
        return self._sha256

    def provenance(self) -> dict:
        """Keyword arguments for `CacheWriter.set_attrs("text", ...)`."""
        config = self.model.config
        settings = {
            **asdict(self.cfg),
            "max_length_used": self.max_length,
            "model_type": getattr(config, "model_type", ""),
            "dim": self.dim,
            "padding_side": "right",
            "batches": "sorted by token count, padded per batch, attention-masked",
        }
        if self.cfg.tokens:
            settings["token_features"] = (
                "last_hidden_state of every non-padding token, incl. specials"
            )
        return {
            "encoder": self.cfg.name,
            "feature_kind": self.cfg.pooling,
            "settings": settings,
            "checkpoint_sha256": self.checkpoint_sha256(),
        }
