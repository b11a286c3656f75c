"""`diffatr serve`: a local web page to search a cache by text or example and listen."""

import click

from . import main
from .options import CACHE, joint_model_option, trust_checkpoint_option


@main.command()
@click.argument("cache", type=CACHE)
@click.option(
    "--audio-dir",
    type=click.Path(file_okay=False, exists=True),
    default=None,
    help="Serve the clips' files from this folder (only files under it) "
    "[default: a folder index's own folder].",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="TCP port."
)
@click.option(
    "--text-encoder", default="", help="Embed queries with this model [default: the cache's]."
)
@click.option("--proj", type=click.Path(dir_okay=False), default=None, help="Phase-1 projection.")
@click.option(
    "--head", type=click.Path(dir_okay=False), default=None, help="Re-rank text queries with it."
)
@click.option(
    "--topk",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="With --head: candidates re-ranked per query.",
)
@click.option(
    "--max-upload-mb",
    type=click.FloatRange(min=0, min_open=True),
    default=20.0,
    show_default=True,
    help="Largest audio example accepted.",
)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, auto.")
@joint_model_option
@trust_checkpoint_option
def serve(cache, audio_dir, host, port, max_upload_mb, **options):
    """Serve a search page for CACHE on http://HOST:PORT/ (and a JSON API: GET
    /api/search?q=TEXT&k=K, POST /api/search with an audio file). Needs the serve extra.

    \b
    diffatr serve library.h5
    diffatr serve clotho_test.h5 --audio-dir clotho/evaluation --port 8080
    """
    from ..experiments.search import SearchConfig
    from ..serve.server import ServeConfig
    from ..serve.server import serve as run_server

    cfg = SearchConfig(
        text_encoder=options["text_encoder"],
        proj=options["proj"] or "",
        head=options["head"] or "",
        topk=options["topk"],
        audio_dir=audio_dir or "",
        device=options["device"],
        joint_model=options["joint_model"],
        trust_checkpoint=options["trust_checkpoint"],
    )
    run_server(cache, cfg, ServeConfig(host=host, port=port, max_upload_mb=max_upload_mb))
