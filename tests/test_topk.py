"""The shared top-k re-ranking mechanism (diffatr/evaluate/topk.py) against a dense loop over
the definitions of its module docstring: fusion S' = S + alpha * w and replace
S' = 2 + w - min(0, min_row w) on each row's cosine top-k, S elsewhere. The re-scorer here is a
fixed function of (direction, query row, candidate), so any block split must give the same
matrix, and negative re-scores exercise the replace shift."""

import itertools
import math

import pytest
import torch

from diffatr.evaluate import CosineScores, TopKScores, t2a_ranks, topk_indices

pytestmark = pytest.mark.usefixtures("one_thread")

NT, NA, D = 13, 9, 8


@pytest.fixture(scope="module")
def cosine() -> CosineScores:
    g = torch.Generator().manual_seed(0)
    return CosineScores(torch.randn(NT, D, generator=g), torch.randn(NA, D, generator=g))


def w_of(direction: str, row: int, candidate: int) -> float:
    """The re-scorer's value of one pair: negative for about half the pairs."""
    return math.sin(1.7 * row + 0.3 * candidate + (0.0 if direction == "t2a" else 1.0))


class Rescorer:
    """w_of on the pairs asked for, recording what TopKScores hands over."""

    def __init__(self):
        self.calls = []

    def __call__(self, direction, row0, S, top):
        self.calls.append((direction, row0, S.clone(), None if top is None else top.clone()))
        cand = torch.arange(S.shape[1]).expand(len(S), -1) if top is None else top
        return torch.tensor(
            [[w_of(direction, row0 + i, int(c)) for c in cand[i]] for i in range(len(S))],
            dtype=torch.float64,
        )


def dense(cosine: CosineScores, direction: str, topk, combine: str, alpha: float = 1.0):
    """The module docstring's S', row by row, in float64."""
    S = (cosine.t2a(0, NT) if direction == "t2a" else cosine.a2t(0, NA)).double()
    out = S.clone()
    for i, row in enumerate(S):
        k = len(row) if topk is None else min(topk, len(row))
        top = torch.topk(row, k).indices.tolist()
        w = {c: w_of(direction, i, c) for c in top}
        shift = min(0.0, min(w.values()))
        for c in top:
            out[i, c] = row[c] + alpha * w[c] if combine == "fusion" else 2.0 + w[c] - shift
    return out


def all_rows(scores: TopKScores, direction: str, cuts) -> torch.Tensor:
    fn = scores.t2a if direction == "t2a" else scores.a2t
    return torch.cat([fn(a, b) for a, b in itertools.pairwise(cuts)])


CASES = {
    "fusion-top3": dict(topk=3, combine="fusion", alpha=0.5),
    "replace-top3": dict(topk=3, combine="replace"),
    "fusion-all": dict(topk=None, combine="fusion", alpha=2.0),
    "replace-all": dict(topk=None, combine="replace"),
    "replace-topk>gallery": dict(topk=50, combine="replace"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_equals_the_dense_definition_for_any_block_split(cosine, case) -> None:
    cfg = CASES[case]
    cuts = {"t2a": [[0, NT], [0, 1, 6, 7, NT]], "a2t": [[0, NA], [0, 4, 5, NA]]}
    for direction, splits in cuts.items():
        want = dense(cosine, direction, **cfg)
        for query_block, c in itertools.product((1, 2, 64), splits):
            scores = TopKScores(cosine, Rescorer(), query_block=query_block, **cfg)
            got = all_rows(scores, direction, c)
            assert got.dtype == torch.float32
            torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-6)


def test_the_rescorer_sees_cosine_rows_their_first_row_and_the_topk(cosine) -> None:
    rescore = Rescorer()
    TopKScores(cosine, rescore, topk=4, query_block=3).t2a(2, 10)
    assert [row0 for _, row0, _, _ in rescore.calls] == [2, 5, 8]
    for direction, row0, S, top in rescore.calls:
        assert direction == "t2a"
        torch.testing.assert_close(S, cosine.t2a(row0, row0 + len(S)), rtol=0, atol=0)
        assert top.shape == (len(S), 4)
        torch.testing.assert_close(top, S.topk(4, dim=1).indices, rtol=0, atol=0)
    rescore = Rescorer()
    TopKScores(cosine, rescore, topk=NA).t2a(0, NT)  # k covers the gallery: nothing selected
    assert all(top is None for *_, top in rescore.calls)


def test_replace_keeps_negative_rescores_above_every_cosine(cosine) -> None:
    k = 4
    S = cosine.t2a(0, NT)
    got = TopKScores(cosine, Rescorer(), topk=k, combine="replace").t2a(0, NT)
    for i in range(NT):
        top = S[i].topk(k).indices
        w = torch.tensor([w_of("t2a", i, int(c)) for c in top])
        rest = torch.ones(NA, dtype=torch.bool)
        rest[top] = False
        assert got[i, top].min() >= 2.0 > 1.0 >= got[i, rest].max()
        torch.testing.assert_close(got[i, rest], S[i, rest], rtol=0, atol=0)
        # ordered by w alone, negative or not
        assert torch.equal(torch.argsort(got[i, top]), torch.argsort(w))
    assert any(w_of("t2a", i, c) < 0 for i in range(NT) for c in range(NA))


def test_fusion_keeps_cosine_outside_the_topk(cosine) -> None:
    S = cosine.a2t(0, NA)
    got = TopKScores(cosine, Rescorer(), topk=2, alpha=0.1).a2t(0, NA)
    changed = (got != S).sum(dim=1)
    assert (changed <= 2).all() and changed.sum() > 0


def test_topk_none_equals_a_topk_covering_the_gallery(cosine) -> None:
    for combine in ("fusion", "replace"):
        every = TopKScores(cosine, Rescorer(), topk=None, combine=combine)
        for topk in (NA, NA + 1, 1000):
            covering = TopKScores(cosine, Rescorer(), topk=topk, combine=combine)
            torch.testing.assert_close(covering.t2a(0, NT), every.t2a(0, NT), rtol=0, atol=0)


def test_bad_settings_are_refused(cosine) -> None:
    with pytest.raises(ValueError, match="combine must be one of"):
        TopKScores(cosine, Rescorer(), combine="gen")
    for topk in (0, -3):
        with pytest.raises(ValueError, match="top-k must be at least 1"):
            TopKScores(cosine, Rescorer(), topk=topk)


def test_topk_indices_is_the_head_of_a_stable_descending_sort() -> None:
    """Oracle: Python's sorted (stable) on each row; rows with many exact ties at the k-th place."""
    g = torch.Generator().manual_seed(1)
    S = torch.randint(0, 4, (40, 23), generator=g).float()
    S[0] = 0.5  # one row all tied
    for k in (1, 3, 7, 22):
        got = topk_indices(S, k)
        for i, row in enumerate(S.tolist()):
            want = sorted(range(len(row)), key=lambda j: -row[j])[:k]
            assert got[i].tolist() == want, (i, k)


def test_a_ground_truth_at_cosine_rank_k_stays_in_the_topk_with_duplicated_clips() -> None:
    """Duplicated clips tie exactly; the ground truth (the lowest index of its duplicates) has
    cosine rank <= k, and fusion with w >= 0 must not push it out: R@k for k >= top-k is
    cosine's."""
    g = torch.Generator().manual_seed(2)
    base = torch.randn(6, D, generator=g)
    audio = base[[0, 1, 2, 3, 3, 3, 3, 4, 5, 5]]  # clip 3 at rows 3..6, clip 5 at rows 8..9
    text = torch.randn(30, D, generator=g)
    cosine = CosineScores(text, audio)
    S = cosine.t2a(0, len(text))
    n_checked = 0
    for k in (2, 3, 4, 5):
        scores = TopKScores(cosine, lambda d, r0, s, top: torch.ones(top.shape), topk=k)
        fused = scores.t2a(0, len(text))
        for i in range(len(text)):
            for target in (3, 8):  # the first copy of each duplicated clip
                one = CosineScores(text[i : i + 1], audio)
                cos_rank = t2a_ranks(one, torch.tensor([target]))[0]
                if int(cos_rank) > k:
                    continue
                fused_rank = 1 + int((fused[i] > fused[i, target]).sum())
                fused_rank += int((fused[i, :target] == fused[i, target]).sum())
                assert fused_rank == int(cos_rank), (k, i, target)
                n_checked += int(S[i].topk(k).values[-1] == S[i, target])
    assert n_checked > 0  # some ground truths sat on a tie at the k-th place
