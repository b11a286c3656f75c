"""Recall@k curves (diffatr/evaluate/curves.py) against tests/retrieval_oracle.py's ranks and
a plain count per k: t2a by each labelled caption's clip rank, a2t by each clip's best-ranked
caption; R@1/5/10 must be `paper_protocol`'s numbers."""

import pytest
import torch
from retrieval_oracle import oracle_a2t_ranks, oracle_t2a_ranks

from diffatr.evaluate import DenseScores, paper_protocol
from diffatr.evaluate.curves import recall_curve

pytestmark = pytest.mark.usefixtures("one_thread")


def naive_curves(S, audio_index, ks) -> dict[str, list[float]]:
    index = [int(a) for a in audio_index]
    t2a = [r for r, a in zip(oracle_t2a_ranks(S, index), index, strict=True) if a >= 0]
    caption_ranks = oracle_a2t_ranks(S, index, S.shape[1])
    a2t = [
        min(r for r, a in zip(caption_ranks, index, strict=True) if a == clip)
        for clip in range(S.shape[1])
        if clip in index
    ]
    return {
        d: [100.0 * sum(r <= k for r in best) / len(best) for k in ks]
        for d, best in (("t2a", t2a), ("a2t", a2t))
    }


@pytest.fixture(scope="module")
def split():
    g = torch.Generator().manual_seed(0)
    nt, na = 40, 15
    S = torch.randn(nt, na, generator=g).round(decimals=1)  # ties, broken by gallery order
    index = torch.randint(0, na - 1, (nt,), generator=g)  # the last clip has no caption
    index[[0, 9]] = -1
    return S, index


@pytest.mark.parametrize("ks", [range(1, 101), [1, 2, 3, 7, 15, 16], [4]])
def test_curves_equal_the_oracles_counts(split, ks) -> None:
    S, index = split
    want = naive_curves(S, index, list(ks))
    for max_elements in (20, 1 << 22):  # ranked in blocks of 1 row and all at once
        got = recall_curve(DenseScores(S), index, ks, max_elements=max_elements)
        assert set(got) == {"t2a", "a2t"}
        for d in got:
            assert got[d].tolist() == pytest.approx(want[d], abs=1e-12), d


def test_recall_at_1_5_10_are_the_protocols(split) -> None:
    S, index = split
    curve = recall_curve(DenseScores(S), index)
    metrics = paper_protocol(DenseScores(S), index)
    for d in ("t2a", "a2t"):
        assert len(curve[d]) == 100
        for k in (1, 5, 10):
            assert curve[d][k - 1] == pytest.approx(metrics[f"{d}_R@{k}"], abs=1e-12)
        assert (curve[d][1:] >= curve[d][:-1]).all() and curve[d][-1] == 100.0


def test_bad_ks_are_refused(split) -> None:
    S, index = split
    for ks in ([], [0, 1]):
        with pytest.raises(ValueError, match="ks must be"):
            recall_curve(DenseScores(S), index, ks)
    with pytest.raises(ValueError, match="no caption has a clip"):
        recall_curve(DenseScores(S), torch.full_like(index, -1))
