"""The text side of a joint model: captions -> L2-normalised joint-space vectors (and, if asked,
the text model's token states), computed as the model's own code computes them.

Reads: a tokenizer and a model config, always with `local_files_only=True` (a folder made with
`save_pretrained`, or a name in the local Hugging Face cache); the weights come from the joint
checkpoint, never from the hub. Writes nothing.

Notation: h = last_hidden_state (B, L, D), m = attention mask (B, L), E = joint width.
    Mei et al. (WavCaps, audio-text_retrieval): e = normalize(proj(h[:, 0]))   (first token)
    CLAP: e = get_text_features(ids, m).pooler_output (projected and normalised by the model)
Captions go through the model's clean-up first (`captions.py`); tokenizer settings per kind:
WavCaps truncates at 30 tokens, audio-text_retrieval and CLAP at the model's position limit
(their code does not truncate; longer captions would fail there). Batches are sorted by token
count and padded to their longest member (right padding, attention-masked), so a caption gives
the same vector alone or in any batch (to ~1e-6), as with their `padding="longest"`.
"""

import contextlib
import os
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...errors import UserError

_WINDOW_BATCHES = 32  # captions tokenised and length-sorted together, in batches
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1


def load_tokenizer_and_config(name: str, where: str, option_given: bool):
    """(tokenizer, config) of the text model `name`, offline: a folder, or a local cache entry.

    `where` names the checkpoint in messages; `option_given` says whether `name` came from
    --text-encoder (else from the checkpoint)."""
    from transformers import AutoConfig, AutoTokenizer

    origin = f"--text-encoder {name}" if option_given else f"{where}: its text model {name!r}"
    if not os.path.isdir(name) and _looks_like_path(name):
        raise UserError(f"{origin}: no such folder")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=True)
        config = AutoConfig.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise UserError(
            f"{origin}: config and tokenizer not found locally ({first}); pass --text-encoder "
            "FOLDER holding them (save_pretrained of the same model; weights are not needed), "
            "nothing is downloaded"
        ) from None
    return tokenizer, config


def build_text_model(config, state: dict[str, torch.Tensor], where: str) -> nn.Module:
    """The text model of `config` (no pooler) with the checkpoint's weights, loaded strictly."""
    from transformers import AutoModel

    from .cnn import load_strict

    try:
        model = AutoModel.from_config(config, add_pooling_layer=False)
    except TypeError:  # models without a pooler option (DistilBERT)
        model = AutoModel.from_config(config)
    state = {k: v for k, v in state.items() if not k.endswith(("position_ids", "token_type_ids"))}
    expected = model.state_dict()
    drop = [k for k in expected if k.endswith(("position_ids", "token_type_ids"))]
    for key in drop:  # buffers the model makes itself
        state.setdefault(key, expected[key])
    load_strict(model, state, where, f"the text model {config.model_type}")
    return model.float().eval().requires_grad_(False)


def projection(state: dict[str, torch.Tensor], prefix: str, where: str) -> nn.Sequential:
    """Linear -> ReLU -> Linear from `prefix.0.*` and `prefix.2.*` of a state dict."""
    try:
        w0, w2 = state[f"{prefix}.0.weight"], state[f"{prefix}.2.weight"]
    except KeyError as e:
        raise UserError(f"{where}: no {e.args[0]} (the {prefix} projection)") from None
    if w0.ndim != 2 or w2.ndim != 2 or w2.shape[1] != w0.shape[0]:
        raise UserError(
            f"{where}: {prefix} shapes {tuple(w0.shape)} and {tuple(w2.shape)} do not chain"
        )
    proj = nn.Sequential(nn.Linear(w0.shape[1], w0.shape[0]), nn.ReLU(), nn.Linear(*w2.shape[::-1]))
    from .cnn import load_strict

    sub = {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".")}
    load_strict(proj, sub, where, f"{prefix} (Linear-ReLU-Linear)")
    return proj.float().eval().requires_grad_(False)


class JointTextEncoder:
    """Captions -> (n, E) float32 L2-normalised joint-space vectors, as the joint model makes
    them. `encode(captions)` is the public call (diffatr search); the extraction uses `embed`."""

    def __init__(
        self,
        tokenizer,
        forward: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
        *,
        dim: int,
        token_dim: int,
        cleanup: Callable[[str], str] | None,
        max_length: int,
        device: torch.device,
        precision: str = "fp32",
        cleanup_name: str = "none",
    ):
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "right"
        if self.tokenizer.pad_token is None:
            raise UserError("the joint model's tokenizer has no padding token")
        self._forward = forward  # (ids, mask) -> (e (B, E) normalised, h (B, L, D))
        self.dim, self.token_dim = dim, token_dim
        self.cleanup, self.max_length = cleanup, max_length
        self.cleanup_name = cleanup_name if cleanup else "none"  # recorded in the cache
        self.device, self.precision = device, precision
        self.n_truncated = 0

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_AUTOCAST[self.precision])

    def _tokenize(self, captions: list[str]) -> list[list[int]]:
        texts = [self.cleanup(c) for c in captions] if self.cleanup else list(captions)
        ids = self.tokenizer(texts, truncation=False, verbose=False)["input_ids"]
        long = [i for i, row in enumerate(ids) if len(row) > self.max_length]
        if long:
            cut = self.tokenizer(
                [texts[i] for i in long], truncation=True, max_length=self.max_length
            )["input_ids"]
            for i, row in zip(long, cut, strict=True):
                ids[i] = row
            self.n_truncated += len(long)
        return ids

    @torch.no_grad()
    def embed(
        self, captions: list[str], batch_size: int = 64, tokens: bool = False
    ) -> tuple[torch.Tensor, list[np.ndarray] | None]:
        """(n, E) float32 on CPU in input order, and per-caption token states (L_j, D)."""
        n = len(captions)
        out = torch.zeros(n, self.dim)
        states: list[np.ndarray] | None = [np.zeros((0, self.token_dim), np.float32)] * n
        if not tokens:
            states = None
        window = batch_size * _WINDOW_BATCHES
        for w0 in range(0, n, window):
            ids = self._tokenize(list(captions[w0 : w0 + window]))
            order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # stable
            for b0 in range(0, len(order), batch_size):
                idx = order[b0 : b0 + batch_size]
                padded = self.tokenizer.pad(
                    {"input_ids": [ids[i] for i in idx]}, padding=True, return_tensors="pt"
                )
                x = padded["input_ids"].to(self.device)  # (B, L)
                m = padded["attention_mask"].to(self.device)  # (B, L)
                with self._autocast():
                    e, h = self._forward(x, m)
                rows = [w0 + i for i in idx]
                out[rows] = F.normalize(e.float(), dim=-1).cpu()  # unit norm in float32
                if states is not None:
                    keep = m.bool()
                    for j, row in enumerate(rows):
                        states[row] = h[j][keep[j]].float().cpu().numpy()  # (L_j, D)
        return out, states

    def encode(self, captions: list[str], batch_size: int = 64) -> torch.Tensor:
        """Captions -> (n, E) float32, L2-normalised, on CPU."""
        return self.embed(list(captions), batch_size)[0]


def first_token_forward(model: nn.Module, proj: nn.Module) -> Callable:
    """Mei et al.'s text path: e = normalize(proj(h[:, 0])); the projection in float32."""

    def forward(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = model(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, L, D)
        with torch.autocast(ids.device.type, enabled=False):
            e = F.normalize(proj(h[:, 0].float()), dim=-1)  # (B, E)
        return e, h

    return forward


def text_limit(tokenizer, config, cap: int | None) -> int:
    """The token limit: `cap` (the model's own code's), the tokenizer's and the positions'."""
    limits = [cap, getattr(config, "max_position_embeddings", None)]
    limits.append(getattr(tokenizer, "model_max_length", None))
    limit = min(int(x) for x in limits if x and x < 1_000_000)
    if getattr(config, "model_type", "") in ("roberta", "clap_text_model", "clap"):
        limit = min(limit, int(config.max_position_embeddings) - 2)  # positions start at 2
    return limit
