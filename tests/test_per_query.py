"""Per-query outcomes (evaluate/per_query.py) against the naive oracle: ground-truth ranks and
each query's top few by `sorted(key=(-score, index))`, with ties, in any chunk size."""

import numpy as np
import pytest
import torch
from retrieval_oracle import oracle_a2t_ranks, oracle_column, oracle_order, oracle_t2a_ranks

from diffatr.cache import SyntheticConfig, make_synthetic
from diffatr.evaluate import DenseScores, EvalConfig, evaluate_cache, paper_protocol
from diffatr.evaluate.per_query import RecordingScores, rank_changes, stable_topk

pytestmark = pytest.mark.usefixtures("one_thread")


def tied_matrix(nt: int, na: int, seed: int) -> torch.Tensor:
    """Scores on a coarse grid, so many entries of a row tie (also with the ground truth)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 4, (nt, na), generator=g).float() / 4


def oracle_outcomes(S: torch.Tensor, audio_index: list[int], top: int):
    rows = S.tolist()
    na = S.shape[1]
    t2a_rank = oracle_t2a_ranks(rows, audio_index)
    a2t_caption = oracle_a2t_ranks(rows, audio_index, na)
    a2t_rank = [
        min((a2t_caption[j] for j, a in enumerate(audio_index) if a == i), default=0)
        for i in range(na)
    ]
    t2a_top = [oracle_order(r)[:top] for r in rows]
    a2t_top = [oracle_order(oracle_column(rows, i))[:top] for i in range(na)]
    return t2a_rank, t2a_top, a2t_rank, a2t_top


@pytest.mark.parametrize("max_elements", [1, 7, 40, 10_000])
def test_recorded_outcomes_match_the_oracle_in_any_chunk_size(max_elements) -> None:
    nt, na, top = 23, 9, 4
    S = tied_matrix(nt, na, seed=1)
    audio_index = [(j * 5) % 7 if j % 6 else -1 for j in range(nt)]  # clips 7, 8: no caption
    index = torch.tensor(audio_index)
    rec = RecordingScores(DenseScores(S), index, top)
    metrics = paper_protocol(rec, index, max_elements)
    assert metrics == paper_protocol(DenseScores(S), index, max_elements)  # blocks pass unchanged
    out = rec.outcomes()
    t2a_rank, t2a_top, a2t_rank, a2t_top = oracle_outcomes(S, audio_index, top)
    assert out.directions == ("t2a", "a2t")
    assert out.t2a_rank.tolist() == t2a_rank
    assert out.a2t_rank.tolist() == a2t_rank
    labelled_top = [t for t, a in zip(t2a_top, audio_index, strict=True) if a >= 0]
    labelled = np.asarray(audio_index) >= 0
    assert out.t2a_top[labelled].tolist() == labelled_top
    assert out.a2t_top[:7].tolist() == a2t_top[:7]  # clips without captions are not queried
    for j in np.flatnonzero(labelled):
        assert out.t2a_score[j].tolist() == [S[j, c].item() for c in t2a_top[j]]


def test_stable_topk_breaks_ties_by_column_and_handles_all_equal_rows() -> None:
    block = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.125, 0.75, 0.75, 0.25], [1.0, 0.0, 1.0, 1.0]])
    vals, cols = stable_topk(block, 3)
    assert cols.tolist() == [[0, 1, 2], [1, 2, 3], [0, 2, 3]]
    assert vals.tolist() == [[0.5] * 3, [0.75, 0.75, 0.25], [1.0] * 3]
    g = torch.Generator().manual_seed(0)
    block = torch.randint(0, 3, (50, 30), generator=g).float()
    vals, cols = stable_topk(block, 6)
    for row, c in zip(block.tolist(), cols.tolist(), strict=True):
        assert c == oracle_order(row)[:6]


def test_rank_changes_counts_improved_and_worsened_queries() -> None:
    S = tied_matrix(20, 6, seed=2)
    index = torch.tensor([j % 6 for j in range(20)])
    base = RecordingScores(DenseScores(S), index, 3)
    other = RecordingScores(DenseScores(S.flip(1)), index, 3)
    paper_protocol(base, index)
    paper_protocol(other, index)
    b, o = base.outcomes(), other.outcomes()
    for d in ("t2a", "a2t"):
        r0, r1 = getattr(b, f"{d}_rank"), getattr(o, f"{d}_rank")
        pairs = [(x, y) for x, y in zip(r0.tolist(), r1.tolist(), strict=True) if x > 0]
        change = rank_changes(b, o, d)
        assert change.queries == len(pairs)
        assert change.improved == sum(y < x for x, y in pairs)
        assert change.worsened == sum(y > x for x, y in pairs)
        assert change.improved + change.worsened + change.unchanged == change.queries


def test_evaluate_cache_records_per_query_outcomes_when_asked(tmp_path) -> None:
    path = tmp_path / "c.h5"
    make_synthetic(path, SyntheticConfig(n_clips=12, captions_per_clip=(1, 3), dim=8, seed=0))
    plain = evaluate_cache(path, EvalConfig(device="cpu"))
    assert plain.queries is None
    rec = evaluate_cache(path, EvalConfig(device="cpu", per_query_top=5, max_elements=20))
    assert rec.metrics == plain.metrics
    q = rec.queries
    assert q.directions == ("t2a", "a2t") and q.t2a_top.shape[1] == 5
    r = q.t2a_rank[q.t2a_rank > 0]
    assert 100.0 * np.mean(r <= 1) == pytest.approx(plain.metrics["t2a_R@1"])
    best = q.a2t_rank[q.a2t_rank > 0]
    assert np.mean(best) == pytest.approx(plain.metrics["a2t_meanR"])
    dcase = evaluate_cache(path, EvalConfig(protocol="dcase", device="cpu", per_query_top=3))
    assert dcase.queries.directions == ("t2a",)
