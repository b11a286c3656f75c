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
    type=click.IntRange(min=10),
    default=1000,
    show_default=True,
    help="Clips in the synthetic split (5 captions each).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the synthetic data.")
def demo(out_dir, clips, seed):
    """Run the pipeline end to end on built-in synthetic data (no download, no GPU)."""
    from ..demo import DemoConfig, run_demo

    run_demo(out_dir, DemoConfig(n_clips=clips, seed=seed), echo=click.echo)
