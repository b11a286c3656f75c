"""`diffatr ablate`: the paper's tables and the missing ablations, each one command over caches."""

import click

from ..experiments import TABLE_NAMES
from . import main
from .options import parse_seeds, parse_topk


@main.command("ablate")
@click.argument("tables", nargs=-1, required=True, type=click.Choice([*TABLE_NAMES, "all"]))
@click.option(
    "--data",
    "data",
    multiple=True,
    required=True,
    help="A dataset as NAME=TRAIN.h5,VAL.h5,TEST.h5 (repeat for several; `ood` needs two). "
    "Backbone-feature caches run phase 1 first (per seed); joint-space caches go straight to "
    "the head.",
)
@click.option(
    "--out", type=click.Path(file_okay=False), required=True, help="Results folder (resumable)."
)
@click.option(
    "--seeds", default="0,1,2", show_default=True, help="Seeds, comma-separated: mean +- std."
)
@click.option(
    "--epochs", type=click.IntRange(min=1), default=5, show_default=True, help="Head epochs."
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=2),
    default=32,
    show_default=True,
    help="Head batch size (paper: 32 AudioCaps, 24 Clotho); the `batch` table varies it.",
)
@click.option(
    "--steps-K",
    "K",
    type=click.IntRange(min=1, max=1000),
    default=50,
    show_default=True,
    help="Diffusion steps K of the base head; the `steps` table varies it.",
)
@click.option(
    "--topk",
    default="32",
    show_default=True,
    help="Candidates re-ranked per query (or `all`) by the head and the baselines; the `topk` "
    "table varies it.",
)
@click.option(
    "--contrastive-epochs",
    type=click.IntRange(min=1),
    default=None,
    help="Phase-1 epochs, for backbone caches [default: train-contrastive's].",
)
@click.option(
    "--contrastive-batch-size",
    type=click.IntRange(min=2),
    default=None,
    help="Phase-1 batch size, for backbone caches [default: train-contrastive's, 32; the "
    "paper uses 24 on Clotho].",
)
@click.option(
    "--no-baselines",
    is_flag=True,
    help="Leave out the rows of the re-rankers with no training (dual softmax, inverted "
    "softmax, QB-Norm).",
)
@click.option(
    "--coattention",
    "co_variant",
    type=click.Choice(["single", "stacking", "iterating"]),
    default=None,
    help="Also train the co-attention head (Sun et al. 2024) of this variant per seed and put "
    "its row in every table (the caches need frames and tokens: extract with --frames "
    "--tokens; `diffatr project` carries them through).",
)
@click.option(
    "--coattention-epochs",
    type=click.IntRange(min=1),
    default=None,
    help="With --coattention: its epochs [default: train-coattention's].",
)
@click.option(
    "--protocol",
    type=click.Choice(["paper", "dcase", "dcase2025"]),
    default="paper",
    show_default=True,
    help="paper: both directions (Mei et al.); dcase: text-to-audio (Task 6b); dcase2025: "
    "text-to-audio mAP@16 (DCASE 2025 Task 6) with each caption's own clip as relevant.",
)
@click.option(
    "--figure-query",
    default="first-improved",
    show_default=True,
    help="The caption the strategy table's diffusion figure draws: first-improved (the first "
    "the head moves to rank 1, a chosen success), first (the first whose clip is in its "
    "top-k), or a caption row number. The figure says which.",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1.")
@click.option(
    "--no-compile",
    is_flag=True,
    help="Train and sample without torch.compile or a C compiler (eager training; a top-k's "
    "DDIM loop through numba).",
)
@click.option(
    "--stack/--no-stack",
    default=None,
    help="Train the seeds' heads of a row as one stacked computation, or one after another "
    "(the same heads either way, to float rounding). Default: stacked on CUDA, one after "
    "another on CPU, where a stacked head measured about as costly as a head alone.",
)
@click.option(
    "--report",
    is_flag=True,
    help="Also write OUT/TABLE/report/: a self-contained HTML page per re-ranked row and seed "
    "of the queries whose rank it changed against cosine (as `evaluate --report`).",
)
def ablate(tables, data, out, seeds, epochs, batch_size, K, topk, contrastive_epochs, **flags):
    """Run the ablation TABLES (or `all`) over caches and seeds; print paper-style tables.

    \b
    Tables: strategy (Dis / Gen / Gen+Dis, the paper's Table 5), steps (K = 10/50/100/200,
    Table 6), batch (16/24/32, Table 7), ood (train on one dataset, test on another, Tables
    3-4), and what the paper leaves out: topk (8/16/32/64/all), alpha, sampling-steps, eta.
    Every table also shows the baselines. Each table writes OUT/TABLE/results.json,
    results.csv (every per-seed number) and table.txt. Completed runs are kept under OUT/runs
    and skipped when the command runs again, so an interrupted ablation resumes.

    \b
    diffatr ablate strategy --data audiocaps=ac_train.h5,ac_val.h5,ac_test.h5 --out runs/
    diffatr ablate ood --data clotho=c_tr.h5,c_va.h5,c_te.h5 \\
        --data audiocaps=ac_tr.h5,ac_va.h5,ac_te.h5 --out runs/
    """
    from dataclasses import replace

    from ..coattention import CoAttentionConfig
    from ..experiments.config import AblationConfig, Dataset
    from ..experiments.figures import parse_figure_query
    from ..experiments.schedule import run_ablation
    from ..outputs import check_outputs

    check_outputs(folders={"--out": out})
    base = AblationConfig()
    compiled = not flags["no_compile"]
    contrastive = base.contrastive
    if contrastive_epochs is not None:
        contrastive = replace(contrastive, epochs=contrastive_epochs)
    if flags["contrastive_batch_size"] is not None:
        contrastive = replace(contrastive, batch_size=flags["contrastive_batch_size"])
    coattention = None
    if flags["co_variant"] is not None:
        coattention = CoAttentionConfig(variant=flags["co_variant"])
        if flags["coattention_epochs"] is not None:
            coattention = replace(coattention, epochs=flags["coattention_epochs"])
    elif flags["coattention_epochs"] is not None:
        raise click.UsageError("--coattention-epochs only applies with --coattention VARIANT")
    cfg = AblationConfig(
        seeds=parse_seeds(seeds),
        head=replace(base.head, epochs=epochs, batch_size=batch_size, K=K, compiled=compiled),
        rerank=replace(base.rerank, topk=parse_topk(topk), compiled=compiled),
        contrastive=contrastive,
        baselines=() if flags["no_baselines"] else base.baselines,
        coattention=coattention,
        protocol=flags["protocol"],
        figure_query=parse_figure_query(flags["figure_query"]),
        device=flags["device"],
        stack_heads=flags["stack"],
        report=flags["report"],
    )
    names = list(TABLE_NAMES) if "all" in tables else list(dict.fromkeys(tables))
    if "all" in tables and len(data) < 2:
        names.remove("ood")  # needs two datasets
    # under torchrun (WORLD_SIZE set) the runs are spread over its processes (schedule.py)
    run_ablation(out, cfg, names, [Dataset.parse(d) for d in data], click.echo, progress=True)
