"""CLAP in transformers format -> joint-space caches: for clips within the window the vectors
equal transformers' own ClapProcessor + ClapModel one clip at a time; longer clips follow the
documented window policy, deterministically (alone = in a batch = on another run); captions
equal processor(text, padding=True) + get_text_features. A tiny random CLAP (unfused and fused)
with a tiny byte-level BPE tokenizer is built here."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from joint_helpers import write_clips

from diffatr.cache import Cache, verify
from diffatr.cli import main
from diffatr.errors import UserError
from diffatr.extract import load_audio
from diffatr.extract.joint import JointConfig, Runtime, load_joint, load_joint_text_encoder
from diffatr.extract.joint.clap import window_starts

RATE = 8000  # the tiny feature extractor's rate; its window is 1 s
CAPTIONS = ["a dog barks", "rain on a roof, then thunder", "birds", "A car passes by quickly"]


def _tokenizer(folder):
    from transformers import RobertaTokenizer

    chars = sorted(set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.,!?'\"") | {"Ġ"})
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}
    vocab.update({c: i + 5 for i, c in enumerate(chars)})
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return RobertaTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt")), len(vocab)


def _clap_folder(root, fused: bool):
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor

    folder = root / ("clap_fused" if fused else "clap")
    folder.mkdir()
    tokenizer, vocab_size = _tokenizer(folder)
    fe = ClapFeatureExtractor(
        feature_size=16, sampling_rate=RATE, hop_length=160, max_length_s=1, fft_window_size=256,
        frequency_min=50, frequency_max=4000, truncation="fusion" if fused else "rand_trunc",
    )  # fmt: skip
    text = dict(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=66, pad_token_id=1, bos_token_id=0,
        eos_token_id=2,
    )  # fmt: skip
    audio = dict(
        num_mel_bins=16, spec_size=32, patch_size=4, patch_stride=4, window_size=4,
        depths=[1, 1], num_attention_heads=[2, 4], patch_embeds_hidden_size=16, hidden_size=32,
        enable_fusion=fused, projection_dim=8,
    )  # fmt: skip
    torch.manual_seed(1 + fused)
    config = ClapConfig(text_config=text, audio_config=audio, projection_dim=8)
    ClapModel(config).eval().save_pretrained(folder)
    ClapProcessor(feature_extractor=fe, tokenizer=tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def clap(tmp_path_factory):
    return _clap_folder(tmp_path_factory.mktemp("clap"), fused=False)


@pytest.fixture(scope="module")
def reference(clap):
    """transformers' own pipeline, one clip (or one caption list) at a time."""
    from transformers import ClapModel, ClapProcessor

    processor = ClapProcessor.from_pretrained(clap)
    model = ClapModel.from_pretrained(clap).eval()

    def audio(wave: np.ndarray) -> np.ndarray:
        inputs = processor(audio=wave, sampling_rate=RATE, return_tensors="pt")
        with torch.no_grad():
            return model.get_audio_features(**inputs).pooler_output[0].numpy()

    def text(captions: list[str]) -> np.ndarray:
        inputs = processor(text=captions, padding=True, return_tensors="pt")
        with torch.no_grad():
            return model.get_text_features(**inputs).pooler_output.numpy()

    return audio, text


def test_window_starts():
    assert window_starts(500, 1000) == [0] and window_starts(1000, 1000) == [0]
    assert window_starts(1001, 1000) == [0, 1]
    assert window_starts(2500, 1000) == [0, 1000, 1500]


def test_clap_end_to_end_matches_transformers(clap, reference, tmp_path):
    ref_audio, ref_text = reference
    audio_dir = tmp_path / "audio"
    lengths = {"a.wav": 0.6, "b.wav": 1.0, "c.wav": 0.6, "long.wav": 2.3}
    write_clips(audio_dir, lengths, rate=RATE)
    captions = tmp_path / "audiocaps_test.csv"
    captions.write_text(
        "file_name,caption\n"
        + "".join(f'{n},"{c}"\n' for n, c in zip(lengths, CAPTIONS, strict=True))
    )
    out = tmp_path / "clap.h5"
    cmd = [
        "extract", str(captions), "--audio-dir", str(audio_dir), "--out", str(out),
        "--joint-model", str(clap), "--batch-size", "2", "--workers", "0", "--device", "cpu",
        "--tokens",
    ]  # fmt: skip
    result = CliRunner().invoke(main, cmd)
    assert result.exit_code == 0, result.output
    assert verify(out).ok, verify(out).errors
    with Cache(out) as cache:
        a, t = cache.embeddings("audio")[:], cache.embeddings("text")[:]
        ids, attrs = cache.audio_ids(), cache.side_attrs("text")
        assert cache.side_attrs("audio")["sample_rate"] == RATE
    assert attrs["encoder"] == "joint:clap" and attrs["settings"]["joint_kind"] == "clap"
    assert attrs["settings"]["text_encoder"] is None
    assert attrs["settings"]["joint_model"] == str(clap)
    for row, name in enumerate(ids):
        wave = load_audio(audio_dir / name, RATE)
        if len(wave) <= RATE:  # within the window: transformers' own result
            np.testing.assert_allclose(a[row], ref_audio(wave), atol=1e-5)
        else:  # documented policy: mean of the normalised windows' vectors, normalised
            parts = [ref_audio(wave[s : s + RATE]) for s in window_starts(len(wave), RATE)]
            want = np.mean(parts, axis=0)
            np.testing.assert_allclose(a[row], want / np.linalg.norm(want), atol=1e-5)
    np.testing.assert_allclose(t, ref_text(CAPTIONS), atol=1e-5)
    q = load_joint_text_encoder(str(clap)).encode(CAPTIONS)
    np.testing.assert_allclose(q.numpy(), t, atol=1e-5)


def test_long_clips_are_deterministic_and_batch_invariant(clap):
    audio, _, _ = load_joint(JointConfig(model=str(clap)), Runtime(text=False))
    g = torch.Generator().manual_seed(0)
    waves = 0.1 * torch.randn(3, int(2.7 * RATE), generator=g)
    batch = audio.features(waves.numpy())
    alone = torch.cat([audio.features(w[None].numpy()) for w in waves])
    torch.testing.assert_close(batch, alone, atol=1e-6, rtol=0)
    torch.testing.assert_close(audio.features(waves.numpy()), batch, atol=0, rtol=0)
    torch.testing.assert_close(batch.norm(dim=1), torch.ones(3))


def test_fused_clap_is_deterministic(tmp_path):
    """Fused models: transformers sets a random `is_longer` in a batch of short clips; ours
    gives each clip what it gets alone, on every run."""
    from transformers import ClapModel, ClapProcessor

    folder = _clap_folder(tmp_path, fused=True)
    audio, _, _ = load_joint(JointConfig(model=str(folder)), Runtime(text=False))
    waves = 0.1 * torch.randn(3, RATE // 2, generator=torch.Generator().manual_seed(2)).numpy()
    got = audio.features(waves)
    processor, model = ClapProcessor.from_pretrained(folder), ClapModel.from_pretrained(folder)
    for k, wave in enumerate(waves):
        inputs = processor(audio=wave, sampling_rate=RATE, return_tensors="pt")
        with torch.no_grad():
            want = model.eval().get_audio_features(**inputs).pooler_output[0]
        torch.testing.assert_close(got[k], want, atol=1e-5, rtol=0)
    assert torch.allclose(F.normalize(got, dim=-1), got, atol=1e-6)


def test_a_hub_name_in_the_local_cache(clap, tmp_path, monkeypatch):
    """`--joint-model org/name` finds a snapshot in the local Hugging Face cache (no network)."""
    import shutil

    from huggingface_hub import constants

    from diffatr.checkpoint_kinds import recognise_joint

    repo = tmp_path / "hub" / "models--someone--tiny-clap"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abc")
    shutil.copytree(clap, repo / "snapshots" / "0123abc")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    rec = recognise_joint("someone/tiny-clap")
    assert rec.kind == "clap" and rec.folder == repo / "snapshots" / "0123abc"
    text = load_joint_text_encoder("someone/tiny-clap")
    want = load_joint_text_encoder(str(clap)).encode(CAPTIONS)
    torch.testing.assert_close(text.encode(CAPTIONS), want)
    with pytest.raises(UserError, match="no model of that name in the local Hugging Face cache"):
        recognise_joint("someone/absent-clap")
