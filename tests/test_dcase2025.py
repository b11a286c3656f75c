"""The DCASE 2025 protocol: mAP@16 with several relevant clips per query against a naive
oracle (walk the ranked list, count hits), the reduction to 1/rank AP with one relevant clip,
block-size independence, the jackknife interval, the relevance file and the predictions CSV."""

import csv

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from retrieval_oracle import as_rows, oracle_order, oracle_t2a_ranks

from diffatr.cache import CacheWriter
from diffatr.cli import main
from diffatr.errors import UserError
from diffatr.evaluate import DenseScores, dcase_protocol, jackknife_interval
from diffatr.evaluate.dcase2025 import (
    Relevance,
    dcase2025_protocol,
    own_clip_relevance,
    read_relevance,
)


def oracle_ap(scores: list[float], relevant: set[int], k: int = 16) -> float:
    """Walk the ranking top down; at each relevant clip within k add hits-so-far / rank."""
    hits, total = 0, 0.0
    for rank, clip in enumerate(oracle_order(scores), 1):
        if clip in relevant:
            hits += 1
            if rank <= k:
                total += hits / rank
    return total / len(relevant)


def oracle_best(scores: list[float], relevant: set[int]) -> int:
    return next(r for r, c in enumerate(oracle_order(scores), 1) if c in relevant)


def _relevance(sets: dict[int, set[int]]) -> Relevance:
    rows = sorted(sets)
    sizes = [len(sets[r]) for r in rows]
    return Relevance(
        np.array(rows, np.int64),
        np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        np.array([c for r in rows for c in sorted(sets[r])], np.int64),
    )


@pytest.mark.parametrize("max_elements", [1, 7, 40, 1 << 22])
def test_map16_matches_the_oracle_with_several_relevant_clips(max_elements):
    g = torch.Generator().manual_seed(0)
    nt, na = 23, 40
    S = torch.round(torch.randn(nt, na, generator=g) * 2) / 2  # coarse: many ties
    rng = np.random.default_rng(0)
    queries = sorted(rng.choice(nt, size=15, replace=False).tolist())
    sets = {
        q: set(rng.choice(na, size=int(rng.integers(1, 6)), replace=False).tolist())
        for q in queries
    }
    rows = as_rows(S)
    ap = [oracle_ap(rows[q], sets[q]) for q in queries]
    best = [oracle_best(rows[q], sets[q]) for q in queries]
    got = dcase2025_protocol(DenseScores(S), torch.full((nt,), -1), _relevance(sets), max_elements)
    assert got["t2a_mAP@16"] == pytest.approx(100 * np.mean(ap), abs=1e-9)
    for k in (1, 5, 10):
        assert got[f"t2a_R@{k}"] == pytest.approx(100 * np.mean([b <= k for b in best]))
    low, high = jackknife_interval(100 * np.array(ap))
    assert (got["t2a_mAP@16_ci_low"], got["t2a_mAP@16_ci_high"]) == pytest.approx((low, high))
    assert any(0 < a < 1 for a in ap) and any(a == 0 for a in ap)  # a case with teeth


def test_one_relevant_clip_reduces_to_one_over_rank():
    g = torch.Generator().manual_seed(1)
    S = torch.randn(30, 25, generator=g)
    index = torch.randint(0, 25, (30,), generator=g)
    index[[3, 7]] = -1
    ranks = [r for r in oracle_t2a_ranks(S, index.tolist()) if r > 0]
    got = dcase2025_protocol(DenseScores(S), index)  # no relevance file: own clips
    want = np.mean([1 / r if r <= 16 else 0 for r in ranks]) * 100
    assert got["t2a_mAP@16"] == pytest.approx(want)
    dcase, _ = dcase_protocol(DenseScores(S), index)
    for k in (1, 5, 10):
        assert got[f"t2a_R@{k}"] == pytest.approx(dcase[f"t2a_R@{k}"])
    rel = own_clip_relevance(index)
    assert rel.n_queries == 28 and rel.clips.tolist() == index[index >= 0].tolist()


def naive_ap16_by_m(scores: list[float], relevant: set[int]) -> float:
    """AP@16 as the baseline's scorer computes it (CPJKU/dcase2025_task6_baseline,
    `average_precision_at_k`): 0-based ranks of the relevant clips, sorted; add i / (rank + 1)
    while rank < 16; divide by the number of relevant clips m, however many there are."""
    order = oracle_order(scores)
    ranks = sorted(order.index(c) for c in relevant)  # 0-based
    ap = 0.0
    for i, rank in enumerate(ranks, start=1):
        if rank >= 16:
            break
        ap += i / (rank + 1)
    return ap / len(ranks)


def test_map16_divides_by_m_when_more_than_16_clips_are_relevant():
    """m > 16: even a perfect ranking scores 16/m, as the baseline's scorer gives; normalising
    by min(m, 16) would give 1."""
    g = torch.Generator().manual_seed(7)
    S = torch.randn(3, 60, generator=g)
    perfect = {c: float(60 - i) for i, c in enumerate(range(0, 40, 2))}  # 20 clips on top
    S[0] = torch.tensor([perfect.get(c, -1.0 - c / 100) for c in range(60)])
    sets = {0: set(range(0, 40, 2)), 1: set(range(5, 30)), 2: {3, *range(40, 57)}}
    assert all(len(v) > 16 for v in sets.values())
    got = dcase2025_protocol(DenseScores(S), torch.full((3,), -1), _relevance(sets))
    rows = as_rows(S)
    want = [naive_ap16_by_m(rows[q], sets[q]) for q in sorted(sets)]
    assert want[0] == pytest.approx(16 / 20)
    assert got["t2a_mAP@16"] == pytest.approx(100 * np.mean(want), abs=1e-9)
    assert [oracle_ap(rows[q], sets[q]) for q in sorted(sets)] == pytest.approx(want)


def test_map16_counts_only_ranks_up_to_16():
    S = torch.arange(20, 0, -1, dtype=torch.float32)[None]  # clip c has rank c + 1
    rel = _relevance({0: {1, 16, 17}})  # ranks 2, 17, 18: only the first counts
    got = dcase2025_protocol(DenseScores(S), torch.tensor([-1]), rel)
    assert got["t2a_mAP@16"] == pytest.approx(100 * (1 / 2) / 3)
    rel = _relevance({0: {0, 1, 15}})  # ranks 1, 2, 16: (1/1 + 2/2 + 3/16) / 3
    got = dcase2025_protocol(DenseScores(S), torch.tensor([-1]), rel)
    assert got["t2a_mAP@16"] == pytest.approx(100 * (1 + 1 + 3 / 16) / 3)


CAPTIONS = ["a dog barks", "rain, on a roof", "wind", "query only"]
IDS = ["a.wav", "b.wav", "c d.wav"]


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_read_relevance(tmp_path):
    f = _write(
        tmp_path / "rel.csv",
        "query,audio_filenames,extra\n"
        "\"rain, on a roof\",\"['b.wav', 'c d.wav']\",x\n"
        "query only,a.wav,y\n",
    )
    rel = read_relevance(f, CAPTIONS, IDS)
    assert rel.rows.tolist() == [1, 3]
    assert rel.offsets.tolist() == [0, 2, 3]
    assert rel.clips.tolist() == [1, 2, 0]


def test_a_query_listed_twice_counts_twice_as_in_the_baseline(tmp_path):
    """The baseline scores every row of its relevance file and averages over rows."""
    f = _write(tmp_path / "rel.csv", "query,audio_filenames\nwind,['a.wav']\nwind,['c d.wav']\n")
    rel = read_relevance(f, CAPTIONS, IDS)
    assert rel.rows.tolist() == [2, 2] and rel.clips.tolist() == [0, 2]
    S = torch.tensor([[0.0, 0, 0], [0, 0, 0], [0.9, 0.1, 0.5], [0, 0, 0]])
    got = dcase2025_protocol(DenseScores(S), torch.full((4,), -1), rel)
    assert got["t2a_mAP@16"] == pytest.approx(100 * (1 / 1 + 1 / 2) / 2)


@pytest.mark.parametrize(
    "body, message",
    [
        ("q,files\nwind,a.wav\n", "needs the columns query,audio_filenames"),
        ("query,audio_filenames\nsnow,a.wav\n", ":2: query 'snow' is not a caption"),
        ("query,audio_filenames\nwind,\"['x.wav']\"\n", ":2: clip 'x.wav' is not a clip"),
        ("query,audio_filenames\nwind,\"['a.wav'\"\n", "is not a list literal"),
        ("query,audio_filenames\nwind,[]\n", "has no relevant clip"),
        ("query,audio_filenames\n", "lists no query"),
    ],
)
def test_relevance_refusals(tmp_path, body, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[")):
        read_relevance(_write(tmp_path / "rel.csv", body), CAPTIONS, IDS)


def test_evaluate_cli_with_relevance_and_predictions(tmp_path):
    rng = np.random.default_rng(3)
    audio = rng.standard_normal((3, 4)).astype(np.float32)
    text = rng.standard_normal((4, 4)).astype(np.float32)
    cache = tmp_path / "c.h5"
    with CacheWriter(cache, dataset="clotho", split="eval", space="joint") as w:
        w.add_audio(IDS, audio)
        w.add_text(CAPTIONS, [0, 1, 2, -1], text)
    rel = _write(
        tmp_path / "rel.csv",
        "query,audio_filenames\n\"rain, on a roof\",\"['b.wav', 'c d.wav']\"\nquery only,a.wav\n",
    )
    pred = tmp_path / "pred.csv"
    args = ["evaluate", str(cache), "--protocol", "dcase2025", "--relevance", str(rel)]
    result = CliRunner().invoke(
        main, [*args, "--submission", str(pred), "--json", str(tmp_path / "m.json")]
    )
    assert result.exit_code == 0, result.output
    assert "DCASE 2025 Task 6 protocol" in result.output and "mAP@16" in result.output
    assert "2 captions scored over 3 clips" in result.output
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    cos = unit(text) @ unit(audio).T
    want = np.mean([oracle_ap(cos[1].tolist(), {1, 2}), oracle_ap(cos[3].tolist(), {0})])
    import json

    metrics = json.loads((tmp_path / "m.json").read_text())["metrics"]
    assert metrics["t2a_mAP@16"] == pytest.approx(100 * want, abs=1e-4)
    with open(pred, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["index", *IDS]
    assert [r[0] for r in rows[1:]] == CAPTIONS
    np.testing.assert_allclose(np.array([r[1:] for r in rows[1:]], float), cos, atol=1e-5)
    assert any(len(v.split(".")[-1]) > 6 for r in rows[1:] for v in r[1:])  # not 6 digits
    bad = CliRunner().invoke(main, ["evaluate", str(cache), "--relevance", str(rel)])
    assert bad.exit_code == 2 and "--relevance only applies with --protocol dcase2025" in bad.output


def test_ablation_measure_and_table_know_dcase2025():
    from diffatr.experiments.measure import measure
    from diffatr.experiments.tables import format_ablation, summarise

    g = torch.Generator().manual_seed(4)
    S, index = torch.randn(12, 6, generator=g), torch.randint(0, 6, (12,), generator=g)
    record = measure(DenseScores(S), index, "dcase2025")
    assert "curves" not in record
    assert record["metrics"] == dcase2025_protocol(DenseScores(S), index)
    rows = [{"train": "d", "test": "d", "row": "K=10", "system": "cosine", "seed": 0, **record}]
    text = format_ablation("steps", summarise(rows), "dcase2025")
    assert "DCASE 2025 Task 6 protocol (mAP@16)" in text


def test_predictions_at_full_precision_and_one_row_per_caption_text(tmp_path):
    """Scores read back as the very float32s (so near-ties keep their order), and a repeated
    caption text is one row, at its first caption, as the baseline's predict.py writes."""
    from diffatr.evaluate.dcase2025 import write_predictions

    S = torch.tensor(
        [[0.1234567, 0.1234568, 1e-30], [0.5, 0.25, -0.75], [9.0, 9.0, 9.0]], dtype=torch.float32
    )
    captions = ["a dog", "rain", "a dog"]
    pred = tmp_path / "p.csv"
    write_predictions(pred, DenseScores(S), captions, ["x.wav", "y.wav", "z.wav"])
    with open(pred, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert [r[0] for r in rows[1:]] == ["a dog", "rain"]
    back = np.array([[float(v) for v in r[1:]] for r in rows[1:]], dtype=np.float32)
    np.testing.assert_array_equal(back, S[:2].numpy())
    assert back[0, 0] < back[0, 1]  # 6 significant digits wrote both as 0.123457


def test_report_ranks_against_the_relevance_sets(tmp_path):
    """--report with --relevance: each listed caption's recorded rank is its best-ranked
    relevant clip (what R@k uses), not its own clip's; unlisted captions are not queries."""
    from diffatr.evaluate.cached import EvalConfig, evaluate_cache

    rng = np.random.default_rng(5)
    ids = [f"{i}.wav" for i in range(20)]
    captions = [f"caption {j}" for j in range(12)]
    audio = rng.standard_normal((20, 8)).astype(np.float32)
    text = rng.standard_normal((12, 8)).astype(np.float32)
    index = [j % 20 for j in range(12)]
    index[11] = -1
    cache = tmp_path / "c.h5"
    with CacheWriter(cache, dataset="d", split="eval", space="joint") as w:
        w.add_audio(ids, audio)
        w.add_text(captions, index, text)
    sets = {1: {4, 9, 17}, 5: {0}, 11: {2, 3}, 7: {7, 12, 13, 14}}
    lines = "".join(f'{captions[q]},"{[ids[c] for c in sorted(v)]}"\n' for q, v in sets.items())
    rel = _write(tmp_path / "rel.csv", "query,audio_filenames\n" + lines)
    cfg = EvalConfig(protocol="dcase2025", relevance=str(rel), per_query_top=3, max_elements=50)
    result = evaluate_cache(cache, cfg)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    rows = as_rows(torch.from_numpy(unit(text) @ unit(audio).T))
    want = np.zeros(12, np.int64)
    for q, v in sets.items():
        want[q] = oracle_best(rows[q], v)
    np.testing.assert_array_equal(result.queries.t2a_rank, want)
    assert result.metrics["t2a_R@1"] == pytest.approx(100 * np.mean(want[want > 0] <= 1))
    assert result.metrics["t2a_R@5"] == pytest.approx(100 * np.mean(want[want > 0] <= 5))
