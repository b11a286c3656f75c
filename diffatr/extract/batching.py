"""Equal-length batches: clips are grouped by their exact (prepared) length, so no clip is ever
padded by a neighbour and a clip encoded in a batch gives what it gives alone.

Reads/writes nothing: a pure bookkeeping structure over (clip, waveform) pairs as they come out
of the decoding workers. A bucket is emitted when it holds `batch_size` clips; when more than
`max_pending` clips wait (datasets of all-different lengths, like Clotho), the fullest bucket is
emitted early, so memory stays bounded. `flush()` empties every bucket (end of a chunk).
"""

from collections.abc import Iterator

import numpy as np


class LengthBuckets:
    """Collect waveforms into batches of identical length.

    Usage: `for clips, waves in buckets.add(i, wave): encode(waves)` for each decoded clip,
    then the same over `buckets.flush()` at the end of a chunk.
    """

    def __init__(self, batch_size: int, max_pending: int):
        if batch_size < 1 or max_pending < 1:
            raise ValueError("batch_size and max_pending must be at least 1")
        self.batch_size = batch_size
        self.max_pending = max_pending
        self._buckets: dict[int, list[tuple[int, np.ndarray]]] = {}
        self.pending = 0

    def add(self, clip: int, wave: np.ndarray) -> Iterator[tuple[list[int], np.ndarray]]:
        """Queue one clip's waveform (L,); yield the batches (clips, waves (B, L)) now full."""
        bucket = self._buckets.setdefault(len(wave), [])
        bucket.append((clip, wave))
        self.pending += 1
        if len(bucket) == self.batch_size:
            yield self._take(len(wave))
        while self.pending > self.max_pending:
            fullest = max(self._buckets, key=lambda length: len(self._buckets[length]))
            yield self._take(fullest)

    def flush(self) -> Iterator[tuple[list[int], np.ndarray]]:
        """Yield every waiting clip, in batches, in the order their lengths first appeared."""
        while self._buckets:
            yield self._take(next(iter(self._buckets)))

    def _take(self, length: int) -> tuple[list[int], np.ndarray]:
        bucket = self._buckets.pop(length)
        self.pending -= len(bucket)
        clips = [clip for clip, _ in bucket]
        return clips, np.stack([wave for _, wave in bucket])  # (B, L)
