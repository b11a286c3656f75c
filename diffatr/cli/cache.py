"""`diffatr cache ...`: inspect, check, export, import, merge and synthesise cache files."""

import json
import sys

import click

from . import main
from .options import CACHE


@main.group()
def cache():
    """Inspect, check and export cache files."""


@cache.command()
@click.argument("path", type=CACHE)
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
def info(path, as_json):
    """Describe a cache: attributes, shapes, dtypes, provenance, captions per clip."""
    from ..cache import describe, format_info

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
    from ..cache import verify as run_verify

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
    type=click.Choice(["npz", "npy", "tsv", "parquet", "safetensors", "faiss"]),
    required=True,
    help="npz: one NumPy archive; npy: one .npy per array plus attributes.json; "
    "tsv: vectors.tsv + metadata.tsv for the Embedding Projector; parquet: one file per "
    "modality, embedding as fixed_size_list<float32>; safetensors: tensors + attributes as "
    "metadata, names in a JSON sidecar; faiss: one inner-product index per modality over "
    "L2-normalised rows, ids in a JSON sidecar. The last three need pip install 'diffatr[export]'.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=".",
    show_default=True,
    help="Folder to write into (created if missing).",
)
@click.option(
    "--index-factory",
    default="Flat",
    show_default=True,
    help="With --format faiss: the faiss.index_factory string (Flat = exact; e.g. "
    "IVF256,Flat or HNSW32).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace files another cache exported into the --out folder (else refused).",
)
def export(path, fmt, out_dir, index_factory, overwrite):
    """Export embeddings, clip ids, captions and the caption->clip index."""
    from ..cache import export as run_export

    for written in run_export(path, fmt, out_dir, index_factory, overwrite):
        click.echo(f"wrote {written}")


@cache.command("import")
@click.argument("out", type=CACHE)
@click.option(
    "--audio",
    "audio",
    required=True,
    type=click.Path(dir_okay=False),
    help="Clip embeddings: .npy (rows = vectors), .npz (one 2-D array, or diffatr's npz "
    "export) or .parquet (an `embedding` list column; `id` column for the clip ids).",
)
@click.option(
    "--text",
    "text",
    required=True,
    type=click.Path(dir_okay=False),
    help="Caption embeddings, as --audio (Parquet columns `caption`, `clip_id` or `audio_index`).",
)
@click.option(
    "--captions",
    type=click.Path(dir_okay=False),
    default=None,
    help="A caption file `extract` reads (Clotho, AudioCaps, manifest): audio rows follow its "
    "clips, text rows its captions (clip by clip, caption columns in order).",
)
@click.option(
    "--caption-format",
    default="auto",
    show_default=True,
    help="With --captions: its format (auto, clotho, audiocaps, audiocaps_mei, wavcaps, manifest).",
)
@click.option(
    "--space",
    type=click.Choice(["joint", "backbone"]),
    default="joint",
    show_default=True,
    help="joint: audio and text comparable by cosine (one width); backbone: separate "
    "encoders' features (phase-1 input).",
)
@click.option("--audio-encoder", default="", help="Record the audio model's name (provenance).")
@click.option(
    "--text-encoder",
    default="",
    help="Record the text model (hub name or folder): `diffatr search` embeds queries with it.",
)
@click.option(
    "--pooling",
    type=click.Choice(["cls", "mean"]),
    default=None,
    help="Record the text model's pooling (search embeds queries the same way).",
)
@click.option("--dataset", default="", help="Dataset name to record [default: the source's].")
@click.option("--split", default="", help="Split name to record [default: the source's, or test].")
@click.option("--float16", is_flag=True, help="Store embeddings as float16.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def import_(out, audio, text, captions, caption_format, **options):
    """Build a cache OUT from embeddings other tools wrote (chunked; OUT appears only when
    complete).

    \b
    diffatr cache import clap.h5 --audio audio.npy --text text.npy --captions clotho_eval.csv \\
        --text-encoder /models/minilm --pooling mean
    diffatr cache import back.h5 --audio test.audio.parquet --text test.text.parquet
    """
    from ..cache.importer import ImportConfig
    from ..extract.import_cache import import_cache
    from ..outputs import check_outputs

    check_outputs({"OUT": out})
    cfg = ImportConfig(
        space=options["space"],
        audio_encoder=options["audio_encoder"],
        text_encoder=options["text_encoder"],
        pooling=options["pooling"] or "",
        dataset=options["dataset"],
        split=options["split"],
        dtype="float16" if options["float16"] else "float32",
    )
    summary = import_cache(
        out,
        audio,
        text,
        cfg,
        captions,
        caption_format,
        overwrite=options["overwrite"],
        progress=True,  # a bar on a terminal, plain lines in a log
    )
    click.echo(
        f"wrote {out}: {summary.n_audio} clips ({summary.audio_dim}-d), "
        f"{summary.n_text} captions ({summary.text_dim}-d)"
    )


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
    from ..cache import SyntheticConfig, make_synthetic
    from ..outputs import check_outputs

    check_outputs({"OUT": out})
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


@cache.command("merge")
@click.argument("parts", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True))
@click.option("--out", required=True, type=CACHE, help="The merged cache to write.")
@click.option("--dataset", default=None, help="Dataset name to record [default: the parts'].")
@click.option("--split", default=None, help="Split name to record [default: the parts'].")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def merge_caches(parts, out, dataset, split, overwrite):
    """Join caches made with the same encoders into OUT, in the order given.

    Clips and captions are concatenated (caption->clip rows renumbered), frame/token features
    joined, skipped-clip lists concatenated. Parts with different encoders, settings or groups
    are refused. OUT appears only when complete.
    """
    from ..cache.merge import merge
    from ..outputs import check_outputs

    check_outputs({"--out": out})
    result = merge(parts, out, dataset=dataset, split=split, overwrite=overwrite)
    click.echo(
        f"wrote {out}: {result.n_audio} clips, {result.n_text} captions from {result.parts} parts"
    )
