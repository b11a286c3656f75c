"""Training batches of the diffusion head (diffatr/diffusion_head/batches.py): one caption per
clip per batch, each caption at most once per epoch, never a caption without a clip, seeded."""

import pytest
import torch
from rerank_oracle import check_clip_unique

from diffatr.diffusion_head.batches import clip_unique_batches


def skewed_index(seed: int = 0) -> torch.Tensor:
    """40 clips with 1..7 captions each, in a shuffled caption order, and 6 unlabelled captions."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(1, 8, (40,), generator=g)
    index = torch.repeat_interleave(torch.arange(40), counts)
    index = torch.cat([index, torch.full((6,), -1)])
    return index[torch.randperm(len(index), generator=g)]


@pytest.mark.parametrize("batch_size", [2, 5, 8, 32])
def test_batches_hold_distinct_clips_and_each_caption_at_most_once(batch_size) -> None:
    index = skewed_index()
    g = torch.Generator().manual_seed(1)
    for _ in range(3):  # epochs: the generator moves on
        batches = clip_unique_batches(index, batch_size, g)
        used = check_clip_unique(batches, index)
        assert all(len(b) <= batch_size for b in batches)
        assert all(b.dtype == torch.long for b in batches)
        assert not set(used) & set(torch.nonzero(index < 0).squeeze(1).tolist())
        # a batch of one is dropped only once a single clip's captions are left, and every
        # clip's first caption goes out in the first turn: at most 7 - 1 captions are lost
        assert len(used) >= int((index >= 0).sum()) - 6


@pytest.mark.parametrize(("n", "batch_size"), [(64, 8), (30, 8), (10, 4), (2, 2)])
def test_one_caption_per_clip_uses_every_caption_once(n, batch_size) -> None:
    index = torch.randperm(n, generator=torch.Generator().manual_seed(n))  # caption i -> clip
    batches = clip_unique_batches(index, batch_size, torch.Generator().manual_seed(0))
    used = check_clip_unique(batches, index)
    assert sorted(used) == list(range(n))
    assert [len(b) for b in batches[:-1]] == [batch_size] * (len(batches) - 1)


def test_a_last_batch_of_one_is_dropped() -> None:
    index = torch.arange(17)
    batches = clip_unique_batches(index, 8, torch.Generator().manual_seed(0))
    assert [len(b) for b in batches] == [8, 8]
    assert len(check_clip_unique(batches, index)) == 16


def test_batches_depend_on_the_seed_only() -> None:
    index = skewed_index()

    def epoch(seed: int) -> list[list[int]]:
        return [
            b.tolist() for b in clip_unique_batches(index, 8, torch.Generator().manual_seed(seed))
        ]

    assert epoch(3) == epoch(3)
    assert epoch(3) != epoch(4)
    g = torch.Generator().manual_seed(3)
    first = [b.tolist() for b in clip_unique_batches(index, 8, g)]
    second = [b.tolist() for b in clip_unique_batches(index, 8, g)]
    assert first == epoch(3) and second != first  # a new order every epoch


def test_no_batch_when_every_caption_has_one_clip_or_none() -> None:
    index = torch.tensor([0, 0, 0, -1, -1])
    assert clip_unique_batches(index, 4, torch.Generator().manual_seed(0)) == []
    assert clip_unique_batches(torch.full((4,), -1), 4, torch.Generator().manual_seed(0)) == []
