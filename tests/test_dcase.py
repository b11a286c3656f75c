"""The DCASE Task 6b protocol: jackknife interval, t2a metrics and the submission CSV.

The jackknife is checked against an explicit leave-one-out loop, the metrics against the paper
protocol's t2a keys and the naive oracle of `retrieval_oracle.py`, and the submission
against that oracle's top-10 clips, through caches written with `CacheWriter`.
"""

import csv
import math

import numpy as np
import pytest
import torch
from retrieval_oracle import as_rows, oracle_order, oracle_summary, oracle_t2a_ranks

from diffatr.cache import CacheWriter
from diffatr.errors import UserError
from diffatr.evaluate import (
    CosineScores,
    DenseScores,
    EvalConfig,
    dcase_protocol,
    evaluate_cache,
    jackknife_interval,
    paper_protocol,
    write_submission,
)

Z95 = 1.959963984540054  # NormalDist().inv_cdf(0.975)
Z90 = 1.6448536269514722  # NormalDist().inv_cdf(0.95)
T2A_KEYS = {f"t2a_{m}" for m in ("R@1", "R@5", "R@10", "mAP@10", "medR", "meanR")}
CI_KEYS = {"t2a_mAP@10_ci_low", "t2a_mAP@10_ci_high"}
HEADER = ["caption"] + [f"file_name_{i}" for i in range(1, 11)]


# --------------------------------------------------------------------------------------------
# Naive references
# --------------------------------------------------------------------------------------------
def loo_interval(values: list[float], z: float = Z95) -> tuple[float, float]:
    """Jackknife by actually deleting each element in turn."""
    n = len(values)
    mean = sum(values) / n
    thetas = []
    for i in range(n):
        rest = values[:i] + values[i + 1 :]
        thetas.append(sum(rest) / len(rest))
    theta_bar = sum(thetas) / n
    var = (n - 1) / n * sum((t - theta_bar) ** 2 for t in thetas)
    half = z * math.sqrt(var)
    return mean - half, mean + half


def oracle_t2a(S, audio_index: list[int]) -> tuple[dict[str, float], list[float], list[list[int]]]:
    """t2a metrics (percent), per-query AP@10 (percent) of labelled captions, full orders."""
    rows = as_rows(S)
    ranks = [r for r in oracle_t2a_ranks(rows, audio_index) if r > 0]
    ap = [1.0 / r if r <= 10 else 0.0 for r in ranks]
    return (
        oracle_summary("t2a_", ranks, ap),
        [100.0 * x for x in ap],
        [oracle_order(r) for r in rows],
    )


def assert_close(got: dict, expected: dict, tol: float = 1e-9) -> None:
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=0, abs=tol), key


def make_index(seed: int, n_audio: int, n_orphans: int = 3) -> list[int]:
    """Shuffled caption -> clip index: 0-4 captions per clip (clip 0 none), some -1 captions."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 5, size=n_audio).tolist()
    counts[0], counts[1] = 0, 1
    index = [a for a, c in enumerate(counts) for _ in range(c)] + [-1] * n_orphans
    return [index[i] for i in rng.permutation(len(index))]


def separated_cosine(text: np.ndarray, audio: np.ndarray, index: list[int], tol: float = 1e-5):
    """float64 cosine matrix, or None when a rank or a top-11 order is within tol of a tie."""
    t = text.astype(np.float64)
    a = audio.astype(np.float64)
    t = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    S = t @ a.T
    for j, clip in enumerate(index):
        if not np.any(S[j]):
            continue  # an all-zero caption: exact ties in float32 and float64 alike
        head = np.sort(S[j])[::-1][:11]
        if np.any(-np.diff(head) <= tol):
            return None
        if clip >= 0:
            gaps = np.abs(S[j] - S[j, clip])
            gaps[clip] = np.inf
            if gaps.min() <= tol:
                return None
    return S


def cosine_case(seed: int, n_audio: int, dim: int = 16, zero_caption: bool = False):
    index = make_index(seed, n_audio)
    for attempt in range(50):
        rng = np.random.default_rng(100 * seed + attempt)
        text = rng.standard_normal((len(index), dim)).astype(np.float32)
        audio = rng.standard_normal((n_audio, dim)).astype(np.float32)
        if zero_caption:
            text[index.index(-1)] = 0.0
        S = separated_cosine(text, audio, index)
        if S is not None:
            return text, audio, S, index
    raise AssertionError("no well-separated cosine case found")


CAPTION_WORDS = [
    'a dog barks, then a "door" slams',
    "rain on a tin roof",
    "birds, wind, and traffic",
    'he says "hello, world"',
    "café ambience — espresso machine",
    "',\"",
]


def write_cache(path, text, audio, index, dtype="float32") -> tuple[list[str], list[str]]:
    ids = [f"clip_{a:03d}.wav" for a in range(len(audio))]
    captions = [f"{CAPTION_WORDS[j % len(CAPTION_WORDS)]} #{j}" for j in range(len(index))]
    with CacheWriter(path, dataset="t", split="test", space="joint", dtype=dtype) as w:
        w.add_audio(ids, audio)
        w.add_text(captions, np.array(index, dtype=np.int64), text)
    return ids, captions


def read_csv(path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


# --------------------------------------------------------------------------------------------
# Jackknife
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [2, 3, 10, 57])
@pytest.mark.parametrize("seed", [0, 1])
def test_jackknife_matches_leave_one_out(n, seed):
    rng = np.random.default_rng(seed)
    values = rng.random(n).tolist()
    low, high = jackknife_interval(np.array(values))
    exp_low, exp_high = loo_interval(values)
    assert low == pytest.approx(exp_low, rel=1e-12, abs=1e-12)
    assert high == pytest.approx(exp_high, rel=1e-12, abs=1e-12)
    assert low < sum(values) / n < high


def test_jackknife_on_ap_like_values_and_lists():
    values = [1.0, 0.5, 0.0, 1 / 3, 0.1, 0.0, 1.0, 0.25]
    exp = loo_interval(values)
    assert jackknife_interval(values) == pytest.approx(exp, rel=1e-12)
    assert jackknife_interval(np.array(values) * 100) == pytest.approx(
        loo_interval([100 * v for v in values]), rel=1e-12
    )


def test_jackknife_other_confidence():
    values = np.random.default_rng(4).random(20).tolist()
    got = jackknife_interval(np.array(values), confidence=0.90)
    assert got == pytest.approx(loo_interval(values, z=Z90), rel=1e-12)


def test_jackknife_single_value_and_constant_values():
    assert jackknife_interval(np.array([0.7])) == (0.7, 0.7)
    low, high = jackknife_interval(np.full(9, 0.25))
    assert low == pytest.approx(0.25, abs=1e-12) and high == pytest.approx(0.25, abs=1e-12)


# --------------------------------------------------------------------------------------------
# dcase_protocol
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("levels", [3, 0])  # 0: continuous scores
@pytest.mark.parametrize("max_elements", [1 << 24, 7])
def test_dcase_metrics_equal_paper_t2a(levels, max_elements):
    index = make_index(5, n_audio=30)
    rng = np.random.default_rng(5)
    shape = (len(index), 30)
    S = rng.integers(0, levels, size=shape).astype(np.float64) if levels else rng.random(shape)
    ai = torch.tensor(index)
    metrics, best = dcase_protocol(DenseScores(S), ai, max_elements=max_elements, top=10)
    paper = paper_protocol(DenseScores(S), ai)
    assert set(metrics) == T2A_KEYS | CI_KEYS
    for key in T2A_KEYS:
        assert metrics[key] == pytest.approx(paper[key], rel=0, abs=1e-12), key
    expected, ap, orders = oracle_t2a(S, index)
    assert_close(metrics, expected)
    # The interval is the jackknife over the labelled captions' AP@10 (percent).
    low, high = loo_interval(ap)
    assert metrics["t2a_mAP@10_ci_low"] == pytest.approx(low, abs=1e-9)
    assert metrics["t2a_mAP@10_ci_high"] == pytest.approx(high, abs=1e-9)
    assert metrics["t2a_mAP@10_ci_low"] < metrics["t2a_mAP@10"] < metrics["t2a_mAP@10_ci_high"]
    # top: the oracle's first 10 clips for every caption, -1 captions included.
    assert best.tolist() == [order[:10] for order in orders]


def test_dcase_without_top_and_with_orphans_only_ranked():
    index = make_index(6, n_audio=20, n_orphans=5)
    S = np.random.default_rng(6).random((len(index), 20))
    metrics, best = dcase_protocol(DenseScores(S), torch.tensor(index))
    assert best is None
    expected, ap, _ = oracle_t2a(S, index)
    assert_close(metrics, expected)
    assert len(ap) == sum(a >= 0 for a in index)  # orphans are not scored
    low, high = loo_interval(ap)
    assert metrics["t2a_mAP@10_ci_low"] == pytest.approx(low, abs=1e-9)
    assert metrics["t2a_mAP@10_ci_high"] == pytest.approx(high, abs=1e-9)


def test_dcase_cosine_scores():
    text, audio, S, index = cosine_case(2, n_audio=25)
    metrics, best = dcase_protocol(
        CosineScores(torch.from_numpy(text), torch.from_numpy(audio)), torch.tensor(index), top=10
    )
    expected, _, orders = oracle_t2a(S, index)
    assert_close(metrics, expected)
    assert best.tolist() == [order[:10] for order in orders]


# --------------------------------------------------------------------------------------------
# The submission CSV
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_evaluate_cache_writes_submission(tmp_path, dtype):
    text, audio, _, index = cosine_case(3, n_audio=25, zero_caption=True)
    if dtype == "float16":  # the cache stores rounded embeddings: rank what it stores
        text, audio = text.astype(np.float16), audio.astype(np.float16)
        S = separated_cosine(text, audio, index)
        assert S is not None
    else:
        S = separated_cosine(text, audio, index)
    cache = tmp_path / "test.h5"
    ids, captions = write_cache(cache, text, audio, index, dtype=dtype)
    out = tmp_path / "submission.csv"
    result = evaluate_cache(cache, EvalConfig(protocol="dcase", device="cpu"), submission=out)
    expected, ap, orders = oracle_t2a(S, index)
    assert_close(result.metrics, expected)
    low, high = loo_interval(ap)
    assert result.metrics["t2a_mAP@10_ci_low"] == pytest.approx(low, abs=1e-9)
    assert result.metrics["t2a_mAP@10_ci_high"] == pytest.approx(high, abs=1e-9)
    rows = read_csv(out)
    assert rows[0] == HEADER
    assert len(rows) == 1 + len(captions)  # one row per caption, query-only captions included
    for j, row in enumerate(rows[1:]):
        assert row[0] == captions[j]  # commas and quotes survive the round trip
        assert row[1:] == [ids[a] for a in orders[j][:10]], captions[j]
    # The all-zero caption ties everywhere: gallery order.
    zero = index.index(-1)
    assert rows[1 + zero][1:] == ids[:10]
    assert not list(tmp_path.glob("*.partial"))


def test_submission_with_exactly_ten_clips(tmp_path):
    text, audio, S, index = cosine_case(4, n_audio=10)
    cache = tmp_path / "ten.h5"
    ids, captions = write_cache(cache, text, audio, index)
    out = tmp_path / "sub.csv"
    evaluate_cache(cache, EvalConfig(protocol="dcase", device="cpu"), submission=out)
    _, _, orders = oracle_t2a(S, index)
    rows = read_csv(out)
    assert rows[0] == HEADER
    assert [row[0] for row in rows[1:]] == captions
    assert [row[1:] for row in rows[1:]] == [[ids[a] for a in order] for order in orders]


def test_dcase_without_submission_writes_nothing(tmp_path):
    text, audio, S, index = cosine_case(5, n_audio=12)
    cache = tmp_path / "c.h5"
    write_cache(cache, text, audio, index)
    result = evaluate_cache(cache, EvalConfig(protocol="dcase", device="cpu"))
    assert set(result.metrics) == T2A_KEYS | CI_KEYS
    assert_close(result.metrics, oracle_t2a(S, index)[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.h5"]


def test_submission_needs_ten_clips(tmp_path):
    text, audio, _, index = cosine_case(6, n_audio=9)
    cache = tmp_path / "small.h5"
    write_cache(cache, text, audio, index)
    out = tmp_path / "sub.csv"
    with pytest.raises(UserError):
        evaluate_cache(cache, EvalConfig(protocol="dcase", device="cpu"), submission=out)
    assert not out.exists()
    # Without a submission, nine clips are fine.
    evaluate_cache(cache, EvalConfig(protocol="dcase", device="cpu"))


def test_submission_needs_dcase_protocol(tmp_path):
    text, audio, _, index = cosine_case(7, n_audio=15)
    cache = tmp_path / "c.h5"
    write_cache(cache, text, audio, index)
    out = tmp_path / "sub.csv"
    with pytest.raises(UserError):
        evaluate_cache(cache, EvalConfig(protocol="paper", device="cpu"), submission=out)
    assert not out.exists()


def test_write_submission_round_trip(tmp_path):
    captions = [
        'a man says "stop, now"',
        "commas, commas, commas",
        'only "quotes"',
        "two\nlines",
        "plain",
    ]
    top = [[f"f{j}_{i}.wav" for i in range(10)] for j in range(len(captions))]
    top[1][3] = "odd, name.wav"
    path = tmp_path / "s.csv"
    write_submission(path, captions, top)
    rows = read_csv(path)
    assert rows[0] == HEADER
    assert rows[1:] == [[c, *ids] for c, ids in zip(captions, top, strict=True)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.csv"]


def test_write_submission_refuses_mismatched_lengths(tmp_path):
    with pytest.raises(ValueError):
        write_submission(tmp_path / "s.csv", ["a", "b"], [["x.wav"] * 10])
    assert not (tmp_path / "s.csv").exists()
