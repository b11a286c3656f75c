"""Same seed, same checkpoint bytes, whatever the thread count training's policy sets
(diffatr/threads.py changes it mid-training when other processes take cores).

Three layers: every op of each trainer's step gives the same result on 1 and 2 threads (a
dispatch mode redoes each op); each trainer forced to switch threads every step writes the
same checkpoint bytes as with 2 threads throughout; and `train-head` beside a busy competing
process writes the same bytes as without it. Sizes are the smallest at which torch splits
work across threads (its grain: 32,768 elements), so the tests fail where a sum's partition
follows the thread count (as on main before this file, 2026-12-07: the head's gradient norm,
the co-attention head's LayerNorm gradients).
"""

import itertools
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from diffatr import compiling, threads


@pytest.fixture
def two_threads(monkeypatch):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    monkeypatch.setenv("DIFFATR_THREADS", "adaptive")
    yield
    torch.set_num_threads(before)


class ThreadCountOracle(TorchDispatchMode):
    """Runs every op on 1 and on 2 threads and records those whose results differ."""

    def __init__(self):
        super().__init__()
        self.differ: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.__name__
        # in-place ops and random draws cannot run twice; their inputs were checked as outputs
        if name.endswith("_") or ".generator" in str(func) or "rand" in name:
            return func(*args, **kwargs)
        results = []
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append(func(*args, **kwargs))
        one, two = (tree_flatten(r)[0] for r in results)
        for a, b in zip(one, two, strict=True):
            if isinstance(a, torch.Tensor) and a.is_floating_point() and not torch.equal(a, b):
                shapes = [tuple(x.shape) for x in tree_flatten(args)[0] if hasattr(x, "shape")]
                self.differ.append(f"{func} {shapes}")
                break
        return results[1]


def head_step():
    from diffatr.diffusion_head import HeadConfig
    from diffatr.diffusion_head.trainer import HeadTrainer

    trainer = HeadTrainer(128, HeadConfig(K=10, compiled=False), total_steps=100)
    g = torch.Generator().manual_seed(0)
    text, audio = torch.randn(32, 128, generator=g), torch.randn(32, 128, generator=g)
    return lambda: trainer.step(text, audio, g)


def contrastive_step():
    from diffatr.contrastive import ContrastiveConfig
    from diffatr.contrastive.heads import ProjectionHeads
    from diffatr.contrastive.loss import nt_xent

    cfg = ContrastiveConfig(joint_dim=128)
    torch.manual_seed(0)
    heads = ProjectionHeads(512, 256, cfg.joint_dim)
    opt = torch.optim.Adam(heads.parameters(), lr=cfg.lr, fused=True)
    g = torch.Generator().manual_seed(0)
    clips = torch.randint(0, 64, (32,), generator=g)  # (B,)
    a, t = torch.randn(64, 512, generator=g)[clips], torch.randn(32, 256, generator=g)

    def step():
        loss = nt_xent(*heads(t, a), cfg.tau, clips)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(heads.parameters()), cfg.grad_clip)
        opt.step()

    return step


def coattention_step():
    from diffatr.coattention import CoAttentionConfig, CoAttentionHead, nt_xent
    from diffatr.coattention.train import make_optimizer

    cfg = CoAttentionConfig(d_model=32, heads=2, ffn=64, batch_size=16)
    torch.manual_seed(0)
    model = CoAttentionHead(48, 40, cfg).train()
    opt = make_optimizer(model, cfg)
    g = torch.Generator().manual_seed(0)
    frames, tokens = torch.randn(16, 20, 48, generator=g), torch.randn(16, 12, 40, generator=g)
    frame_mask, token_mask = torch.ones(16, 20, dtype=torch.bool), torch.ones(16, 12, dtype=bool)
    siblings = torch.zeros(16, 16, dtype=torch.bool)

    def step():
        S = model.all_pairs(
            model.encode_text(tokens, token_mask), model.encode_audio(frames, frame_mask)
        )  # (B, B)
        loss = nt_xent(S, cfg.tau, siblings)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()

    return step


@pytest.mark.parametrize("make_step", [head_step, contrastive_step, coattention_step])
def test_no_op_of_a_training_step_depends_on_the_thread_count(make_step, two_threads) -> None:
    step = make_step()
    step()  # the optimisers' state exists: the second step runs every op
    oracle = ThreadCountOracle()
    with oracle:
        step()
    assert oracle.differ == []


def _head(root):
    from diffatr.cache import SyntheticConfig, make_synthetic
    from diffatr.diffusion_head import HeadConfig, RerankConfig
    from diffatr.diffusion_head import train as module

    for split, n, seed in (("train", 64, 0), ("val", 24, 1)):
        make_synthetic(
            root / f"{split}.h5", SyntheticConfig(n_clips=n, dim=128, seed=seed), split=split
        )
    cfg = HeadConfig(K=10, epochs=2, batch_size=16, compiled=False, device="cpu")
    rerank = RerankConfig(topk=8, compiled=False)

    def run(out):
        module.train_head(root / "train.h5", root / "val.h5", out, cfg, rerank, False, print)

    return module, run


def _contrastive(root):
    from diffatr.cache import BackboneSyntheticConfig, make_synthetic_backbone
    from diffatr.contrastive import ContrastiveConfig
    from diffatr.contrastive import train as module

    data = BackboneSyntheticConfig(n_clips=96, captions_per_clip=(2,), audio_dim=512, text_dim=256)
    for split, seed in (("train", 1), ("val", 2)):
        make_synthetic_backbone(root / f"{split}.h5", replace(data, seed=seed), split=split)
    cfg = ContrastiveConfig(joint_dim=128, epochs=2, batch_size=32, device="cpu")

    def run(out):
        module.train_contrastive(root / "train.h5", root / "val.h5", out, cfg, False, print)

    return module, run


def _coattention(root):
    from diffatr.cache import SequenceSyntheticConfig, make_synthetic_sequences
    from diffatr.coattention import CoAttentionConfig
    from diffatr.coattention import train as module

    for split, seed in (("train", 1), ("val", 2)):
        make_synthetic_sequences(root / f"{split}.h5", SequenceSyntheticConfig(n_bags=8, seed=seed))
    cfg = CoAttentionConfig(d_model=32, heads=2, ffn=64, batch_size=8, epochs=2, val_topk=4)

    def run(out):
        module.train_coattention(root / "train.h5", root / "val.h5", out, cfg, False, print)

    return module, run


@pytest.mark.parametrize("trainer", [_head, _contrastive, _coattention])
def test_threads_changed_every_step_give_the_same_checkpoint_bytes(
    trainer, two_threads, monkeypatch, tmp_path
) -> None:
    """The policy's mechanism, forced: 1 and 2 threads in turn, step by step, against 2
    threads throughout. The checkpoints hold no wall-clock field: their bytes compare."""
    module, run = trainer(tmp_path)
    run(tmp_path / "steady" / "ckpt.pt")
    counts = itertools.cycle([1, 2])

    def switching_tick() -> None:
        threads.tick()  # the policy's own bookkeeping (compiled kernels' thread count)
        torch.set_num_threads(next(counts))

    monkeypatch.setattr(module, "tick", switching_tick)
    run(tmp_path / "switching" / "ckpt.pt")
    steady = (tmp_path / "steady" / "ckpt.pt").read_bytes()
    assert (tmp_path / "switching" / "ckpt.pt").read_bytes() == steady
    assert torch.get_num_threads() == 2  # the entry count is back


COMPETITOR = """
import torch
torch.set_num_threads(2)
a = torch.randn(256, 256)
while True:
    a = (a @ a) * 1e-3
"""


def test_a_competing_process_does_not_change_the_checkpoint(two_threads, tmp_path) -> None:
    """train-head twice with the same seed under the real policy, once beside a process that
    keeps two cores busy (the policy then gives up threads mid-training): the same bytes."""
    _, run = _head(tmp_path)
    run(tmp_path / "quiet" / "head.pt")
    competitor = subprocess.Popen([sys.executable, "-c", COMPETITOR])
    try:
        run(tmp_path / "busy" / "head.pt")
    finally:
        competitor.kill()
        competitor.wait()
    quiet = (tmp_path / "quiet" / "head.pt").read_bytes()
    assert (tmp_path / "busy" / "head.pt").read_bytes() == quiet


def switch_threads_every_block(monkeypatch) -> list[int]:
    """`TopKScores`' tick between blocks of queries sets 1 and 2 threads in turn; the list
    gets the count each block ran with."""
    from diffatr.evaluate import topk

    counts = itertools.cycle([1, 2])
    seen: list[int] = []

    def switching_tick() -> None:
        seen.append(torch.get_num_threads())
        torch.set_num_threads(next(counts))

    monkeypatch.setattr(topk, "tick", switching_tick)
    return seen


@pytest.mark.parametrize("path", ["eager", "numba", "c", "compiled"])
def test_re_ranking_scores_do_not_depend_on_the_thread_count(
    path, two_threads, monkeypatch, tmp_path
):
    """`TopKScores` ticks the policy between blocks of queries (`ranking_threads`): the head's
    scores with 1 and 2 threads in turn, block by block, against 2 threads throughout, eager,
    through the numba and C loops (native_ddim.py: rows split among threads) and through the
    compiled DDIM step (each query's row is one thread's work). Sizes above torch's grain: a
    block's gathered candidates are 64 x 32 x 128 values."""
    from rerank_oracle import random_head

    from diffatr.diffusion_head import DiffusionScores, RerankConfig, native_ddim

    compiled = path in ("c", "compiled")
    if path in ("eager", "compiled"):  # fused.py's torch steps, not a native loop
        monkeypatch.setattr(native_ddim, "backend", lambda compiled, *tensors: None)
    if path == "compiled":  # an empty compile cache: no kernel for one thread left by a test
        monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    g = torch.Generator().manual_seed(3)
    text, audio = torch.randn(320, 64, generator=g), torch.randn(160, 64, generator=g)
    head = random_head(64, K=10)
    cfg = RerankConfig(topk=32, steps=5, query_block=64, compiled=compiled)

    def scores():
        s = DiffusionScores(text, audio, head, cfg)
        return s.t2a(0, s.n_text), s.a2t(0, s.n_audio)

    steady = scores()
    seen = switch_threads_every_block(monkeypatch)
    misses = compiling._graph_counts()[0]
    switching = scores()
    assert set(seen) == {1, 2}  # both counts ran blocks
    # one compiled kernel serves both counts (compile_settings' dynamic threads): a change of
    # count re-traces the step and finds it in the cache; it compiled again before (~6 s)
    assert compiling._graph_counts()[0] == misses
    for a, b in zip(steady, switching, strict=True):
        assert torch.equal(a, b)
    assert torch.get_num_threads() == 2  # the entry count is back


def test_co_attention_re_ranking_does_not_depend_on_the_thread_count(
    two_threads, monkeypatch, tmp_path
) -> None:
    """The same for the co-attention head (packed pair scores: matrix products, LayerNorms,
    the attention), at its default width (d 128, 4 heads, FFN 256), blocks of 16 queries."""
    from diffatr.cache import Cache, SequenceSyntheticConfig, load_tensors, make_synthetic_sequences
    from diffatr.coattention import CoAttentionConfig, CoAttentionHead, CoAttentionScores
    from diffatr.coattention.config import CoRerankConfig

    path = tmp_path / "val.h5"
    make_synthetic_sequences(path, SequenceSyntheticConfig(n_bags=30, frame_dim=64, token_dim=48))
    data = load_tensors(path)
    torch.manual_seed(0)
    head = CoAttentionHead(64, 48, CoAttentionConfig()).eval()

    def scores():
        with Cache(path) as cache:
            cfg = CoRerankConfig(topk=16, query_block=16)
            s = CoAttentionScores(data.text, data.audio, head, 0.07, cache, cfg)
            return s.t2a(0, s.n_text), s.a2t(0, s.n_audio)

    steady = scores()
    seen = switch_threads_every_block(monkeypatch)
    switching = scores()
    assert set(seen) == {1, 2}
    for a, b in zip(steady, switching, strict=True):
        assert torch.equal(a, b)
    assert torch.get_num_threads() == 2
