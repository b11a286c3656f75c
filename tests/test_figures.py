"""Figure 3's query choice and panel labels (diffatr/experiments/figures.py), against the
re-ranker itself: the head "moves a clip to rank 1" exactly when DiffusionScores in gen mode
(the fused fast path, not the trajectory's reference denoiser) ranks it first."""

import pytest
from rerank_oracle import random_head

from diffatr.cache import SyntheticConfig, load_tensors, make_synthetic
from diffatr.diffusion_head import DiffusionScores, RerankConfig
from diffatr.errors import UserError
from diffatr.evaluate import CosineScores, t2a_ranks
from diffatr.experiments import figures

pytestmark = pytest.mark.usefixtures("one_thread")

D, K, TOPK, SEED = 16, 5, 4, 3


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    path = tmp_path_factory.mktemp("figures") / "split.h5"
    make_synthetic(path, SyntheticConfig(n_clips=16, captions_per_clip=(1, 2), dim=D, seed=5))
    split = load_tensors(path)
    head = random_head(D, K, std=0.5, seed=2)
    cos, _ = t2a_ranks(CosineScores(split.text, split.audio), split.audio_index)
    gen = DiffusionScores(
        split.text,
        split.audio,
        head,
        RerankConfig(topk=TOPK, mode="gen", seed=SEED, compiled=False),
    )
    head_ranks, _ = t2a_ranks(gen, split.audio_index)
    return split, head, cos.tolist(), head_ranks.tolist()


def choose(case, how):
    split, head, *_ = case
    return figures.choose_query(head, split.text, split.audio, split.audio_index, TOPK, SEED, how)


def test_first_improved_is_the_first_caption_the_head_moves_to_rank_1(case) -> None:
    *_, cos, moved = case
    want = next(i for i in range(len(cos)) if 1 < cos[i] <= TOPK and moved[i] == 1)
    row, true, steps, x0_hats, words = choose(case, "first-improved")
    assert row == want and true == cos[row] - 1
    assert x0_hats[-1][true] == x0_hats[-1].max() and steps == list(range(K - 1, -1, -1))
    assert "the first caption (of the first 200) whose clip the head moves up to rank 1" in words


def test_first_and_a_given_row(case) -> None:
    *_, cos, _ = case
    row, true, *_, words = choose(case, "first")
    assert row == next(i for i in range(len(cos)) if cos[i] <= TOPK) and true == cos[row] - 1
    assert "first caption whose clip is in its cosine top-k" in words
    far = next(i for i in range(len(cos)) if cos[i] > TOPK)
    row, true, *_, words = choose(case, far)
    assert (row, true) == (far, None) and f"caption {far}, as asked" in words
    with pytest.raises(UserError, match="--figure-query 99: the test split has captions"):
        choose(case, 99)


def test_panels_are_labelled_in_the_order_they_run_and_the_title_says_the_choice(
    case, tmp_path, monkeypatch
) -> None:
    assert figures.step_labels([4, 3, 2, 1, 0], [0, 2, 4]) == [
        "step 1 of 5 (k = 4)",
        "step 3 of 5 (k = 2)",
        "step 5 of 5 (k = 0, final)",
    ]
    drawn = {}
    monkeypatch.setattr(
        figures, "plot_diffusion_process", lambda *a: drawn.update(labels=a[1], title=a[4])
    )
    split, head, *_ = case
    figures.diffusion_figure(
        head, split.text, split.audio, split.audio_index, TOPK, SEED, tmp_path / "f.png", "first"
    )
    assert drawn["labels"][0] == "step 1 of 5 (k = 4)"
    assert drawn["labels"][-1] == "step 5 of 5 (k = 0, final)"
    assert "first caption whose clip is in its cosine top-k" in drawn["title"]


def test_parse_figure_query() -> None:
    assert figures.parse_figure_query("first") == "first"
    assert figures.parse_figure_query("first-improved") == "first-improved"
    assert figures.parse_figure_query("12") == 12
    for bad in ("last", "-1", ""):
        with pytest.raises(UserError, match="--figure-query"):
            figures.parse_figure_query(bad)


def test_the_title_states_the_outcome_measured(case, tmp_path, monkeypatch) -> None:
    """No "success" in the title: the true clip's final probability, rank and margin."""
    drawn = {}
    monkeypatch.setattr(
        figures, "plot_diffusion_process", lambda *a: drawn.update(probs=a[0], title=a[4])
    )
    split, head, *_ = case
    figures.diffusion_figure(
        head, split.text, split.audio, split.audio_index, TOPK, SEED, tmp_path / "f.png"
    )
    _, true, *_ = choose(case, "first-improved")
    final = drawn["probs"][-1]
    assert "success" not in drawn["title"]
    assert f"true clip p = {final[true]:.3g}, rank 1 of {TOPK}" in drawn["title"]
    margin = final[true] - max(v for i, v in enumerate(final) if i != true)
    assert f"margin {margin:+.3g}" in drawn["title"]


def test_outcome_of_a_nearly_uniform_end() -> None:
    import torch

    p = torch.tensor([0.2502, 0.2499, 0.2500, 0.2499])
    said = figures.outcome(p, 0)
    assert said.startswith("final: true clip p = 0.25, rank 1 of 4, margin +0.0002")
    assert "uniform would be 0.25 (true clip at 1.00x uniform)" in said
    assert "rank 3 of 4" in figures.outcome(torch.tensor([0.5, 0.3, 0.1, 0.1]), 2)
    assert "not among the 4 candidates" in figures.outcome(p, None)
