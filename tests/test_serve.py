"""`diffatr serve`: the JSON API (FastAPI's TestClient) answers what `search --json` answers,
uploads are searched as examples, files are served only from under the folder, every refusal is
4xx JSON, the searcher is loaded once; and the page in headless Chromium (query typed, results
shown, a player present, no console errors, a screenshot)."""

import json
import os
import socket
import threading
import time

import pytest
from click.testing import CliRunner

from diffatr.cli import main
from diffatr.experiments.search import SearchConfig
from diffatr.serve.files import served_file

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from diffatr.serve.app import create_app  # noqa: E402
from diffatr.serve.server import load_searcher  # noqa: E402


@pytest.fixture(scope="module")
def served(library):
    searcher = load_searcher(str(library["cache"]), SearchConfig())
    return library, searcher


@pytest.fixture
def client(served):
    return TestClient(create_app(served[1], max_upload_mb=1.0), raise_server_exceptions=False)


def _search_json(library, *args) -> dict:
    out = library["root"] / "cli.json"
    result = CliRunner().invoke(main, ["search", str(library["cache"]), *map(str, args),
                                       "--json", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text(encoding="utf-8"))


def test_text_query_answers_what_search_json_answers(served, client):
    library, _ = served
    got = client.get("/api/search", params={"q": "a dog barks", "k": 4})
    assert got.status_code == 200, got.text
    want = _search_json(library, "a dog barks", "--k", 4)
    assert got.json() == want


def test_upload_is_searched_as_an_example(served, client):
    library, _ = served
    path = library["folder"] / "birds" / "owl.ogg"
    with open(path, "rb") as f:
        got = client.post("/api/search?k=3", files={"audio": ("owl.ogg", f, "audio/ogg")})
    assert got.status_code == 200, got.text
    found = got.json()
    want = _search_json(library, "--audio-example", path, "--k", 3)
    assert found["results"][0]["query"] == "owl.ogg"
    assert found["results"][0]["hits"] == want["results"][0]["hits"]
    assert found["results"][0]["hits"][0]["clip_id"] == "birds/owl.ogg"
    assert not list(library["root"].glob("diffatr-example-*"))


def test_the_page_and_the_clips(served, client):
    library, _ = served
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/", "/app.js", "/style.css"):
        text = client.get(asset).text
        assert "http://" not in text and "https://" not in text  # nothing from elsewhere
    info = client.get("/api/info").json()
    assert info["clips"] == 6 and info["text"] and info["examples"] and info["audio"]
    clip = client.get("/audio/birds/lark.wav")
    assert clip.status_code == 200
    assert clip.content == (library["folder"] / "birds" / "lark.wav").read_bytes()


def test_refusals_are_4xx_json(client):
    bad = [
        (client.get("/api/search", params={"q": "  "}), 400),
        (client.get("/api/search", params={"q": "dog", "k": 0}), 400),
        (client.get("/api/search", params={"q": "dog", "k": "many"}), 422),
        (client.post("/api/search", data={"x": "1"}), 400),
        (client.post("/api/search", files={"audio": ("x.wav", b"not audio", "audio/wav")}), 400),
        (client.post("/api/search", files={"audio": ("x.wav", b"", "audio/wav")}), 400),
        (client.post("/api/search", files={"audio": ("big.wav", b"\0" * (1 << 21))}), 413),
        (client.get("/audio/%2E%2E/lib.h5"), 404),
        (client.get("/audio/birds/%2E%2E/%2E%2E/lib.h5"), 404),
        (client.get("/audio//etc/passwd"), 404),
        (client.get("/audio/nope.wav"), 404),
        (client.get("/no/such/page"), 404),
    ]
    for response, status in bad:
        assert response.status_code == status, (response.request.url, response.text)
        assert set(response.json()) == {"error"}, response.text
        assert "Traceback" not in response.text


def test_served_file_stays_in_the_folder(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.flac").write_bytes(b"a")
    (tmp_path / "secret.wav").write_bytes(b"s")
    os.symlink(tmp_path / "secret.wav", root / "out.wav")  # a link out of the folder
    os.symlink(tmp_path, root / "up")
    os.symlink(root / "sub" / "a.flac", root / "in.wav")  # a link inside it is fine
    assert served_file(str(root), "sub/a.flac") == str((root / "sub" / "a.flac").resolve())
    assert served_file(str(root), "sub/a.wav") == str((root / "sub" / "a.flac").resolve())
    assert served_file(str(root), "in.wav") == str((root / "sub" / "a.flac").resolve())
    for name in ("out.wav", "up/secret.wav", "../secret.wav", "sub/../../secret.wav",
                 str(tmp_path / "secret.wav"), "/etc/passwd", "sub//a.flac", "./sub/a.flac",
                 "C:/x.wav", "sub\\a.flac", "", "sub", "a\0.wav"):  # fmt: skip
        assert served_file(str(root), name) is None, name
    assert served_file("", "sub/a.flac") is None


def test_the_searcher_is_loaded_once(served, monkeypatch):
    """Requests never open the cache or build an encoder: both would fail here."""
    import diffatr.experiments.audio_query as audio_query
    import diffatr.experiments.search as search

    app = create_app(served[1])

    def refuse(*a, **k):
        raise AssertionError("loaded per request")

    monkeypatch.setattr(search, "Cache", refuse)
    monkeypatch.setattr(search, "query_encoder", refuse)
    monkeypatch.setattr(audio_query, "AudioQueryEncoder", refuse)
    client = TestClient(app, raise_server_exceptions=False)
    assert client.get("/api/search", params={"q": "rain"}).status_code == 200
    with open(served[0]["folder"] / "dog.wav", "rb") as f:
        assert client.post("/api/search", files={"audio": ("d.wav", f)}).status_code == 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live_server(served):
    import uvicorn

    port = _free_port()
    config = uvicorn.Config(create_app(served[1]), host="127.0.0.1", port=port, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


ROWS = "document.querySelectorAll('tr.hit').length"


def _wait(page, expression: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"never true: {expression}"
        time.sleep(0.1)


def test_the_page_in_a_browser(served, live_server, tmp_path):
    from browser import open_page

    library, _ = served
    with open_page(live_server + "/") as page:
        _wait(page, "document.body.dataset.loaded === '1'")
        page.evaluate("document.getElementById('q').value = 'a dog barks'")
        page.evaluate("document.getElementById('k').value = '4'")
        page.evaluate("document.getElementById('go').click()")
        _wait(page, "document.body.dataset.ready === '1'")
        assert page.evaluate(ROWS) == 4
        assert page.evaluate("document.querySelectorAll('tr.hit audio').length") == 4
        src = page.evaluate("document.querySelector('tr.hit audio').src")
        assert src.startswith(live_server + "/audio/")
        page.evaluate("document.body.dataset.ready = ''")
        doc = page.send("DOM.getDocument")
        node = page.send("DOM.querySelector", nodeId=doc["root"]["nodeId"], selector="#example")
        page.send("DOM.setFileInputFiles", nodeId=node["nodeId"],
                  files=[str(library["folder"] / "rain.flac")])  # fmt: skip
        page.evaluate("document.getElementById('go-audio').click()")
        _wait(page, "document.body.dataset.ready === '1'")
        first = page.evaluate("document.querySelector('tr.hit td.clip').textContent")
        assert first == "rain.flac"
        assert page.evaluate("document.querySelector('h2').textContent") == "sounds like rain.flac"
        shot = tmp_path / "serve.png"
        page.screenshot(shot)
        assert shot.stat().st_size > 1000
        assert page.errors() == []
        assert all(u.startswith((live_server, "data:", "blob:")) for u in page.requests)
