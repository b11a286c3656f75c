"""The paper protocol (method.md, "Evaluation protocols") against a naive oracle.

The oracle below is deliberately slow and plain: Python lists, loops and
`sorted(key=(-score, index))`, so that it is correct by inspection. The fast, chunked
implementation in `diffatr.evaluate` must agree with it on random scores, massive ties,
chunking down to one row at a time, float16-rounded scores and cosine scores. A few
hand-computed golden cases check the oracle itself.
"""

import json
import math
import re

import numpy as np
import pytest
import torch
from retrieval_oracle import (
    as_rows,
    oracle_a2t_ranks,
    oracle_median,
    oracle_order,
    oracle_paper,
    oracle_t2a_ranks,
)

from diffatr.errors import UserError
from diffatr.evaluate import (
    CosineScores,
    DenseScores,
    a2t_ranks,
    paper_protocol,
    t2a_ranks,
    write_json,
)

METRIC_NAMES = ("R@1", "R@5", "R@10", "mAP@10", "medR", "meanR")
ALL_KEYS = {f"{d}_{m}" for d in ("t2a", "a2t") for m in METRIC_NAMES}


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def assert_metrics_close(got: dict, expected: dict, tol: float = 1e-9) -> None:
    assert set(got) == set(expected)
    for key in expected:
        assert got[key] == pytest.approx(expected[key], rel=0, abs=tol), key


def make_index(seed: int, n_audio: int = 40, n_orphans: int = 6) -> list[int]:
    """A shuffled caption -> clip index with every awkward case in one split.

    Clips 0-2 and 20-23 (consecutive, so whole chunks have no caption) and the last clip have
    no caption, clip 3 has exactly 1, clip 4 has 7, clip 5 has 12 (more than the AP cut-off),
    the rest 0-5; `n_orphans` captions have no clip (-1).
    """
    rng = np.random.default_rng(seed)
    counts = rng.choice([0, 1, 2, 3, 5], size=n_audio).tolist()
    for a in (0, 1, 2, 20, 21, 22, 23, n_audio - 1):
        counts[a] = 0
    counts[3], counts[4], counts[5] = 1, 7, 12
    index = [a for a, c in enumerate(counts) for _ in range(c)] + [-1] * n_orphans
    return [index[i] for i in rng.permutation(len(index))]


def check_against_oracle(S_lib, S_oracle, audio_index: list[int], **kwargs) -> dict:
    got = paper_protocol(DenseScores(S_lib), torch.tensor(audio_index), **kwargs)
    assert_metrics_close(got, oracle_paper(S_oracle, audio_index))
    return got


def well_separated(S: np.ndarray, audio_index: list[int], tol: float, top: int = 0) -> bool:
    """True when no comparison that decides a rank (or the `top` order) is within tol.

    Used only as a precondition for cosine tests, where float32 and float64 must agree.
    """
    ai = np.asarray(audio_index)
    for j, a in enumerate(ai):
        if a >= 0:
            gaps = np.abs(S[j] - S[j, a])
            gaps[a] = np.inf
            if gaps.min() <= tol:
                return False
            column_gaps = np.abs(S[:, a] - S[j, a])
            column_gaps[j] = np.inf
            if column_gaps.min() <= tol:
                return False
        if top and np.any(S[j] != 0):
            head = np.sort(S[j])[::-1][: top + 1]
            if np.any(-np.diff(head) <= tol):
                return False
    return True


def cosine_case(seed: int, n_audio: int = 30, dim: int = 16, tol: float = 1e-5):
    """Embeddings (float32) whose float64 cosine matrix has no near-tie that matters."""
    index = make_index(seed, n_audio=n_audio, n_orphans=4)
    for attempt in range(50):
        rng = np.random.default_rng(1000 * seed + attempt)
        text = rng.standard_normal((len(index), dim)).astype(np.float32)
        audio = rng.standard_normal((n_audio, dim)).astype(np.float32)
        t = text.astype(np.float64)
        a = audio.astype(np.float64)
        t /= np.linalg.norm(t, axis=1, keepdims=True)
        a /= np.linalg.norm(a, axis=1, keepdims=True)
        S = t @ a.T
        if well_separated(S, index, tol, top=10):
            return torch.from_numpy(text), torch.from_numpy(audio), S, index
    raise AssertionError("no well-separated cosine case found")


# --------------------------------------------------------------------------------------------
# Golden cases: hand-computed, checking the oracle and the library alike
# --------------------------------------------------------------------------------------------
def test_golden_two_clips_with_orphan_caption():
    # captions x clips; c0, c1 -> clip 0, c2 -> clip 1, c3 has no clip (-1).
    S = [[0.9, 0.1], [0.2, 0.7], [0.3, 0.6], [0.8, 0.5]]
    index = [0, 0, 1, -1]
    # t2a: c0 ranks clip 0 first (0.9 > 0.1): 1; c1: 0.2 < 0.7: 2; c2: 0.6 > 0.3: 1.
    #   ranks [1, 2, 1]: R@1 = 2/3, mAP@10 = (1 + 1/2 + 1)/3 = 5/6, r-1 = [0, 1, 0] -> medR 1,
    #   meanR = 4/3.
    # a2t clip 0, column [0.9, 0.2, 0.3, 0.8]: order c0, c3, c2, c1 -> its captions rank 1 and 4,
    #   AP = (1/1 + 2/4)/2 = 0.75, best 1. The orphan c3 sits in the gallery (it pushes c1 down).
    # a2t clip 1, column [0.1, 0.7, 0.6, 0.5]: order c1, c2, c3, c0 -> c2 ranks 2, AP = 1/2.
    #   best [1, 2]: R@1 = 1/2, mAP@10 = (0.75 + 0.5)/2, r-1 = [0, 1] -> median 0.5 -> medR 1,
    #   meanR 1.5.
    expected = {
        "t2a_R@1": 200 / 3, "t2a_R@5": 100.0, "t2a_R@10": 100.0,
        "t2a_mAP@10": 500 / 6, "t2a_medR": 1.0, "t2a_meanR": 4 / 3,
        "a2t_R@1": 50.0, "a2t_R@5": 100.0, "a2t_R@10": 100.0,
        "a2t_mAP@10": 62.5, "a2t_medR": 1.0, "a2t_meanR": 1.5,
    }  # fmt: skip
    assert oracle_t2a_ranks(S, index) == [1, 2, 1, 0]
    assert oracle_a2t_ranks(S, index, 2) == [1, 4, 2, 0]
    assert_metrics_close(oracle_paper(S, index), expected)
    assert_metrics_close(paper_protocol(DenseScores(np.array(S)), torch.tensor(index)), expected)


def test_golden_even_median_and_tie():
    # Two captions over four clips; clips 2 and 3 have no caption (t2a gallery items only).
    S = [[0.9, 0.1, 0.2, 0.3], [0.5, 0.1, 0.7, 0.6]]
    index = [0, 1]
    # t2a: c0 -> clip 0 is the top score: rank 1. c1 -> clip 1 (0.1) is last of 4: rank 4.
    #   R@1 = 50, R@5 = 100, mAP@10 = (1 + 1/4)/2 = 62.5, r-1 = [0, 3]: median 1.5,
    #   medR = floor(1.5) + 1 = 2 (not the plain median rank 2.5), meanR 2.5.
    # a2t: clip 0, column [0.9, 0.5] -> c0 rank 1. clip 1, column [0.1, 0.1] is a tie, broken
    #   by gallery order: c0 first, so c1 ranks 2. R@1 = 50, mAP@10 = (1 + 1/2)/2 = 75,
    #   r-1 = [0, 1] -> medR 1, meanR 1.5.
    expected = {
        "t2a_R@1": 50.0, "t2a_R@5": 100.0, "t2a_R@10": 100.0,
        "t2a_mAP@10": 62.5, "t2a_medR": 2.0, "t2a_meanR": 2.5,
        "a2t_R@1": 50.0, "a2t_R@5": 100.0, "a2t_R@10": 100.0,
        "a2t_mAP@10": 75.0, "a2t_medR": 1.0, "a2t_meanR": 1.5,
    }  # fmt: skip
    assert_metrics_close(oracle_paper(S, index), expected)
    assert_metrics_close(paper_protocol(DenseScores(np.array(S)), torch.tensor(index)), expected)


def test_golden_all_ties_follow_gallery_order():
    # Every score equal: each ranking is plain gallery order.
    S = [[0.0] * 3 for _ in range(3)]
    index = [2, 1, 0]
    # t2a: c0 -> clip 2: rank 3; c1 -> clip 1: rank 2; c2 -> clip 0: rank 1.
    # a2t: clip 0's caption is c2: rank 3; clip 1's is c1: rank 2; clip 2's is c0: rank 1.
    # Both directions: R@1 = 1/3, mAP@10 = (1 + 1/2 + 1/3)/3 = 11/18, r-1 = [0, 1, 2] -> medR 2.
    per_direction = {
        "R@1": 100 / 3, "R@5": 100.0, "R@10": 100.0,
        "mAP@10": 1100 / 18, "medR": 2.0, "meanR": 2.0,
    }  # fmt: skip
    expected = {f"{d}_{k}": v for d in ("t2a", "a2t") for k, v in per_direction.items()}
    assert oracle_t2a_ranks(S, index) == [3, 2, 1]
    assert oracle_a2t_ranks(S, index, 3) == [1, 2, 3]
    assert_metrics_close(oracle_paper(S, index), expected)
    assert_metrics_close(
        paper_protocol(DenseScores(torch.zeros(3, 3)), torch.tensor(index)), expected
    )


def test_golden_ap_ignores_captions_ranked_past_ten():
    # 12 captions, 2 clips, integer scores. Clip 0 owns c0 and c11, clip 1 owns c1..c10.
    # S[j] = [12 - j, j].
    S = [[12 - j, j] for j in range(12)]
    index = [0] + [1] * 10 + [0]
    # a2t clip 0, column 12, 11, ..., 1: c0 ranks 1, c11 ranks 12 (> 10, contributes 0):
    #   AP = (1/1)/2 = 0.5.
    # a2t clip 1, column 0, 1, ..., 11: order c11, c10, ..., c1, c0, so c10..c1 rank 2..11:
    #   AP = (1/2 + 2/3 + ... + 9/10 + [11 > 10: 0]) / 10 = (10 - H_10) / 10.
    #   best ranks [1, 2]: R@1 50, medR 1, meanR 1.5.
    # t2a: c0 [12, 0] -> 1; c11 [1, 11] -> 2; c1..c5 (12-j > j) -> 2; c6 [6, 6] ties and
    #   clip 1 comes after clip 0 -> 2; c7..c10 -> 1. Ranks: five 1s and seven 2s.
    #   R@1 = 5/12, mAP@10 = (5 + 7/2)/12, r-1: five 0s, seven 1s, median 1 -> medR 2,
    #   meanR = 19/12.
    h10 = sum(1 / k for k in range(1, 11))
    expected = {
        "t2a_R@1": 500 / 12, "t2a_R@5": 100.0, "t2a_R@10": 100.0,
        "t2a_mAP@10": 100 * 8.5 / 12, "t2a_medR": 2.0, "t2a_meanR": 19 / 12,
        "a2t_R@1": 50.0, "a2t_R@5": 100.0, "a2t_R@10": 100.0,
        "a2t_mAP@10": 100 * (0.5 + (10 - h10) / 10) / 2, "a2t_medR": 1.0, "a2t_meanR": 1.5,
    }  # fmt: skip
    assert_metrics_close(oracle_paper(S, index), expected)
    # Nested lists of ints: DenseScores holds an int64 matrix.
    assert_metrics_close(paper_protocol(DenseScores(S), torch.tensor(index)), expected)


def test_oracle_median_is_numpy_style():
    assert oracle_median([3, 1, 2]) == 2
    assert oracle_median([4, 1, 3, 2]) == 2.5
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 6):
        values = rng.integers(0, 20, size=n).tolist()
        assert oracle_median(values) == pytest.approx(float(np.median(values)))


# --------------------------------------------------------------------------------------------
# The fast implementation against the oracle
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_float_scores(seed):
    index = make_index(seed)
    S = np.random.default_rng(seed).standard_normal((len(index), 40))
    check_against_oracle(S, S, index)  # float64
    S32 = S.astype(np.float32)
    check_against_oracle(torch.from_numpy(S32), S32, index)  # float32


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("levels", [2, 4])
def test_small_integer_scores_massive_ties(seed, levels):
    index = make_index(seed)
    S = np.random.default_rng(seed + 100).integers(0, levels, size=(len(index), 40))
    check_against_oracle(torch.from_numpy(S), S, index)  # int64 matrix
    check_against_oracle(S.astype(np.float64), S, index)
    check_against_oracle(S.astype(np.float64), S, index, max_elements=7)


@pytest.mark.parametrize("max_elements", [1, 7, 1 << 24])
def test_all_equal_matrix(max_elements):
    index = make_index(7)
    n_audio = 40
    S = np.full((len(index), n_audio), 0.25)
    # Independent of the oracle: with every score equal, a caption's clip ranks at its clip row
    # + 1, and a caption ranks 1 + (number of captions before it) in its clip's query.
    assert oracle_t2a_ranks(S, index) == [a + 1 if a >= 0 else 0 for a in index]
    assert oracle_a2t_ranks(S, index, n_audio) == [
        j + 1 if a >= 0 else 0 for j, a in enumerate(index)
    ]
    check_against_oracle(S, S, index, max_elements=max_elements)


def test_clip_with_one_and_clip_with_seven_captions():
    index = make_index(11)
    assert index.count(3) == 1 and index.count(4) == 7 and index.count(-1) > 0
    assert index.count(0) == 0  # a clip with no caption
    S = np.random.default_rng(5).standard_normal((len(index), 40))
    # Make clip 3's single caption and clip 4's captions rank in a known way: clip 4's column is
    # boosted for its own captions, so all 7 rank 1..7 and its AP@10 is exactly 1.
    for j, a in enumerate(index):
        if a == 4:
            S[j, 4] = 10.0 + j / 1000
    check_against_oracle(S, S, index)
    a2t = a2t_ranks(DenseScores(S), torch.tensor(index)).tolist()
    assert sorted(r for r, a in zip(a2t, index, strict=True) if a == 4) == list(range(1, 8))
    assert [r for r, a in zip(a2t, index, strict=True) if a == 3] == oracle_a2t_ranks(
        S, [a if a == 3 else -1 for a in index], 40
    )[index.index(3) : index.index(3) + 1]


def test_only_labelled_captions_and_captioned_clips_are_queries():
    # Removing orphan captions changes the a2t gallery only; removing caption-less clips changes
    # the t2a gallery only. Check via the oracle that both kinds matter to the fast code.
    index = make_index(3)
    S = np.random.default_rng(3).standard_normal((len(index), 40))
    full = check_against_oracle(S, S, index)
    keep = [j for j, a in enumerate(index) if a >= 0]
    no_orphans = check_against_oracle(S[keep], S[keep], [index[j] for j in keep])
    assert {k: full[k] for k in full if k.startswith("t2a_")} == {
        k: no_orphans[k] for k in no_orphans if k.startswith("t2a_")
    }
    # Make every orphan caption beat everything in every clip's query: a2t must get worse.
    S_boost = S.copy()
    for j, a in enumerate(index):
        if a < 0:
            S_boost[j, :] = 100.0
    boosted = check_against_oracle(S_boost, S_boost, index)
    assert boosted["a2t_meanR"] > no_orphans["a2t_meanR"]


@pytest.mark.parametrize("seed", [0, 1])
def test_chunking_gives_identical_results(seed):
    index = make_index(seed)
    nt, na = len(index), 40
    S = np.random.default_rng(seed).integers(0, 3, size=(nt, na)).astype(np.float64)
    S_t = torch.from_numpy(S)
    ai = torch.tensor(index)
    reference = paper_protocol(DenseScores(S_t), ai)
    assert_metrics_close(reference, oracle_paper(S, index))
    ref_t2a, ref_top = t2a_ranks(DenseScores(S_t), ai, top=5)
    ref_a2t = a2t_ranks(DenseScores(S_t), ai)
    # 1 and 7: one row per chunk (7 < both galleries); 3 * nt + 1: three clips per a2t chunk
    # (some chunks hold no caption at all); 5 * na + 2: five captions per t2a chunk; nt * na:
    # everything in one a2t chunk with several t2a chunks.
    for max_elements in (1, 7, 3 * nt + 1, 5 * na + 2, nt * na):
        assert paper_protocol(DenseScores(S_t), ai, max_elements=max_elements) == reference
        ranks, top = t2a_ranks(DenseScores(S_t), ai, max_elements=max_elements, top=5)
        assert torch.equal(ranks, ref_t2a) and torch.equal(top, ref_top)
        assert torch.equal(a2t_ranks(DenseScores(S_t), ai, max_elements=max_elements), ref_a2t)


@pytest.mark.parametrize("seed", [0, 1])
def test_float16_rounded_scores(seed):
    index = make_index(seed)
    S = np.random.default_rng(seed).random((len(index), 40))
    S16 = torch.from_numpy(S).half()
    rounded = S16.double().numpy()
    # float16 has 11 significant bits: rounding must have created ties to exercise.
    assert any(len(set(row)) < len(row) for row in rounded.tolist())
    expected = oracle_paper(rounded, index)
    for S_lib in (S16, S16.float(), S16.double()):
        for max_elements in (1 << 24, 7):
            got = paper_protocol(DenseScores(S_lib), torch.tensor(index), max_elements=max_elements)
            assert_metrics_close(got, expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("max_elements", [1 << 24, 5])
def test_cosine_scores(seed, max_elements):
    text, audio, S, index = cosine_case(seed)
    got = paper_protocol(CosineScores(text, audio), torch.tensor(index), max_elements=max_elements)
    assert_metrics_close(got, oracle_paper(S, index))
    # The rank functions too, on the float32 cosine scores.
    ranks, top = t2a_ranks(CosineScores(text, audio), torch.tensor(index), top=10)
    assert ranks.tolist() == oracle_t2a_ranks(S, index)
    assert top.tolist() == [oracle_order(row)[:10] for row in as_rows(S)]
    a2t = a2t_ranks(CosineScores(text, audio), torch.tensor(index), max_elements=max_elements)
    assert a2t.tolist() == oracle_a2t_ranks(S, index, audio.shape[0])


def test_cosine_scores_are_scale_invariant():
    text, audio, S, index = cosine_case(4)
    scale = torch.linspace(0.5, 20.0, len(text))[:, None]
    got = paper_protocol(CosineScores(text * scale, audio * 3.0), torch.tensor(index))
    assert_metrics_close(got, oracle_paper(S, index))


# --------------------------------------------------------------------------------------------
# The rank functions
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("levels", [3, 0])  # 0: continuous scores
@pytest.mark.parametrize("max_elements", [1 << 24, 7, 1])
def test_rank_functions_match_oracle(levels, max_elements):
    index = make_index(21)
    nt, na = len(index), 40
    rng = np.random.default_rng(21)
    S = rng.integers(0, levels, size=(nt, na)) if levels else rng.standard_normal((nt, na))
    scores = DenseScores(torch.from_numpy(S))
    ai = torch.tensor(index)
    ranks, top = t2a_ranks(scores, ai, max_elements=max_elements, top=7)
    expected = oracle_t2a_ranks(S, index)
    assert ranks.dtype == torch.int64 and ranks.shape == (nt,)
    assert ranks.tolist() == expected
    assert all(r == 0 for r, a in zip(ranks.tolist(), index, strict=True) if a < 0)
    assert all(r >= 1 for r, a in zip(ranks.tolist(), index, strict=True) if a >= 0)
    # top: the oracle's first 7 clips, in rank order, for every caption (orphans included).
    assert top.shape == (nt, 7)
    assert top.tolist() == [oracle_order(row)[:7] for row in as_rows(S)]
    a2t = a2t_ranks(scores, ai, max_elements=max_elements)
    assert a2t.tolist() == oracle_a2t_ranks(S, index, na)


def test_t2a_ranks_without_top_and_with_top_beyond_gallery():
    S = np.random.default_rng(2).integers(0, 2, size=(9, 4))
    index = [0, 1, 2, 3, -1, 0, 3, -1, 2]
    ranks, top = t2a_ranks(DenseScores(S), torch.tensor(index))
    assert top is None
    assert ranks.tolist() == oracle_t2a_ranks(S, index)
    _, top = t2a_ranks(DenseScores(S), torch.tensor(index), top=10)
    assert top.tolist() == [oracle_order(row) for row in as_rows(S)]  # the whole gallery


def test_rank_of_tied_target_counts_only_earlier_ties():
    # Row [1, 2, 2, 2, 0]: target clip 3 has score 2; one higher (none), two equal before it.
    S = np.array([[1.0, 2.0, 2.0, 2.0, 0.0], [1.0, 2.0, 2.0, 2.0, 0.0], [1.0, 2.0, 2.0, 2.0, 0.0]])
    ranks, _ = t2a_ranks(DenseScores(S), torch.tensor([3, 1, 0]))
    assert ranks.tolist() == [3, 1, 4]


# --------------------------------------------------------------------------------------------
# Broken scores
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["labelled", "orphan", "captionless_clip"])
@pytest.mark.parametrize("max_elements", [1 << 24, 7])
def test_nan_raises_user_error(where, max_elements):
    index = make_index(1)
    S = np.random.default_rng(1).standard_normal((len(index), 40))
    if where == "labelled":
        j = next(j for j, a in enumerate(index) if a == 4)
        S[j, 17] = np.nan
    elif where == "orphan":
        j = index.index(-1)
        S[j, 3] = np.nan
    else:
        S[5, 0] = np.nan  # clip 0 has no caption
    with pytest.raises(UserError):
        paper_protocol(DenseScores(S), torch.tensor(index), max_elements=max_elements)
    with pytest.raises(UserError):
        t2a_ranks(DenseScores(S), torch.tensor(index), max_elements=max_elements)


@pytest.mark.parametrize("max_elements", [1 << 24, 1])
def test_nan_in_captioned_clip_raises_in_a2t_ranks(max_elements):
    index = make_index(2)
    S = np.random.default_rng(2).standard_normal((len(index), 40))
    S[index.index(-1), 4] = np.nan  # clip 4 has 7 captions; the NaN is an orphan's score
    with pytest.raises(UserError):
        a2t_ranks(DenseScores(S), torch.tensor(index), max_elements=max_elements)


def test_nan_in_cosine_embeddings_raises_user_error():
    text, audio, _, index = cosine_case(0)
    text = text.clone()
    text[2, 5] = float("nan")
    with pytest.raises(UserError):
        paper_protocol(CosineScores(text, audio), torch.tensor(index))


def test_no_labelled_caption_is_refused():
    with pytest.raises(ValueError):
        paper_protocol(DenseScores(np.zeros((3, 2))), torch.tensor([-1, -1, -1]))


def test_huge_finite_scores_are_not_mistaken_for_nan():
    """Row sums of huge scores overflow to Inf; only real NaN/Inf entries may be refused."""
    S = np.full((4, 3), 3e38, dtype=np.float32)
    S[np.arange(4), [0, 1, 2, 0]] = 3.3e38
    got = paper_protocol(DenseScores(torch.from_numpy(S)), torch.tensor([0, 1, 2, 0]))
    assert got["t2a_R@1"] == 100.0


@pytest.mark.parametrize(
    "payload, where",
    [
        ({"metrics": {"t2a_R@1": float("nan")}}, "metrics.t2a_R@1"),
        (
            {"cosine": {"metrics": {"t2a_R@1": 1.0}}, "head": {"metrics": {"a2t_R@5": math.inf}}},
            "head.metrics.a2t_R@5",
        ),
        ({"runs": [{"x": 1.0}, {"x": float("nan")}]}, "runs.1.x"),
    ],
)
def test_write_json_refuses_nan_anywhere_and_writes_nothing(tmp_path, payload, where):
    out = tmp_path / "r.json"
    with pytest.raises(ValueError, match=rf"^{re.escape(where)} is"):
        write_json(out, payload)
    assert not out.exists()
    write_json(out, {"cosine": {"metrics": {"t2a_R@1": 1.0}, "n": [1, 2]}})
    assert json.loads(out.read_text())["cosine"]["n"] == [1, 2]
