"""`diffatr search`: rank a cache's clips for questions in words or for example sounds."""

import json

import click

from . import main
from .options import CACHE, joint_model_option, trust_checkpoint_option


@main.command()
@click.argument("cache", type=CACHE)
@click.argument("query", nargs=-1)
@click.option(
    "--queries",
    "queries_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Read queries from this file, one a line (after any QUERY arguments).",
)
@click.option(
    "--audio-example",
    "examples",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True),
    help="Find clips that sound like this file (embedded as the cache's clips were); repeatable.",
)
@click.option("--k", type=click.IntRange(min=1), default=10, show_default=True, help="Clips shown.")
@click.option(
    "--text-encoder",
    default="",
    help="Embed queries with this model (hub name or folder) [default: the one the cache records].",
)
@click.option(
    "--pooling",
    type=click.Choice(["cls", "mean"]),
    default=None,
    help="Pooling of --text-encoder [default: the cache's].",
)
@click.option(
    "--proj",
    type=click.Path(dir_okay=False),
    default=None,
    help="Phase-1 projection checkpoint: needed for a backbone-feature cache.",
)
@click.option(
    "--head",
    type=click.Path(dir_okay=False),
    default=None,
    help="Diffusion-head checkpoint: re-rank each text query's cosine top-k (--topk) with it.",
)
@click.option(
    "--topk",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="With --head: candidates re-ranked per query.",
)
@click.option(
    "--audio-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Show each clip's file under this folder [default: a folder index's own folder].",
)
@click.option(
    "--exact",
    is_flag=True,
    help="Score every clip, even when a FAISS index lies beside the cache.",
)
@click.option(
    "--build-index",
    "index_factory",
    default=None,
    is_flag=False,
    flag_value="Flat",
    help="Build the FAISS index beside the cache first (optionally a faiss.index_factory "
    "string, e.g. --build-index IVF1024,Flat; bare: Flat, exact).",
)
@click.option(
    "--nprobe",
    type=click.IntRange(min=0),
    default=0,
    help="IVF indexes: lists probed per query [default: the index's own].",
)
@click.option(
    "--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Also write JSON."
)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, auto.")
@joint_model_option
@trust_checkpoint_option
def search(cache, query, queries_file, examples, k, json_out, **options):
    """Rank the clips of CACHE for each QUERY (embedded as the cache's captions were) and each
    --audio-example (embedded as its clips were). A FAISS index beside CACHE (`cache export
    --format faiss --out DIR-OF-CACHE`, or --build-index) is used when it matches the cache.

    \b
    diffatr search clotho_test.h5 "a dog barks" "rain on a tin roof" --k 5
    diffatr search joint.h5 --queries questions.txt --audio-dir clotho/evaluation --json hits.json
    diffatr search library.h5 --audio-example door_slam.wav --k 5
    """
    from ..atomic import atomic_open
    from ..experiments.search import (
        SearchConfig,
        check_queries,
        format_results,
        read_queries,
    )
    from ..experiments.search import search as run_search
    from ..outputs import check_outputs

    check_outputs({"--json": json_out})
    queries = check_queries(list(query)) if query else []
    if queries_file:
        queries += read_queries(queries_file)
    if not queries and not examples:
        check_queries([])
    factory = options["index_factory"]
    if factory and options["exact"]:
        raise click.UsageError("--exact and --build-index exclude each other")
    cfg = SearchConfig(
        k=k,
        text_encoder=options["text_encoder"],
        pooling=options["pooling"] or "",
        proj=options["proj"] or "",
        head=options["head"] or "",
        topk=options["topk"],
        audio_dir=options["audio_dir"] or "",
        device=options["device"],
        joint_model=options["joint_model"],
        trust_checkpoint=options["trust_checkpoint"],
        index="exact" if options["exact"] else ("build" if factory else "auto"),
        index_factory=factory or "Flat",
        nprobe=options["nprobe"],
    )
    found = run_search(cache, queries, cfg, examples=list(examples))
    click.echo(format_results(found))
    if json_out:
        with atomic_open(json_out, "w", encoding="utf-8") as f:
            json.dump(found, f, indent=2, ensure_ascii=False)
            f.write("\n")
        click.echo(f"wrote {json_out}")
