"""The one-pass ranks of both directions (evaluate/joint_ranks.py) and the candidate-based a2t
ranks (ranks.py) against the naive oracle: ties, every chunk size, the fallbacks, cosine."""

import numpy as np
import pytest
import torch
from retrieval_oracle import oracle_a2t_ranks, oracle_t2a_ranks
from test_metrics import make_index

from diffatr.evaluate import CosineScores, DenseScores, a2t_ranks, t2a_ranks
from diffatr.evaluate import joint_ranks as jr
from diffatr.evaluate import ranks as rk

pytestmark = pytest.mark.usefixtures("one_thread")


def tied(nt: int, na: int, levels: int, seed: int) -> torch.Tensor:
    """Scores on `levels` values (0: continuous), so rows and columns are full of ties."""
    rng = np.random.default_rng(seed)
    if levels == 0:
        return torch.from_numpy(rng.standard_normal((nt, na)).astype(np.float32))
    return torch.from_numpy((rng.integers(0, levels, (nt, na)) / levels).astype(np.float32))


@pytest.mark.parametrize("levels", [2, 5, 0])
@pytest.mark.parametrize("max_elements", [1, 13, 200, 1 << 20])
def test_joint_ranks_match_the_oracle_in_any_chunk_size(levels, max_elements) -> None:
    index = make_index(levels + 3)
    S = tied(len(index), 40, levels, seed=levels)
    t2a, a2t = jr.joint_ranks(DenseScores(S), torch.tensor(index), max_elements)
    assert t2a.tolist() == oracle_t2a_ranks(S, index)
    assert a2t.tolist() == oracle_a2t_ranks(S, index, 40)


@pytest.mark.parametrize("levels", [2, 0])
def test_a2t_falls_back_when_candidates_exceed_the_budget(levels, monkeypatch) -> None:
    index = make_index(7)
    S = tied(len(index), 40, levels, seed=1)
    called = []
    real = jr.a2t_ranks
    monkeypatch.setattr(jr, "BAND_BUDGET", 0.01)
    monkeypatch.setattr(jr, "a2t_ranks", lambda *a: called.append(1) or real(*a))
    t2a, a2t = jr.joint_ranks(DenseScores(S), torch.tensor(index), 100)
    assert called and a2t.tolist() == oracle_a2t_ranks(S, index, 40)
    assert t2a.tolist() == oracle_t2a_ranks(S, index)


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
