"""Several heads re-ranking the same top-k together (diffatr/diffusion_head/stacked_rerank.py):
each head's rows and metrics equal that head alone (`DiffusionScores`) and the dense oracle of
tests/rerank_oracle.py (DDIM over the reference Denoiser in float64), in any block order."""

import warnings

import pytest
import torch
from rerank_oracle import oracle_scores, random_head

from diffatr.cache import SyntheticConfig, load_tensors, make_synthetic
from diffatr.diffusion_head import DiffusionScores, RerankConfig, native_ddim
from diffatr.diffusion_head.stacked_rerank import stacked_scores
from diffatr.evaluate import paper_protocol

pytestmark = pytest.mark.usefixtures("one_thread")

D, K = 16, 12
CASES = {
    "top5": dict(topk=5),
    "all": dict(topk=None),
    "eta-strided": dict(topk=4, eta=0.7, steps=4, alpha=0.5, temperature=0.3),
    "gen": dict(topk=6, mode="gen"),
}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = tmp_path_factory.mktemp("stacked-rerank") / "small.h5"
    make_synthetic(path, SyntheticConfig(dim=D, n_clips=12, captions_per_clip=(1, 2, 3), seed=1))
    return load_tensors(path)


@pytest.fixture(scope="module")
def heads():
    return [random_head(D, K, std=0.3, seed=s) for s in (0, 1, 2)]


@pytest.mark.parametrize("case", list(CASES))
def test_each_head_equals_itself_alone_and_the_oracle(small, heads, case) -> None:
    cfgs = [RerankConfig(compiled=False, query_block=5, seed=s, **CASES[case]) for s in (0, 1, 2)]
    together = stacked_scores(small.text, small.audio, heads, cfgs)
    nt, na = len(small.text), len(small.audio)
    got = {}
    for h in (2, 0, 1):  # any head asks first; every head asks for every block
        s = together[h]
        got[h] = {"t2a": torch.cat([s.t2a(0, 7), s.t2a(7, nt)]), "a2t": s.a2t(0, na)}
    for h, (head, cfg) in enumerate(zip(heads, cfgs, strict=True)):
        alone = DiffusionScores(small.text, small.audio, head, cfg)
        want = oracle_scores(head, small.text, small.audio, seed=cfg.seed, **CASES[case])
        for direction, n in (("t2a", nt), ("a2t", na)):
            ref = alone.t2a(0, n) if direction == "t2a" else alone.a2t(0, n)
            torch.testing.assert_close(got[h][direction], ref, rtol=0, atol=1e-6)
            torch.testing.assert_close(
                got[h][direction].double(), want[direction], rtol=0, atol=1e-5
            )
    assert not torch.allclose(got[0]["t2a"], got[1]["t2a"], atol=1e-3)  # distinct heads
    assert not together[0].shared.kept  # every block handed out, nothing kept


@pytest.mark.parametrize("native", [True, False])
def test_metrics_equal_each_head_alone_and_compiled_equals_eager(
    small, heads, native, monkeypatch
) -> None:
    """Compiled: the C loop (native_ddim.py) head by head, eager the numba loop, or without
    them the stacked torch.compile'd and eager steps."""
    if not native:
        monkeypatch.setattr(native_ddim, "backend", lambda compiled, *tensors: None)
    index = small.audio_index
    for compiled in (False, True):
        cfgs = [RerankConfig(topk=5, seed=s, compiled=compiled) for s in (0, 1, 2)]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            together = [
                paper_protocol(s, index)
                for s in stacked_scores(small.text, small.audio, heads, cfgs)
            ]
        assert not [w for w in caught if "torch.compile failed" in str(w.message)]
        for head, cfg, got in zip(heads, cfgs, together, strict=True):
            alone = paper_protocol(DiffusionScores(small.text, small.audio, head, cfg), index)
            assert got == pytest.approx(alone, abs=1e-9)
    assert together[0] != pytest.approx(together[1], abs=1e-9)


def test_heads_that_differ_in_more_than_weights_and_seed_are_refused(small, heads) -> None:
    cfgs = [RerankConfig(topk=5, seed=0), RerankConfig(topk=6, seed=1)]
    with pytest.raises(ValueError, match="differ in more than"):
        stacked_scores(small.text, small.audio, heads[:2], cfgs)
    other_K = random_head(D, K + 1, seed=3)
    with pytest.raises(ValueError, match="differ in more than"):
        stacked_scores(small.text, small.audio, [heads[0], other_K], [RerankConfig()] * 2)
