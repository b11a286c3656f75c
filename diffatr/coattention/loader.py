"""Training batches of (caption, clip) pairs streamed from a cache's frames and tokens.

Reads: the caption -> clip index and, window by window, the tokens and frames of an open
`Cache` (contiguous slices, `sequences.read_rows`). Writes nothing. At AudioCaps scale the
frames alone are several GB, so they are never loaded whole.

Each epoch (all randomness from numpy's generator seeded with (seed, epoch)):
1. the pairs (captions with a clip, in row order) are cut into chunks of `chunk_captions`
   neighbouring captions, and the chunks shuffled;
2. `buffer_chunks` chunks at a time form a window: their tokens and their clips' frames are
   read, and the window's pairs (plus the fewer-than-B left over from the last window) shuffled;
3. the shuffled pairs are cut into batches of `batch_size`; the remainder waits for the next
   window, and whatever is left at the end is the epoch's last, smaller, batch.
So every pair comes exactly once per epoch, and memory holds at most one window plus one
batch's carry-over (copied). Two captions of one clip can meet in a batch:
`PairBatch.tensors` marks them as siblings, and the loss never counts a sibling as a negative.
"""

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..cache import Cache
from .sequences import pad, read_rows


@dataclass
class PairBatch:
    """B (caption, clip) pairs and their features, still ragged."""

    rows: np.ndarray  # (B,) caption rows
    clips: np.ndarray  # (B,) the clip row of each caption
    tokens: list[np.ndarray]  # B arrays (L_i, Dl)
    frames: list[np.ndarray]  # B arrays (T_i, Df)

    def tensors(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
        """tokens (B, L, Dl), token_mask (B, L), frames (B, T, Df), frame_mask (B, T), and
        siblings (B, B): True where captions i != j share a clip."""
        tokens, token_mask = pad(self.tokens, device)
        frames, frame_mask = pad(self.frames, device)
        clips = torch.from_numpy(self.clips)
        siblings = (clips[:, None] == clips[None, :]) & ~torch.eye(len(clips), dtype=torch.bool)
        return tokens, token_mask, frames, frame_mask, siblings.to(device)


class PairStream:
    """Every (caption, clip) pair of `cache` once per epoch, in shuffled batches."""

    def __init__(
        self,
        cache: Cache,
        batch_size: int,
        chunk_captions: int = 512,
        buffer_chunks: int = 4,
        seed: int = 0,
    ):
        self.cache, self.batch_size, self.seed = cache, batch_size, seed
        self.index = cache.audio_index()  # (Nt,) 8 bytes a caption: small even for WavCaps
        self.pairs = np.flatnonzero(self.index >= 0)  # caption rows with a clip
        starts = range(0, len(self.pairs), chunk_captions)
        self.chunks = [self.pairs[s : s + chunk_captions] for s in starts]
        self.buffer_chunks = buffer_chunks

    def __len__(self) -> int:
        """Batches per epoch."""
        return -(-len(self.pairs) // self.batch_size)

    def epoch(self, epoch: int) -> Iterator[PairBatch]:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.chunks))
        carry = PairBatch(np.zeros(0, np.int64), np.zeros(0, np.int64), [], [])
        for w in range(0, len(order), self.buffer_chunks):
            rows = np.sort(
                np.concatenate([self.chunks[c] for c in order[w : w + self.buffer_chunks]])
            )
            pool = self._window(rows, carry)
            perm = rng.permutation(len(pool.rows))
            full = len(perm) // self.batch_size * self.batch_size
            for s in range(0, full, self.batch_size):
                yield _take(pool, perm[s : s + self.batch_size])
            carry = _take(pool, perm[full:], copy=True)  # frees the window's blocks
        if len(carry.rows):
            yield carry

    def _window(self, rows: np.ndarray, carry: PairBatch) -> PairBatch:
        """The window's pairs with their features, after the carried-over pairs."""
        clips = self.index[rows]
        tokens = read_rows(self.cache, "text", rows)
        frames = read_rows(self.cache, "audio", np.unique(clips))
        return PairBatch(
            np.concatenate([carry.rows, rows]),
            np.concatenate([carry.clips, clips]),
            carry.tokens + [tokens[r] for r in rows.tolist()],
            carry.frames + [frames[c] for c in clips.tolist()],
        )


def _take(pool: PairBatch, idx: np.ndarray, copy: bool = False) -> PairBatch:
    """Pairs idx of the pool; copy=True detaches their features from the blocks read."""
    own = np.array if copy else np.asarray
    return PairBatch(
        pool.rows[idx],
        pool.clips[idx],
        [own(pool.tokens[i]) for i in idx.tolist()],
        [own(pool.frames[i]) for i in idx.tolist()],
    )
