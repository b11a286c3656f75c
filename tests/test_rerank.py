"""Re-ranking with the diffusion head (diffatr/diffusion_head/rerank.py) against the dense oracle
of tests/rerank_oracle.py: whole S at once, torch.topk, DDIM over the reference Denoiser in
float64, S' = S + alpha * softmax(x0_hat / T) on the top-k. Blocks and query blocks must not
change a single score; metrics through `paper_protocol` must match the oracle's dense S'."""

import itertools
import warnings

import pytest
import torch
from rerank_oracle import dense_cosine, oracle_scores, random_head

from diffatr.cache import SyntheticConfig, load_tensors, make_synthetic
from diffatr.diffusion_head import DiffusionScores, RerankConfig
from diffatr.diffusion_head.rerank import row_noise
from diffatr.evaluate import CosineScores, DenseScores, paper_protocol, t2a_ranks
from diffatr.evaluate.ranks import a2t_ranks

D, K = 16, 12


pytestmark = pytest.mark.usefixtures("one_thread")


def _split(tmp_path_factory, name: str, **cfg):
    path = tmp_path_factory.mktemp("rerank") / f"{name}.h5"
    make_synthetic(path, SyntheticConfig(dim=D, captions_per_clip=(1, 2, 3), **cfg))
    return load_tensors(path)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return _split(tmp_path_factory, "small", n_clips=12, seed=1)


@pytest.fixture(scope="module")
def medium(tmp_path_factory):
    return _split(tmp_path_factory, "medium", n_clips=40, seed=2)


@pytest.fixture(scope="module")
def head():
    return random_head(D, K, std=0.3, seed=0)


def blocks(scores: DiffusionScores, direction: str, cuts: list[int]) -> torch.Tensor:
    """All rows of one direction, asked for in the blocks [cuts[i], cuts[i+1])."""
    fn = scores.t2a if direction == "t2a" else scores.a2t
    return torch.cat([fn(a, b) for a, b in itertools.pairwise(cuts)])


CASES = {
    "top5": dict(topk=5),
    "all": dict(topk=None),
    "topk>gallery": dict(topk=100),
    "gen": dict(topk=5, mode="gen"),
    "eta": dict(topk=4, eta=0.7, seed=3),
    "strided-steps": dict(topk=6, steps=4, alpha=0.5, temperature=0.3, seed=5),
}


@pytest.mark.parametrize("case", list(CASES))
def test_blocks_equal_the_dense_oracle_for_any_split(small, head, case) -> None:
    rerank = CASES[case]
    want = oracle_scores(head, small.text, small.audio, **rerank)
    nt, na = len(small.text), len(small.audio)
    cut = {"t2a": [[0, nt], [0, 1, 7, 8, nt], [0, 13, nt]], "a2t": [[0, na], [0, 5, 6, na]]}
    first = {}
    for query_block in (1, 3, 64):
        scores = DiffusionScores(
            small.text,
            small.audio,
            head,
            RerankConfig(compiled=False, query_block=query_block, **rerank),
        )
        for direction, splits in cut.items():
            for cuts in splits:
                got = blocks(scores, direction, cuts)
                assert got.dtype == torch.float32
                torch.testing.assert_close(got.double(), want[direction], rtol=0, atol=1e-5)
                ref = first.setdefault(direction, got)
                torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
    # the boosts differ between candidates by far more than the tolerance: not vacuous
    boost = want["t2a"] - dense_cosine(small.text, small.audio)
    spread = [row[row != 0].max() - row[row != 0].min() for row in boost]
    assert max(spread) > 0.05


def test_topk_covering_the_gallery_equals_topk_all(small, head) -> None:
    nt, na = len(small.text), len(small.audio)

    def run(topk):
        s = DiffusionScores(small.text, small.audio, head, RerankConfig(topk=topk, compiled=False))
        return s.t2a(0, nt), s.a2t(0, na)

    every_t2a, every_a2t = run(None)
    for topk in (na, na + 1):  # the a2t gallery (nt captions) is larger: still a top-k there
        torch.testing.assert_close(run(topk)[0], every_t2a, rtol=0, atol=0)
    for topk in (nt, nt + 1, 1000):
        torch.testing.assert_close(run(topk), (every_t2a, every_a2t), rtol=0, atol=0)


def test_gen_mode_puts_the_topk_first_in_the_heads_order(small, head) -> None:
    k = 5
    cosine = dense_cosine(small.text, small.audio).float()
    gen = DiffusionScores(
        small.text, small.audio, head, RerankConfig(topk=k, mode="gen", compiled=False)
    )
    S_gen = gen.t2a(0, gen.n_text)
    fused = DiffusionScores(small.text, small.audio, head, RerankConfig(topk=k, compiled=False))
    boost = fused.t2a(0, fused.n_text) - cosine  # alpha * softmax(x0_hat), same x_K and head
    top = torch.topk(cosine, k, dim=1).indices
    for i in range(len(cosine)):
        first = torch.argsort(S_gen[i], descending=True, stable=True)[:k]
        assert set(first.tolist()) == set(top[i].tolist())
        torch.testing.assert_close(S_gen[i, top[i]] - 2.0, boost[i, top[i]], atol=1e-6, rtol=0)
        rest = torch.ones(len(cosine[i]), dtype=torch.bool)
        rest[top[i]] = False
        torch.testing.assert_close(S_gen[i, rest], cosine[i, rest], atol=1e-6, rtol=0)
        assert S_gen[i, top[i]].min() > 2.0 > 1.0 >= S_gen[i, rest].max()


def test_sampling_is_seeded_per_row(small, head) -> None:
    def run(**cfg):
        s = DiffusionScores(
            small.text, small.audio, head, RerankConfig(topk=5, compiled=False, **cfg)
        )
        return s.t2a(0, s.n_text)

    torch.testing.assert_close(run(eta=0.7, seed=3), run(eta=0.7, seed=3), rtol=0, atol=0)
    eta_matters = float((run(eta=0.7, seed=3) - run(eta=0.0, seed=3)).abs().max())
    assert eta_matters > 1e-3
    # x_K (and with eta > 0 the DDIM noise) depend on the seed
    seed_matters = float((run(eta=0.7, seed=3) - run(eta=0.7, seed=4)).abs().max())
    assert seed_matters > 1e-3, "seeds 3 and 4 sample the same scores"
    seed_matters = float((run(seed=0) - run(seed=1)).abs().max())
    assert seed_matters > 1e-3, "seeds 0 and 1 sample the same scores"
    # the two directions and different rows draw different x_K
    same_as_a2t = torch.equal(row_noise(0, "t2a", 0, (1, 8)), row_noise(0, "a2t", 0, (1, 8)))
    assert not same_as_a2t, "t2a and a2t row 0 draw the same x_K"
    assert not torch.equal(row_noise(0, "t2a", 0, (1, 8)), row_noise(0, "t2a", 1, (1, 8)))


@pytest.mark.parametrize("seed", [-1, 2**22, 2**31 - 1, 12345678])
def test_any_int_seed_samples(small, head, seed) -> None:
    """The CLI's --seed takes any int: no overflow, and each seed its own x_K (torch's CPU
    generator keeps only the low 32 bits of a seed, so those bits must carry the seed)."""

    def run(seed: int) -> torch.Tensor:
        cfg = RerankConfig(topk=5, compiled=False, seed=seed)
        return DiffusionScores(small.text, small.audio, head, cfg).t2a(0, 4)

    assert torch.isfinite(run(seed)).all()
    seed_matters = float((run(seed) - run(seed + 1)).abs().max())
    assert seed_matters > 1e-3, f"seeds {seed} and {seed + 1} sample the same scores"


@pytest.mark.parametrize("case", ["top5", "all", "gen", "eta"])
def test_paper_metrics_equal_the_oracles_dense_metrics(small, head, case) -> None:
    rerank = CASES[case]
    want = oracle_scores(head, small.text, small.audio, **rerank)
    index = small.audio_index
    t2a = paper_protocol(DenseScores(want["t2a"].float()), index)
    a2t = paper_protocol(DenseScores(want["a2t"].T.float()), index)  # its a2t rows are S'^T rows
    expected = {k: v for k, v in t2a.items() if k.startswith("t2a")}
    expected |= {k: v for k, v in a2t.items() if k.startswith("a2t")}
    scores = DiffusionScores(small.text, small.audio, head, RerankConfig(compiled=False, **rerank))
    for max_elements in (40, 1 << 22):  # rank in blocks of 3 and 1 rows, and all at once
        got = paper_protocol(scores, index, max_elements=max_elements)
        assert got == pytest.approx(expected, abs=1e-9)
    cosine = paper_protocol(CosineScores(small.text, small.audio), index)
    assert got != pytest.approx(cosine, abs=1e-9)  # the head changed something


@pytest.mark.parametrize("mode", ["fusion", "gen"])
def test_recall_at_k_at_or_beyond_topk_is_the_cosine_baselines(medium, head, mode) -> None:
    """method.md: the boost is positive, so the top-k set stays on top; only its order changes."""
    topk, index = 5, medium.audio_index
    cosine = CosineScores(medium.text, medium.audio)
    rerank = RerankConfig(topk=topk, mode=mode, compiled=False)
    scores = DiffusionScores(medium.text, medium.audio, head, rerank)
    before, after = paper_protocol(cosine, index), paper_protocol(scores, index)
    for key in ("t2a_R@5", "t2a_R@10", "a2t_R@5", "a2t_R@10"):
        assert after[key] == before[key], key
    ranks = {
        "t2a": (t2a_ranks(cosine, index)[0], t2a_ranks(scores, index)[0]),
        "a2t": (a2t_ranks(cosine, index), a2t_ranks(scores, index)),
    }
    for direction, (r0, r1) in ranks.items():
        outside = r0 > topk
        assert torch.equal(r1[outside], r0[outside]), direction  # untouched beyond the top-k
        assert (r1[~outside] <= topk).all(), direction  # the top-k stay the top-k
        assert not torch.equal(r1[~outside], r0[~outside]), direction  # reordered inside


def test_compiled_equals_eager_end_to_end(small, head) -> None:
    for topk in (5, None):  # gathered and shared candidate constants
        eager = DiffusionScores(
            small.text, small.audio, head, RerankConfig(topk=topk, compiled=False)
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fast = DiffusionScores(small.text, small.audio, head, RerankConfig(topk=topk))
            got = (fast.t2a(0, fast.n_text), fast.a2t(0, fast.n_audio))
        assert not [w for w in caught if "torch.compile failed" in str(w.message)]
        want = (eager.t2a(0, eager.n_text), eager.a2t(0, eager.n_audio))
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_normalized_head_uses_unit_features(small) -> None:
    head = random_head(D, K, std=0.3, seed=4, normalize=True)
    want = oracle_scores(head, small.text, small.audio, topk=5)
    scores = DiffusionScores(small.text, small.audio, head, RerankConfig(topk=5, compiled=False))
    torch.testing.assert_close(
        scores.t2a(0, scores.n_text).double(), want["t2a"], rtol=0, atol=1e-5
    )
    torch.testing.assert_close(
        scores.a2t(0, scores.n_audio).double(), want["a2t"], rtol=0, atol=1e-5
    )


def test_bad_settings_are_refused(small, head) -> None:
    def make(**cfg):
        return DiffusionScores(small.text, small.audio, head, RerankConfig(compiled=False, **cfg))

    with pytest.raises(ValueError, match="between 1 and K=12"):
        make(steps=K + 1)
    with pytest.raises(ValueError, match="top-k must be at least 1"):
        make(topk=0)
    with pytest.raises(ValueError, match="mode must be one of"):
        make(mode="gen+dis")
    with pytest.raises(ValueError, match="temperature must be positive"):
        make(temperature=0.0)


def test_shared_samples_give_gen_and_fusion_their_own_scores_with_one_ddim(small, head) -> None:
    """Gen+Dis then Gen (and another alpha/temperature) through one `Samples`: each equals its
    own DiffusionScores without it, bit for bit, while DDIM ran for the first one only."""
    from diffatr.diffusion_head.rerank import Samples, sampling_key

    nt, na = len(small.text), len(small.audio)
    settings = [
        RerankConfig(topk=5, compiled=False, seed=2),
        RerankConfig(topk=5, compiled=False, seed=2, mode="gen"),
        RerankConfig(topk=5, compiled=False, seed=2, alpha=0.3, temperature=0.5),
    ]
    samples = Samples()
    calls = {"n": 0}
    for i, cfg in enumerate(settings):
        alone = DiffusionScores(small.text, small.audio, head, cfg)
        shared = DiffusionScores(
            small.text, small.audio, head, cfg,
            samples=samples.for_settings(("head", "test", sampling_key(cfg))),
        )  # fmt: skip
        real = shared.gallery["t2a"].sample

        def counted(*args, real=real, **kwargs):
            calls["n"] += 1
            return real(*args, **kwargs)

        shared.gallery["t2a"].sample = counted
        for fn in ("t2a", "a2t"):
            n = nt if fn == "t2a" else na
            got, want = getattr(shared, fn)(0, n), getattr(alone, fn)(0, n)
            torch.testing.assert_close(got, want, rtol=0, atol=0)
        if i == 0:
            assert calls["n"] > 0  # the first settings sample
            first = calls["n"]
    assert calls["n"] == first  # the others re-use x0_hat
    # other DDIM settings (seed) empty it: sampled again, never another seed's x0_hat
    other = RerankConfig(topk=5, compiled=False, seed=3)
    scores = DiffusionScores(
        small.text, small.audio, head, other,
        samples=samples.for_settings(("head", "test", sampling_key(other))),
    )  # fmt: skip
    want = DiffusionScores(small.text, small.audio, head, other).t2a(0, nt)
    torch.testing.assert_close(scores.t2a(0, nt), want, rtol=0, atol=0)
