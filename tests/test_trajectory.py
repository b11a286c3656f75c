"""The diffusion process of one query (diffatr/diffusion_head/trajectory.py): the last x0_hat
must be the one `DiffusionScores` re-ranks that query with (its fused fast path, same noise
from `row_noise`), every step a float64 DDIM oracle's over the reference `Denoiser`, and the
candidates the ranking's top-k (ties by gallery order)."""

import copy

import pytest
import torch
from rerank_oracle import ddim as oracle_ddim
from rerank_oracle import dense_cosine, random_head
from rerank_oracle import timesteps as oracle_timesteps

from diffatr.cache import SyntheticConfig, load_tensors, make_synthetic
from diffatr.diffusion_head import DiffusionScores, RerankConfig, ddim_timesteps
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


def test_every_step_equals_a_float64_ddim_oracle(split) -> None:
    """Each recorded (x_k, x0_hat) against rerank_oracle.ddim (Song et al. eq. 12 written out in
    float64) over the same denoiser, noise drawn by row_noise."""
    head = random_head(D, K, std=0.3, seed=1)
    row, eta, steps = 4, 0.5, 6
    top = cosine_topk(split.text[row], split.audio, 5)
    q, C = split.text[row][None].double(), split.audio[top].double()
    got_steps, x0_hats, x_ks = diffusion_trajectory(
        head, split.text[row], split.audio[top], "t2a", row, seed=9, steps=steps, eta=eta
    )
    noise = row_noise(9, "t2a", row, (1 + steps, len(top)))[:, None]  # (1 + steps, 1, k)
    net = copy.deepcopy(head.t2a).double()
    seen_k, seen_x, seen_x0 = [], [], []

    def model_fn(x_k: torch.Tensor, k: int) -> torch.Tensor:
        x0 = net(x_k, torch.full((1,), k, dtype=torch.long), q, C)
        seen_k.append(k), seen_x.append(x_k[0]), seen_x0.append(x0[0].clamp(-1.0, 1.0))
        return x0

    with torch.no_grad():
        oracle_ddim(model_fn, noise[0], head.betas, steps, eta, noise[1:])
    assert got_steps == seen_k == oracle_timesteps(K, steps)
    torch.testing.assert_close(x_ks.double(), torch.stack(seen_x), rtol=0, atol=1e-5)
    torch.testing.assert_close(x0_hats.double(), torch.stack(seen_x0), rtol=0, atol=1e-5)
    assert not torch.equal(x0_hats[0], x0_hats[-1]) and not torch.equal(x_ks[0], x_ks[-1])


def test_cosine_topk_is_the_ranking_order_ties_by_gallery_order() -> None:
    """Oracle: Python's stable sorted() over the cosines; duplicated clips tie exactly, several
    across the k-th place."""
    g = torch.Generator().manual_seed(4)
    base = torch.randn(4, D, generator=g)
    gallery = base[[0, 1, 1, 2, 1, 3, 3, 0]]  # duplicates at (0, 7), (1, 2, 4), (5, 6)
    for query in torch.randn(12, D, generator=g):
        cos = dense_cosine(query[None], gallery)[0].float().tolist()
        order = sorted(range(len(cos)), key=lambda j: -cos[j])
        for k in range(1, len(cos)):
            assert cosine_topk(query, gallery, k).tolist() == order[:k], k
    n = len(gallery)
    for k in (None, n, n + 3):
        assert cosine_topk(gallery[0], gallery, k).tolist() == list(range(n))


def test_bad_direction_is_refused(split) -> None:
    with pytest.raises(ValueError, match="direction must be"):
        diffusion_trajectory(random_head(D, K), split.text[0], split.audio[:3], "t2t")
