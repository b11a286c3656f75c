"""Start `diffatr serve`: load the cache's searcher once, then run the web app under uvicorn
until interrupted.

Reads: the cache, its encoders and index (through `experiments.search.Searcher`). Writes
nothing; logs one line per request (uvicorn's access log) on stderr.
"""

from dataclasses import dataclass

from ..errors import UserError
from ..experiments.search import SearchConfig, Searcher
from ..progress import warn

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"  # loopback: only this machine can connect
    port: int = 8000
    max_upload_mb: float = 20.0  # largest audio example accepted


def load_searcher(cache: str, cfg: SearchConfig) -> Searcher:
    """Both query kinds where the cache allows them; say which one it does not."""
    searcher = Searcher(cache, cfg, text=True, audio=True, lenient=True)
    for side, why in searcher.refused.items():
        kind = "text queries" if side == "text" else "audio examples"
        warn(f"no {kind} on this page: {why}")
    return searcher


def serve(cache: str, cfg: SearchConfig, serve_cfg: ServeConfig = ServeConfig()) -> None:
    try:
        import uvicorn

        from .app import create_app
    except ImportError as e:
        raise UserError(
            f"diffatr serve needs the serve extra ({e.name} is missing): "
            "pip install 'diffatr[serve]'"
        ) from None
    if serve_cfg.max_upload_mb <= 0:
        raise UserError("--max-upload-mb must be above 0")
    searcher = load_searcher(cache, cfg)
    if serve_cfg.host not in LOOPBACK:
        warn(
            f"--host {serve_cfg.host}: other machines can reach this page, search the cache and "
            "play every file under the served folder"
        )
    app = create_app(searcher, serve_cfg.max_upload_mb)
    where = "no audio folder: no players" if not searcher.audio_dir else searcher.audio_dir
    print(
        f"serving {cache} ({len(searcher.ids)} clips; {where}) on "
        f"http://{serve_cfg.host}:{serve_cfg.port}/ (Ctrl-C stops)",
        flush=True,
    )
    uvicorn.run(app, host=serve_cfg.host, port=serve_cfg.port, log_level="warning")
