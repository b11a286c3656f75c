"""Settings of the co-attention head: one frozen dataclass for training, one for re-ranking.

`asdict()` of both goes into every checkpoint and result file. The paper's body is not
available (method.md): the units, the variants, NT-Xent and tau = 0.07 are pinned down there;
the widths, batch size and optimiser below are this project's choices, sized so one epoch on a
Clotho-sized train split takes minutes on 2 CPU cores (`bench/bench_coattention.py`).
Impossible settings raise `UserError` (they come from the command line).
"""

from dataclasses import dataclass

from ..errors import UserError

VARIANTS = ("single", "stacking", "iterating")
MODES = ("gen", "fusion")


@dataclass(frozen=True)
class CoAttentionConfig:
    variant: str = (
        "single"  # "single" module, "stacking" (L modules) or "iterating" (1 module, L x)
    )
    layers: int = 2  # L of stacking / iterating (single ignores it); each extra layer runs per pair
    d_model: int = 128  # width of every unit (MCAN: 512); per-pair work grows with d_model^2
    heads: int = 4  # attention heads, d_h = 32
    ffn: int = 256  # FFN hidden width, 2 d_model (MCAN: 4 d_model)
    dropout: float = 0.0  # on each sublayer's output (MCAN: 0.1); off because per pair it
    #                       costs ~70% more time a batch (measured); best-epoch selection and
    #                       weight decay guard against overfitting instead
    tau: float = 0.07  # NT-Xent temperature (fixed, as phase 1)
    epochs: int = 10  # passes over the training pairs
    batch_size: int = 32  # pairs per batch; every batch scores all B x B (caption, clip) pairs
    lr: float = 3e-4  # AdamW peak learning rate (a transformer trained from scratch)
    weight_decay: float = 0.01  # on weight matrices only, not on biases and LayerNorms
    warmup: float = 0.1  # fraction of all steps spent in linear warm-up, then cosine decay
    grad_clip: float = 1.0  # max global gradient norm
    chunk_captions: int = 512  # captions read from the cache at once (a contiguous slice)
    buffer_chunks: int = 4  # chunks shuffled together: ~2,000 captions' features in memory
    val_topk: int = 32  # cosine top-k re-ranked when validating after each epoch
    seed: int = 0  # initialisation, dropout and batch order: same seed, same checkpoint
    device: str = "auto"  # "auto" = CUDA when present, else CPU

    def check(self) -> None:
        if self.variant not in VARIANTS:
            raise UserError(f"variant must be one of {VARIANTS}, not {self.variant!r}")
        if min(self.layers, self.epochs, self.chunk_captions, self.buffer_chunks) < 1:
            raise UserError("layers, epochs, chunk_captions and buffer_chunks must be >= 1")
        if self.batch_size < 2:
            raise UserError(f"the batch size must be at least 2, got {self.batch_size}")
        if self.d_model % self.heads:
            raise UserError(f"d_model {self.d_model} is not a multiple of heads {self.heads}")
        if self.tau <= 0 or not 0 <= self.dropout < 1:
            raise UserError("tau must be positive and dropout in [0, 1)")


@dataclass(frozen=True)
class CoRerankConfig:
    topk: int | None = 32  # candidates re-ranked per query; None = the whole gallery
    mode: str = "gen"  # "gen": the top-k ordered by the head's score alone (the paper ranks by
    #                    it); "fusion": S + alpha * softmax(s / tau) on the top-k
    alpha: float = 1.0  # fusion weight
    query_block: int = 64  # queries whose top-k are scored together
    pair_block: int = 1024  # (caption, clip) pairs run through the guided units at once
    chunk_items: int = 256  # clips or captions read and encoded at once when preparing

    def check(self) -> None:
        if self.mode not in MODES:
            raise UserError(f"mode must be one of {MODES}, not {self.mode!r}")
        if self.topk is not None and self.topk < 1:
            raise UserError(f"top-k must be at least 1 (or all), got {self.topk}")
        if self.alpha < 0:
            raise UserError(f"alpha must be >= 0 (so the top-k stays on top), got {self.alpha}")
        if min(self.query_block, self.pair_block, self.chunk_items) < 1:
            raise UserError("query_block, pair_block and chunk_items must be >= 1")
