"""Benchmark: head training speed on a quiet machine and beside a competing process, per policy.

Each policy runs in a fresh child process (the OpenMP settings must be in its environment
before torch loads libgomp): it trains the diffusion head (the fast path: stacked, compiled,
fused optimiser step; D = 512, batch 32, random pairs), or the co-attention head or phase 1's
projections (their trainers' steps on random batches: `coattention_step`, `contrastive_step`),
for `--batches` batches with the machine as it is ("quiet"), then again while a competitor
runs: another child process doing 2 threads of 512 x 512 float32 matrix products without
pause. Reported: ms per batch in both conditions side by side, their ratio, and the load
average at the start.

    python bench/bench_contention.py                       # every policy, 150 batches each
    python bench/bench_contention.py --policies default,adaptive --batches 60
    python bench/bench_contention.py --model coattention --batches 40   # ~0.6 s a batch
    python bench/bench_contention.py --model contrastive --batches 1000 # ~15 ms a batch

Policies (diffatr/threads.py is the one the package uses, "adaptive"):
    default   torch's threads (all cores), libgomp's default wait (spin ~0.3 M, then sleep)
    passive   OMP_WAIT_POLICY=PASSIVE: threads sleep at once at every barrier
    spin1k    GOMP_SPINCOUNT=1000: a short spin, then sleep
    one       one thread
    adaptive  diffatr.threads: all cores while the others are idle, one thread while other
              processes use the CPU (measured from /proc/stat between steps)
"""

import argparse
import json
import os
import subprocess
import sys
import time

POLICIES = {
    "default": {"DIFFATR_THREADS": "off"},
    "passive": {"DIFFATR_THREADS": "off", "OMP_WAIT_POLICY": "PASSIVE"},
    "spin1k": {"DIFFATR_THREADS": "off", "GOMP_SPINCOUNT": "1000"},
    "one": {"DIFFATR_THREADS": "off", "OMP_NUM_THREADS": "1"},
    "adaptive": {"DIFFATR_THREADS": "adaptive"},
}

COMPETITOR = (
    "import torch\n"
    "torch.set_num_threads(2)\n"
    "a = torch.randn(512, 512); b = torch.randn(512, 512)\n"
    "while True:\n"
    "    a = (a @ b) * 1e-3\n"
)


def worker(model: str, batches: int, compiled: bool) -> None:
    """In the child: warm up, then time `batches` steps quiet and with the competitor."""
    import torch

    from diffatr import threads

    step = make_step(model, compiled)
    policy = threads.policy()
    for _ in range(3):  # compile (or load the compiled code) outside the timing
        step()
    out = {"threads": torch.get_num_threads()}
    for condition in ("quiet", "contended"):
        competitor = None
        if condition == "contended":
            competitor = subprocess.Popen([sys.executable, "-c", COMPETITOR])
            time.sleep(1.0)  # let it start its loop
        try:
            times = []
            for _ in range(batches):
                t = time.perf_counter()
                policy.step_started()
                step()
                times.append(time.perf_counter() - t)
        finally:
            if competitor is not None:
                competitor.kill()
                competitor.wait()
        times.sort()
        out[condition] = {
            "mean_ms": 1000 * sum(times) / len(times),
            "median_ms": 1000 * times[len(times) // 2],
            "threads_at_end": torch.get_num_threads(),
        }
        time.sleep(0.5)
    print(json.dumps(out))


def make_step(model: str, compiled: bool):
    import torch

    if model == "head":
        from diffatr.diffusion_head import HeadConfig
        from diffatr.diffusion_head.trainer import HeadTrainer

        trainer = HeadTrainer(512, HeadConfig(compiled=compiled), total_steps=10_000)
        g = torch.Generator().manual_seed(0)
        text, audio = torch.randn(32, 512), torch.randn(32, 512)
        return lambda: trainer.step(text, audio, g)
    if model == "contrastive":
        return contrastive_step()
    if model == "coattention":
        return coattention_step()
    raise SystemExit(f"unknown model {model}")


def contrastive_step():
    """Phase 1's step as `contrastive.train.run_epoch` runs it: 2048-d audio, 768-d text,
    J = 512, batch 32 drawn from 160 clips (the siblings masked), fused Adam, grad clip."""
    import torch

    from diffatr.contrastive import ContrastiveConfig
    from diffatr.contrastive.heads import ProjectionHeads
    from diffatr.contrastive.loss import nt_xent

    cfg = ContrastiveConfig()
    heads = ProjectionHeads(2048, 768, cfg.joint_dim)
    opt = torch.optim.Adam(heads.parameters(), lr=cfg.lr, fused=True)
    params = list(heads.parameters())
    g = torch.Generator().manual_seed(0)
    clips = torch.randint(0, 160, (32,), generator=g)  # (B,)
    a = torch.randn(160, 2048, generator=g)[clips]  # (B, Da)
    t = torch.randn(32, 768, generator=g)  # (B, Dt)

    def step():
        zt, za = heads(t, a)
        loss = nt_xent(zt, za, cfg.tau, clips)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()

    return step


def coattention_step():
    """The co-attention head's step as `coattention.train.run_epoch` runs it (default config,
    batch 32, so 1,024 pair scores): Clotho-like sequences, T ~ U[25, 35] frames x 2048,
    L ~ U[12, 28] tokens x 768, padded and masked; AdamW, grad clip."""
    import torch

    from diffatr.coattention import CoAttentionConfig, CoAttentionHead, nt_xent
    from diffatr.coattention.train import make_optimizer

    cfg = CoAttentionConfig()
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = CoAttentionHead(2048, 768, cfg).train()
    opt = make_optimizer(model, cfg)
    B = cfg.batch_size
    frame_len = torch.randint(25, 36, (B,), generator=g)
    token_len = torch.randint(12, 29, (B,), generator=g)
    frames = torch.randn(B, int(frame_len.max()), 2048, generator=g)  # (B, T, Df)
    tokens = torch.randn(B, int(token_len.max()), 768, generator=g)  # (B, L, Dl)
    frame_mask = torch.arange(frames.shape[1]) < frame_len[:, None]  # (B, T)
    token_mask = torch.arange(tokens.shape[1]) < token_len[:, None]  # (B, L)
    siblings = torch.zeros(B, B, dtype=torch.bool)

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--batches", type=int, default=150)
    parser.add_argument("--model", choices=["head", "contrastive", "coattention"], default="head")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.model, args.batches, not args.no_compile)
        return
    print(f"{os.cpu_count()} CPUs; load average at start {os.getloadavg()}")
    print(f"{args.model}, {args.batches} batches per condition; ms per batch (mean, median)")
    print(f"{'policy':<10} {'quiet':>16} {'contended':>16} {'ratio':>6}  threads")
    for name in args.policies.split(","):
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS",)}
        env |= POLICIES[name]
        cmd = [sys.executable, __file__, "--worker", "--batches", str(args.batches)]
        cmd += ["--model", args.model] + (["--no-compile"] if args.no_compile else [])
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{name:<10} failed: {done.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        q, c = r["quiet"], r["contended"]
        print(
            f"{name:<10} {q['mean_ms']:7.1f} {q['median_ms']:7.1f} {c['mean_ms']:8.1f} "
            f"{c['median_ms']:7.1f} {c['mean_ms'] / q['mean_ms']:6.1f}  "
            f"{r['threads']} -> {q['threads_at_end']} / {c['threads_at_end']}"
        )
    print(f"load average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
