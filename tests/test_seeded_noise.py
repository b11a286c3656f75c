"""seeded_noise.py's block of rows against numpy's own generator, row by row: the same bits."""

import numpy as np
import pytest
import torch

from diffatr.diffusion_head.rerank import row_noise, rows_noise
from diffatr.diffusion_head.seeded_noise import block_noise, seed_states

SEEDS = [0, 1, 7, 2**31 - 1, 2**32 - 1, 2**32, 2**40 + 3, (-5) % 2**64, 2**64 - 1]


@pytest.mark.parametrize("seed", SEEDS)
def test_block_equals_default_rng_row_by_row(seed) -> None:
    rows = range(0, 2000, 37)
    for d in (0, 1):
        for shape in [(1, 32), (51, 7), (3,)]:
            got = block_noise([seed, d], rows, shape)
            want = np.stack([
                np.random.default_rng([seed, d, r]).standard_normal(shape, dtype=np.float32)
                for r in rows
            ])  # fmt: skip
            assert got.dtype == np.float32 and np.array_equal(got, want)


def test_seed_states_equal_seed_sequence_words() -> None:
    rows = np.array([0, 1, 5, 2**32 - 1], dtype=np.int64)
    got = seed_states([12345, 1], rows)
    want = [np.random.SeedSequence([12345, 1, int(r)]).generate_state(4, np.uint64) for r in rows]
    assert np.array_equal(got, np.stack(want))


def test_keys_beyond_the_pool_take_numpys_path() -> None:
    key = [2**100 + 9, 1]  # 4 words of seed + direction + row: more than the pool of 4
    assert seed_states(key, np.arange(3)) is None
    want = [np.random.default_rng([*key, r]).standard_normal((2, 3), dtype=np.float32)
            for r in range(3)]  # fmt: skip
    assert np.array_equal(block_noise(key, range(3), (2, 3)), np.stack(want))


def test_rows_noise_is_row_noise_stacked() -> None:
    for direction in ("t2a", "a2t"):
        got = rows_noise(-3, direction, range(40, 90), (4, 9))
        want = torch.stack([row_noise(-3, direction, r, (4, 9)) for r in range(40, 90)])
        assert torch.equal(got, want)
