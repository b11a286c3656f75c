"""`diffatr demo`: the whole pipeline on built-in synthetic data."""

import click

from . import main


@main.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder for the demo's files (default: a new temporary folder).",
)
@click.option(
    "--clips",
    type=click.IntRange(min=40),
    default=400,
    show_default=True,
    help="Clips in the synthetic test split (5 captions each).",
)
@click.option(
    "--train-clips",
    type=click.IntRange(min=40),
    default=1600,
    show_default=True,
    help="Clips in the synthetic training split (5 captions each).",
)
@click.option(
    "--val-clips",
    type=click.IntRange(min=10),
    default=100,
    show_default=True,
    help="Clips in the synthetic validation split (checkpoint selection of both phases).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of data and training.")
@click.option(
    "--no-compile",
    is_flag=True,
    help="Run the head without a C/C++ compiler or torch.compile: eager PyTorch training, "
    "the DDIM loop through numba (slower).",
)
def demo(out_dir, clips, train_clips, val_clips, seed, no_compile):
    """Run the pipeline end to end on built-in synthetic data (no download, no GPU).

    Synthetic backbone features -> phase 1 (projection heads) -> phase 2 (the diffusion head)
    -> the strategy table (Dis / Gen / Gen+Dis and the baselines) -> recall curves and the
    diffusion process of one query. About 35-45 s on 2 CPU cores (the first run on a machine
    also builds three small C kernels, ~1 s); the head trains 2 epochs, not the paper's 5, to
    keep it short.
    """
    from ..demo import DemoConfig, run_demo
    from ..outputs import check_outputs

    check_outputs(folders={"--out": out_dir})
    cfg = DemoConfig(clips, train_clips, val_clips, seed, compiled=not no_compile)
    run_demo(out_dir, cfg, echo=click.echo, progress=True)
