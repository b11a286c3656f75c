"""The `diffatr` command line. Thin: parse options into a config, call one function, print.

User errors (`UserError`) print as one line, `Error: ...`, exit status 1, no traceback.
"""

import json
import sys

import click

from . import __version__
from .errors import UserError

CACHE = click.Path(dir_okay=False, path_type=str)


class _Group(click.Group):
    """A click group that turns user errors into one-line messages."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as e:
            raise click.ClickException(str(e)) from None
        except OSError as e:  # permissions, a full disk, a path that is a folder: not a bug
            where = f"{e.filename}: " if e.filename else ""
            raise click.ClickException(f"{where}{e.strerror or e}") from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="diffatr")
def main():
    """diffatr: train and evaluate audio-text retrieval heads on cached embeddings.

    Caches are HDF5 files (format v1, see the README): one per dataset split, with clip and
    caption embeddings. Start with `diffatr demo`.
    """


@main.command()
@click.argument("cache", type=CACHE)
@click.option(
    "--protocol",
    type=click.Choice(["paper", "dcase"]),
    default="paper",
    show_default=True,
    help="paper: both directions, R@1/5/10, mAP@10, medR, meanR (Mei et al.); "
    "dcase: text-to-audio with a jackknife 95% interval for mAP@10 (Task 6b).",
)
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the metrics, counts and settings to this JSON file.",
)
@click.option(
    "--submission",
    type=click.Path(dir_okay=False),
    default=None,
    help="With --protocol dcase: write the Task 6b submission CSV "
    "(caption,file_name_1..file_name_10) here.",
)
@click.option(
    "--device",
    default="auto",
    show_default=True,
    help="Where to compute similarities: auto (CUDA when present), cpu, cuda, cuda:1.",
)
@click.option(
    "--max-elements",
    type=click.IntRange(min=1),
    default=None,
    help="Similarity entries held in memory at once, 4 bytes each [default: 4194304, "
    "16 MB]; lower it to use less memory on huge galleries.",
)
@click.option(
    "--no-verify",
    is_flag=True,
    help="Skip the full cache check (NaN, index ranges) that runs before ranking.",
)
def evaluate(cache, protocol, json_out, submission, device, max_elements, no_verify):
    """Rank by cosine similarity of CACHE's embeddings and print retrieval metrics."""
    from .evaluate import EvalConfig, evaluate_cache, format_table, write_json

    chunking = {"max_elements": max_elements} if max_elements else {}
    cfg = EvalConfig(protocol=protocol, device=device, verify=not no_verify, **chunking)
    result = evaluate_cache(cache, cfg, submission=submission, progress=sys.stderr.isatty())
    c = result.counts
    click.echo(f"{cache}: {c['scored_captions']} captions scored over {c['clips']} clips")
    click.echo(format_table({"cosine": result.metrics}, protocol))
    if json_out:
        write_json(json_out, result.to_json())
        click.echo(f"wrote {json_out}")
    if submission:
        click.echo(f"wrote {submission}")


@main.group()
def cache():
    """Inspect, check and export cache files."""


@cache.command()
@click.argument("path", type=CACHE)
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
def info(path, as_json):
    """Describe a cache: attributes, shapes, dtypes, provenance, captions per clip."""
    from .cache import describe, format_info

    description = describe(path)
    click.echo(json.dumps(description, indent=2) if as_json else format_info(description))


@cache.command()
@click.argument("path", type=CACHE)
@click.option("--strict", is_flag=True, help="Fail on warnings too (exit status 1).")
def verify(path, strict):
    """Check a cache against format v1; exit status 1 if it is unusable.

    Checks the schema, shapes, dtypes, caption->clip index ranges, NaN/Inf, duplicate clip ids
    and damaged or truncated files.
    """
    from .cache import verify as run_verify

    report = run_verify(path)
    for message in report.errors:
        click.echo(f"{path}: error: {message}", err=True)
    for message in report.warnings:
        click.echo(f"{path}: warning: {message}", err=True)
    if not report.ok or (strict and report.warnings):
        sys.exit(1)
    click.echo(f"{path}: ok" + (f" ({len(report.warnings)} warning(s))" if report.warnings else ""))


@cache.command()
@click.argument("path", type=CACHE)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["npz", "npy", "tsv"]),
    required=True,
    help="npz: one NumPy archive; npy: one .npy per array plus attributes.json; "
    "tsv: vectors.tsv + metadata.tsv for the Embedding Projector.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=".",
    show_default=True,
    help="Folder to write into (created if missing).",
)
def export(path, fmt, out_dir):
    """Export embeddings, clip ids, captions and the caption->clip index."""
    from .cache import export as run_export

    for written in run_export(path, fmt, out_dir):
        click.echo(f"wrote {written}")


@cache.command()
@click.argument("out", type=CACHE)
@click.option(
    "--clips", type=click.IntRange(min=1), default=1000, show_default=True, help="Number of clips."
)
@click.option(
    "--captions-per-clip",
    default="5",
    show_default=True,
    help="Caption counts to draw from, comma-separated (e.g. 1,5,7).",
)
@click.option(
    "--dim", type=click.IntRange(min=2), default=512, show_default=True, help="Embedding width."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--split", default="test", show_default=True, help="Split name to record.")
@click.option("--float16", is_flag=True, help="Store embeddings as float16.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def synthetic(out, clips, captions_per_clip, dim, seed, split, float16, overwrite):
    """Write a synthetic joint-space cache (the demo's data) to OUT."""
    from .cache import SyntheticConfig, make_synthetic

    try:
        counts = tuple(int(c) for c in captions_per_clip.split(","))
    except ValueError:
        raise click.BadParameter(
            "comma-separated integers, e.g. 5 or 1,5,7", param_hint="--captions-per-clip"
        ) from None
    if min(counts) < 0:
        raise click.BadParameter(
            "caption counts cannot be negative", param_hint="--captions-per-clip"
        )
    cfg = SyntheticConfig(n_clips=clips, captions_per_clip=counts, dim=dim, seed=seed)
    make_synthetic(
        out, cfg, split=split, dtype="float16" if float16 else "float32", overwrite=overwrite
    )
    click.echo(f"wrote {out}")


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
    from .demo import DemoConfig, run_demo

    run_demo(out_dir, DemoConfig(n_clips=clips, seed=seed), echo=click.echo)


if __name__ == "__main__":
    main()
