"""The one-pass ranks of both directions (evaluate/joint_ranks.py, its counting kernel
block_counts.py) and the candidate-based a2t ranks (ranks.py) against the naive oracle: ties,
every chunk size, pair scores off by rounding, the fallbacks, cosine."""

import numpy as np
import pytest
import torch
from retrieval_oracle import oracle_a2t_ranks, oracle_t2a_ranks
from test_metrics import make_index

from diffatr.evaluate import CosineScores, DenseScores, a2t_ranks, t2a_ranks
from diffatr.evaluate import block_counts as bc
from diffatr.evaluate import joint_ranks as jr
from diffatr.evaluate import ranks as rk

pytestmark = pytest.mark.usefixtures("one_thread")


def tied(nt: int, na: int, levels: int, seed: int) -> torch.Tensor:
    """Scores on `levels` values (0: continuous), so rows and columns are full of ties."""
    rng = np.random.default_rng(seed)
    if levels == 0:
        return torch.from_numpy(rng.standard_normal((nt, na)).astype(np.float32))
    return torch.from_numpy((rng.integers(0, levels, (nt, na)) / levels).astype(np.float32))


def no_fallback(monkeypatch) -> None:
    """Make joint_ranks' fallback to ranks.py's a2t pass fail the test: the band path answers."""

    def fail(*args):
        raise AssertionError("a2t fell back to the two-pass ranks")

    monkeypatch.setattr(jr, "a2t_ranks", fail)
    monkeypatch.setattr(jr, "BAND_BUDGET", 1e9)


def counting_fallback(monkeypatch) -> list:
    """Record each call of joint_ranks' fallback (ranks.py's a2t pass), which still runs."""
    called = []
    real = jr.a2t_ranks
    monkeypatch.setattr(jr, "a2t_ranks", lambda *a: called.append(1) or real(*a))
    return called


@pytest.mark.parametrize("kernel", ["numba", "eager"])
@pytest.mark.parametrize("levels", [2, 5, 0])
@pytest.mark.parametrize("max_elements", [1, 13, 200, 1 << 20])
def test_joint_ranks_match_the_oracle_in_any_chunk_size(
    levels, max_elements, kernel, monkeypatch
) -> None:
    """Ties everywhere (levels 2, 5: every band holds other captions at exactly s_j, before and
    after j in gallery order), clips with 0, 1, 7 and 12 captions (3 kernel calls of 5 slots),
    captions without a clip; all through the band path."""
    no_fallback(monkeypatch)
    if kernel == "eager":
        monkeypatch.setattr(jr, "block_counts", bc.eager_counts)
    index = make_index(levels + 3)
    S = tied(len(index), 40, levels, seed=levels)
    t2a, a2t = jr.joint_ranks(DenseScores(S), torch.tensor(index), max_elements)
    assert t2a.tolist() == oracle_t2a_ranks(S, index)
    assert a2t.tolist() == oracle_a2t_ranks(S, index, 40)


class Shifted(DenseScores):
    """Pair scores off from the matrix by `shift`, either way (as a separate dot product's
    rounding is)."""

    def __init__(self, S, shift: float):
        super().__init__(S)
        self.shift = shift

    def pair_scores(self, text_rows, audio_rows):
        out = super().pair_scores(text_rows, audio_rows)
        sign = torch.where(text_rows % 2 == 0, 1.0, -1.0).to(out.dtype)
        return out + sign * self.shift


@pytest.mark.parametrize("levels", [3, 0])
@pytest.mark.parametrize("margin", [1e-3, 0.3])  # 0.3: bands hold many entries above and below
def test_band_entries_resolve_exactly_when_pair_scores_are_off(levels, margin, monkeypatch):
    """t_j differs from s_j by a third of the margin: the band's entries, ties at s_j included,
    still give the oracle's ranks."""
    no_fallback(monkeypatch)
    monkeypatch.setattr(jr, "BAND_MARGIN", margin)
    index = make_index(13)
    S = tied(len(index), 40, levels, seed=4).double()
    t2a, a2t = jr.joint_ranks(Shifted(S, margin / 3), torch.tensor(index), 64)
    assert a2t.tolist() == oracle_a2t_ranks(S, index, 40)
    assert t2a.tolist() == oracle_t2a_ranks(S, index)


def test_a2t_falls_back_when_a_score_leaves_its_band(monkeypatch) -> None:
    """Pair scores off by more than the margin: the counts cannot be trusted, so ranks.py's a2t
    pass answers (and agrees with the oracle)."""
    called = counting_fallback(monkeypatch)
    index = make_index(14)
    S = tied(len(index), 40, 0, seed=5)
    _, a2t = jr.joint_ranks(Shifted(S, 10 * jr.BAND_MARGIN), torch.tensor(index), 100)
    assert called and a2t.tolist() == oracle_a2t_ranks(S, index, 40)


def test_a2t_falls_back_when_band_entries_exceed_the_budget(monkeypatch) -> None:
    called = counting_fallback(monkeypatch)
    monkeypatch.setattr(jr, "BAND_BUDGET", 0.01)
    index = make_index(7)
    S = tied(len(index), 40, 2, seed=1)  # two values: every band holds half a column
    t2a, a2t = jr.joint_ranks(DenseScores(S), torch.tensor(index), 100)
    assert called and a2t.tolist() == oracle_a2t_ranks(S, index, 40)
    assert t2a.tolist() == oracle_t2a_ranks(S, index)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(1, 1), (7, 300), (33, 517)])  # columns past one tile
@pytest.mark.parametrize("levels", [3, 0])
def test_block_counts_kernel_equals_eager_counts(dtype, shape, levels) -> None:
    """The numba kernel against the torch comparisons it replaces (ties at every threshold)."""
    assert bc.numba is not None
    b, na = shape
    block = tied(b, na, levels, seed=b).to(dtype)
    g = torch.Generator().manual_seed(na)
    s = block[torch.arange(b), torch.randint(0, na, (b,), generator=g)]
    s[::3] = torch.inf  # rows without a clip
    lo = block[torch.randint(0, b, (bc.SLOTS,), generator=g)]  # (SLOTS, Na): ties with rows
    hi = lo + (0.0 if levels else 0.5)
    hi[-1] = lo[-1] = torch.inf  # a slot no clip has
    got = bc.block_counts(block, s, lo, hi)
    want = bc.eager_counts(block, s, lo, hi)
    for x, y in zip(got, want, strict=True):
        assert x.dtype == torch.int32 and torch.equal(x, y)


@pytest.mark.parametrize("share", [0.0, 1.0])  # 0: always whole-row passes; 1: candidates
@pytest.mark.parametrize("max_elements", [1, 50, 1 << 20])
def test_a2t_ranks_by_candidates_and_by_slot_agree_with_the_oracle(
    share, max_elements, monkeypatch
) -> None:
    monkeypatch.setattr(rk, "CANDIDATE_SHARE", share)
    index = make_index(11)
    S = tied(len(index), 40, 3, seed=2)
    assert a2t_ranks(DenseScores(S), torch.tensor(index), max_elements).tolist() == (
        oracle_a2t_ranks(S, index, 40)
    )
    ranks, _ = t2a_ranks(DenseScores(S), torch.tensor(index), max_elements)
    assert ranks.tolist() == oracle_t2a_ranks(S, index)


@pytest.mark.parametrize("max_elements", [64, 1 << 20])
def test_cosine_joint_ranks_equal_the_two_pass_ranks(max_elements) -> None:
    g = torch.Generator().manual_seed(0)
    index = make_index(5)
    audio = torch.randn(40, 16, generator=g)
    text = audio[torch.tensor(index).clamp_min(0)] + 0.8 * torch.randn(len(index), 16, generator=g)
    text[:4] = audio[index[0]] if index[0] >= 0 else audio[0]  # exact ties across captions
    scores = CosineScores(text, audio)
    ai = torch.tensor(index)
    assert scores.a2t_is_transpose
    t2a, a2t = jr.paper_ranks(scores, ai, max_elements)
    S = scores.text @ scores.audio.T  # the one matrix both directions rank
    assert t2a.tolist() == oracle_t2a_ranks(S, index)
    assert a2t.tolist() == oracle_a2t_ranks(S, index, 40)
    assert torch.equal(t2a, t2a_ranks(scores, ai, max_elements)[0])


def test_rescored_scores_keep_two_passes() -> None:
    """A re-ranker's a2t rows are not the columns of its t2a rows: no one-pass shortcut."""

    class Rows(DenseScores):
        a2t_is_transpose = False

        def a2t(self, start, stop):
            return -self.S[:, start:stop].T

    index = make_index(2)
    S = tied(len(index), 40, 0, seed=3)
    _, a2t = jr.paper_ranks(Rows(S), torch.tensor(index))
    assert a2t.tolist() == oracle_a2t_ranks(-S, index, 40)
