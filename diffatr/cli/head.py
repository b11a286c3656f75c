"""`diffatr train-head`: phase 2, the diffusion head, trained on joint-space caches."""

from pathlib import Path

import click

from . import main
from .options import CACHE, given, parse_seeds


@main.command("train-head")
@click.argument("train_cache", type=CACHE)
@click.option("--val", "val_cache", type=CACHE, required=True, help="Validation cache.")
@click.option(
    "--out",
    type=click.Path(),
    required=True,
    help="Checkpoint file to write; with --seeds, a folder that gets seed{S}.pt per seed.",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Passes over the training pairs (DiffusionRet: 5).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=2),
    default=32,
    show_default=True,
    help="Pairs per batch; each query's candidates are the batch's items (paper: 32 AudioCaps, "
    "24 Clotho).",
)
@click.option(
    "--steps-K",
    "K",
    type=click.IntRange(min=1, max=1000),
    default=50,
    show_default=True,
    help="Diffusion steps K, for training and sampling.",
)
@click.option(
    "--schedule",
    type=click.Choice(["cosine", "linear"]),
    default="cosine",
    show_default=True,
    help="Noise schedule: cosine (Nichol & Dhariwal, the paper's) or linear (DDPM's betas "
    "1e-4..0.02; with small K the last step keeps much of the signal).",
)
@click.option("--lr", type=float, default=1e-4, show_default=True, help="AdamW peak learning rate.")
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the initialisation, batch order, steps and noise: same seed, same checkpoint.",
)
@click.option(
    "--seeds",
    default=None,
    help="Several seeds, comma-separated (e.g. 0,1,2): one head per seed, each exactly as "
    "alone with its seed (see --stack); --out is then a folder.",
)
@click.option(
    "--stack/--no-stack",
    default=None,
    help="With --seeds: train the heads as one stacked computation, or one after another "
    "(the same heads either way, to float rounding). Default: stacked on CUDA, one after "
    "another on CPU, where a stacked head measured about as costly as a head alone.",
)
@click.option(
    "--normalize", is_flag=True, help="L2-normalise features before the denoiser (default off)."
)
@click.option(
    "--val-topk",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Top-k re-ranked when validating after each epoch.",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1.")
@click.option(
    "--naive", is_flag=True, help="Train through the reference denoiser (slow; for checks)."
)
@click.option(
    "--no-compile",
    is_flag=True,
    help="Train and validate without a C/C++ compiler or torch.compile: eager PyTorch (a "
    "top-k's DDIM loop through numba); slower per batch.",
)
def train_head_command(
    train_cache, val_cache, out, val_topk, naive, no_compile, seeds, stack, **settings
):
    """Train the DiffATR diffusion head (both directions) on a joint-space TRAIN_CACHE.

    Validates the EMA weights on --val after every epoch and keeps the best epoch's (by the sum
    of R@1/5/10 in both directions) in --out; the per-epoch log goes to OUT.log.json and
    OUT.log.csv. The same seed gives the same checkpoint. With --seeds 0,1,2 one head per
    seed goes to OUT/seed0.pt, OUT/seed1.pt, ... with its logs beside it (trained as one
    stacked computation or one after another: --stack).
    """
    from ..diffusion_head import HeadConfig, RerankConfig
    from ..diffusion_head.train import seed_jobs, train_head, train_heads
    from ..outputs import check_outputs

    cfg = HeadConfig(fused=not naive, compiled=not no_compile, **settings)
    rerank = RerankConfig(topk=val_topk, compiled=not no_compile)
    progress = True  # a bar on a terminal, plain lines in a log
    if seeds is None:
        if Path(out).is_dir():
            raise click.BadParameter(
                f"{out} is a folder; give a checkpoint file (or --seeds)", param_hint="--out"
            )
        check_outputs({"--out": out})
        head = train_head(train_cache, val_cache, out, cfg, rerank, progress, click.echo)
        heads, outs = [head], [out]
    else:
        if given(["seed"]):
            raise click.UsageError("give --seed or --seeds, not both")
        if naive and len(parse_seeds(seeds)) > 1:
            raise click.UsageError("--naive trains one head at a time: give one seed")
        check_outputs(folders={"--out": out})
        jobs = seed_jobs(train_cache, val_cache, out, cfg, rerank, parse_seeds(seeds))
        heads, outs = train_heads(jobs, progress, click.echo, stack), [job.out for job in jobs]
    for head, path in zip(heads, outs, strict=True):
        m = head.meta["val_metrics"]
        click.echo(
            f"wrote {path} (epoch {head.meta['epoch']}: val t2a R@1 {m['t2a_R@1']:.1f}, "
            f"a2t R@1 {m['a2t_R@1']:.1f})"
        )
