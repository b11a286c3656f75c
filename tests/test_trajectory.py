"""The diffusion process of one query (diffatr/diffusion_head/trajectory.py): the last x0_hat
must be the one `DiffusionScores` re-ranks that query with (its fused fast path, same noise
from `row_noise`), and exactly `ddim_sample`'s over the reference `Denoiser`."""

import pytest
import torch
from rerank_oracle import dense_cosine, random_head

from diffatr.cache import SyntheticConfig, load_tensors, make_synthetic
from diffatr.diffusion_head import DiffusionScores, RerankConfig, ddim_sample, ddim_timesteps
from diffatr.diffusion_head.rerank import row_noise
from diffatr.diffusion_head.trajectory import cosine_topk, diffusion_trajectory

pytestmark = pytest.mark.usefixtures("one_thread")

D, K = 16, 12


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    path = tmp_path_factory.mktemp("trajectory") / "split.h5"
    make_synthetic(path, SyntheticConfig(n_clips=12, captions_per_clip=(1, 2), dim=D, seed=3))
    return load_tensors(path)


CASES = {
    "t2a": dict(direction="t2a", row=5, topk=6),
    "a2t-eta-strided": dict(direction="a2t", row=3, topk=5, eta=0.6, steps=4, seed=7),
    "t2a-all": dict(direction="t2a", row=0, topk=None, seed=2),
    "normalized-head": dict(direction="t2a", row=2, topk=4, normalize=True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_last_x0_hat_is_the_rerankers(split, case) -> None:
    cfg = dict(CASES[case])
    direction, row, topk = cfg.pop("direction"), cfg.pop("row"), cfg.pop("topk")
    head = random_head(D, K, std=0.3, seed=1, normalize=cfg.pop("normalize", False))
    queries, gallery = (
        (split.text, split.audio) if direction == "t2a" else (split.audio, split.text)
    )
    top = cosine_topk(queries[row], gallery, topk)
    steps, x0_hats, x_ks = diffusion_trajectory(
        head, queries[row], gallery[top], direction, row, **cfg
    )
    assert steps == ddim_timesteps(K, cfg.get("steps"))
    assert x0_hats.shape == x_ks.shape == (len(steps), len(top))
    assert x0_hats.abs().max() <= 1.0
    noise = row_noise(cfg.get("seed", 0), direction, row, (1, len(top)))
    torch.testing.assert_close(x_ks[0], noise[0], rtol=0, atol=0)  # starts from that row's x_K

    rerank = RerankConfig(topk=topk, compiled=False, **cfg)
    scores = DiffusionScores(split.text, split.audio, head, rerank)
    S_prime = (scores.t2a if direction == "t2a" else scores.a2t)(row, row + 1)[0].double()
    S = dense_cosine(split.text, split.audio)
    S = S[row] if direction == "t2a" else S[:, row]
    boost = (S_prime - S)[top]  # alpha = 1: softmax(x0_hat / 1) over the top-k, in top-k order
    torch.testing.assert_close(torch.softmax(x0_hats[-1].double(), 0), boost, rtol=0, atol=2e-5)


def test_equals_ddim_sample_over_the_reference_denoiser(split) -> None:
    head = random_head(D, K, std=0.3, seed=1)
    row, eta, steps = 4, 0.5, 6
    top = cosine_topk(split.text[row], split.audio, 5)
    q, C = split.text[row][None], split.audio[top]
    _, x0_hats, x_ks = diffusion_trajectory(
        head, split.text[row], C, "t2a", row, seed=9, steps=steps, eta=eta
    )
    noise = row_noise(9, "t2a", row, (1 + steps, len(top)))[:, None]  # (1 + steps, 1, k)
    with torch.no_grad():
        want = ddim_sample(
            lambda x, k: head.t2a(x, k, q, C), noise[0], head.betas, steps, eta, noise=noise[1:]
        )
    torch.testing.assert_close(x0_hats[-1], want[0], rtol=0, atol=0)
    assert not torch.equal(x0_hats[0], x0_hats[-1]) and not torch.equal(x_ks[0], x_ks[-1])


def test_cosine_topk_is_the_rerankers_order(split) -> None:
    S = dense_cosine(split.text, split.audio).float()
    for row in (0, 7):
        got = cosine_topk(split.text[row], split.audio, 5)
        assert got.tolist() == S[row].topk(5).indices.tolist()
    n = len(split.audio)
    for k in (None, n, n + 3):
        assert cosine_topk(split.text[0], split.audio, k).tolist() == list(range(n))


def test_bad_direction_is_refused(split) -> None:
    with pytest.raises(ValueError, match="direction must be"):
        diffusion_trajectory(random_head(D, K), split.text[0], split.audio[:3], "t2t")
