"""The web app of `diffatr serve`: one static page and a JSON API over a `Searcher` that was
loaded once, before the first request.

Reads: the page's files (package data), uploaded audio examples (spooled to a temporary file
that is removed after the query), clips under the served folder. Writes nothing else.

Routes:
    GET  /                  the page (static/index.html); /app.js, /style.css beside it
    GET  /api/info          {"cache", "clips", "encoder", "text", "examples", "audio"}
    GET  /api/search?q=TEXT&k=K        what `search --json` writes for that query
    POST /api/search?k=K    multipart field "audio": an audio example, the same JSON
    GET  /audio/NAME        a clip's file, only under the served folder (`files.served_file`)
Every refusal is JSON {"error": "..."} with a 4xx status (400 bad query, 404 unknown file,
413 upload too large, 422 malformed request); an unexpected failure is a 500 with a one-line
error, never a traceback page. One lock serialises searches: the encoders are not re-entrant.
"""

import os
import tempfile
import threading
from importlib import resources
from pathlib import Path

from ..errors import UserError
from ..experiments.search import Searcher
from .files import served_file

PAGE_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
# The page loads nothing from elsewhere; players may play the uploaded example from a blob URL.
CSP = "default-src 'self'; media-src 'self' blob:; img-src 'self' data:; object-src 'none'"
MAX_K = 1000


class TooLarge(Exception):
    pass


def create_app(searcher: Searcher, max_upload_mb: float = 20.0):
    """The FastAPI application serving `searcher` (see the module docstring)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, Response
    from starlette.exceptions import HTTPException

    app = FastAPI(title="diffatr search", docs_url=None, redoc_url=None, openapi_url=None)
    lock = threading.Lock()
    limit = int(max_upload_mb * 1024 * 1024)
    static = resources.files("diffatr.serve") / "static"
    pages = {route: ((static / name).read_bytes(), kind) for route, (name, kind) in
             PAGE_FILES.items()}  # fmt: skip

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(HTTPException)
    async def http_error(_request, exc):
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request, exc):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return error(422, f"{where}: {first.get('msg', 'malformed request')}")

    @app.exception_handler(Exception)
    async def failure(_request, exc):
        return error(500, f"internal error ({type(exc).__name__}); see the server's log")

    @app.middleware("http")
    async def headers(request: Request, call_next):
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    def page(route: str):
        body, kind = pages[route]
        return Response(body, media_type=kind, headers={"Cache-Control": "no-cache"})

    for route in PAGE_FILES:
        app.add_api_route(route, lambda route=route: page(route), methods=["GET"])

    @app.get("/api/info")
    def info():
        return {
            "cache": searcher.cache_path,
            "clips": len(searcher.ids),
            "encoder": searcher.describe(),
            "text": searcher.text_encoder is not None,
            "examples": searcher.audio_encoder is not None,
            "audio": bool(searcher.audio_dir),
            "index": "faiss" if searcher.index is not None else "exact",
        }

    def check_k(k: int) -> None:
        if not 1 <= k <= MAX_K:
            raise UserError(f"k={k}: must be 1 to {MAX_K}")

    def run(**kwargs):
        try:
            with lock:
                return searcher.search(**kwargs)
        except UserError as e:
            return error(400, str(e))

    @app.get("/api/search")
    def search_text(q: str = "", k: int = 10):
        try:
            check_k(k)
            if not q.strip():
                raise UserError("q is empty: give the words to search for")
        except UserError as e:
            return error(400, str(e))
        return run(queries=[q], k=k)

    @app.post("/api/search")
    async def search_example(request: Request, k: int = 10):
        try:
            check_k(k)
        except UserError as e:
            return error(400, str(e))
        if int(request.headers.get("content-length") or 0) > limit + 64 * 1024:
            return error(413, f"upload larger than {max_upload_mb:g} MB")
        form = await request.form(max_files=1, max_fields=4)
        upload = form.get("audio")
        if upload is None or isinstance(upload, str):
            return error(400, 'no audio file: send it as the multipart field "audio"')
        name = Path(upload.filename or "example").name
        suffix = Path(name).suffix.lower()[:8]
        fd, tmp = tempfile.mkstemp(prefix="diffatr-example-", suffix=suffix)
        try:
            try:
                with os.fdopen(fd, "wb") as f:
                    size = 0
                    while chunk := await upload.read(1 << 20):
                        size += len(chunk)
                        if size > limit:
                            raise TooLarge
                        f.write(chunk)
            except TooLarge:
                return error(413, f"upload larger than {max_upload_mb:g} MB")
            if size == 0:
                return error(400, f"{name}: empty upload")
            return run(examples=[tmp], labels=[name], k=k)
        finally:
            await form.close()
            os.unlink(tmp)

    @app.get("/audio/{name:path}")
    def audio(name: str):
        path = served_file(searcher.audio_dir, name)
        if path is None:
            return error(404, f"{name}: no such clip under the served folder")
        return FileResponse(path)

    return app
