"""Training batches of (caption, clip) pairs in which no clip appears twice.

Reads: the caption -> clip index of a cache. Writes nothing. A batch's items are each other's
candidates (method.md, "Training loss"), so two captions of one clip in a batch would label the
sibling a negative; every batch here holds distinct clips.
"""

from collections import deque

import torch


def clip_unique_batches(
    audio_index: torch.Tensor, batch_size: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """Caption rows in shuffled batches of distinct clips, each caption once per epoch.

    Captions are shuffled, then ordered by their turn within their clip (every clip's first
    caption, then every clip's second, ...), so conflicts arise only where turns meet; a
    conflicting caption waits for the next batch. Batches of one item (no negatives) are dropped.
    """
    rows = torch.nonzero(audio_index >= 0).squeeze(1)
    rows = rows[torch.randperm(len(rows), generator=generator)]
    clips = audio_index[rows]
    turn = torch.zeros(len(rows), dtype=torch.long)
    seen: dict[int, int] = {}
    for i, clip in enumerate(clips.tolist()):
        turn[i] = seen.get(clip, 0)
        seen[clip] = turn[i].item() + 1
    order = torch.sort(turn, stable=True).indices
    pending = deque(zip(rows[order].tolist(), clips[order].tolist(), strict=True))
    batches = []
    while pending:
        batch, in_batch, waiting = [], set(), []
        while pending and len(batch) < batch_size:
            row, clip = pending.popleft()
            if clip in in_batch:
                waiting.append((row, clip))
            else:
                batch.append(row)
                in_batch.add(clip)
        pending.extendleft(reversed(waiting))
        if len(batch) > 1:
            batches.append(torch.tensor(batch, dtype=torch.long))
    return batches
