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


def _mismatched(folder, truncation: str):
    """The same model with its extractor's `truncation` set to `truncation` (what a user gets
    saving a fused extractor beside an unfused model, or the reverse)."""
    import shutil

    other = folder.parent / f"{folder.name}_{truncation}"
    shutil.copytree(folder, other)
    for name in ("preprocessor_config.json", "processor_config.json"):  # 4.x / 5.x layouts
        path = other / name
        if path.is_file():
            conf = json.loads(path.read_text())
            conf.get("feature_extractor", conf)["truncation"] = truncation
            path.write_text(json.dumps(conf))
    return other


@pytest.mark.parametrize("fused", [False, True])
def test_an_extractor_whose_truncation_disagrees_with_the_model_is_matched(tmp_path, fused):
    """transformers itself fails on such a folder (`expected input[1, 4, ...] to have 1
    channels`); ours feeds the model the shape it takes: the vectors equal those
    of the same model with the matching extractor."""
    from transformers import ClapModel, ClapProcessor

    folder = _clap_folder(tmp_path, fused=fused)
    wrong = _mismatched(folder, "rand_trunc" if fused else "fusion")
    processor = ClapProcessor.from_pretrained(wrong)
    assert (processor.feature_extractor.truncation == "fusion") != fused  # the trap is set
    wave = 0.1 * torch.randn(RATE // 2, generator=torch.Generator().manual_seed(3)).numpy()
    inputs = processor(audio=wave, sampling_rate=RATE, return_tensors="pt")
    if not fused:  # transformers' own pipeline fails on it (4 channels for a 1-channel model)
        with pytest.raises(RuntimeError, match="channels"), torch.no_grad():
            ClapModel.from_pretrained(wrong).eval().get_audio_features(**inputs)
    right, _, _ = load_joint(JointConfig(model=str(folder)), Runtime(text=False))
    audio, _, _ = load_joint(JointConfig(model=str(wrong)), Runtime(text=False))
    torch.testing.assert_close(audio.features(wave[None]), right.features(wave[None]))
    assert ClapProcessor.from_pretrained(wrong).feature_extractor.truncation != (
        "fusion" if fused else "rand_trunc"
    )  # the folder is left as it was


def test_text_encoder_option_is_refused_for_clap(clap, tmp_path):
    """A CLAP folder carries its tokenizer; `search --text-encoder` on a CLAP cache used to
    swap in another tokenizer silently (the report still named only the CLAP model)."""
    with pytest.raises(UserError, match="brings its own tokenizer and text model"):
        load_joint_text_encoder(str(clap), text_encoder=str(tmp_path))
    write_clips(tmp_path / "audio", {"a.wav": 0.5, "b.wav": 0.5}, rate=RATE)
    captions = tmp_path / "c.csv"
    captions.write_text("file_name,caption\na.wav,a dog barks\nb.wav,birds\n")
    out = tmp_path / "clap.h5"
    cmd = ["extract", str(captions), "--audio-dir", str(tmp_path / "audio"), "--out", str(out),
           "--joint-model", str(clap), "--workers", "0"]  # fmt: skip
    assert CliRunner().invoke(main, cmd).exit_code == 0
    ok = CliRunner().invoke(main, ["search", str(out), "a dog"])
    assert ok.exit_code == 0, ok.output
    result = CliRunner().invoke(main, ["search", str(out), "a dog", "--text-encoder", str(clap)])
    assert result.exit_code == 1 and "drop --text-encoder" in result.output, result.output
    assert "Traceback" not in result.output


def test_the_towers_as_called_equal_get_features(clap):
    """The towers are called through their submodules (valid in transformers 4.40 to 5.x);
    that equals this transformers' own get_*_features."""
    from transformers import ClapModel, ClapProcessor

    audio, text, _ = load_joint(JointConfig(model=str(clap)), Runtime())
    processor = ClapProcessor.from_pretrained(clap)
    model = ClapModel.from_pretrained(clap).eval()
    wave = 0.1 * torch.randn(RATE, generator=torch.Generator().manual_seed(4)).numpy()
    inputs = processor(audio=wave, sampling_rate=RATE, return_tensors="pt")
    with torch.no_grad():
        want = model.get_audio_features(**inputs)
        want_t = model.get_text_features(
            **processor(text=CAPTIONS, padding=True, return_tensors="pt")
        )
    want = getattr(want, "pooler_output", want)  # a tensor in 4.x, an output in 5.x
    want_t = getattr(want_t, "pooler_output", want_t)
    torch.testing.assert_close(audio.features(wave[None]), want, atol=1e-5, rtol=0)
    torch.testing.assert_close(text.encode(CAPTIONS), want_t, atol=1e-5, rtol=0)


def test_loading_draws_no_transformers_bar_and_restores_the_switch(clap, capfd):
    from transformers.utils import logging as hf_logging

    before = hf_logging.is_progress_bar_enabled()
    capfd.readouterr()
    load_joint(JointConfig(model=str(clap)), Runtime())
    err = capfd.readouterr().err
    assert "Loading weights" not in err, err
    assert hf_logging.is_progress_bar_enabled() == before
    hf_logging.disable_progress_bar()
    try:
        load_joint(JointConfig(model=str(clap)), Runtime())
        assert not hf_logging.is_progress_bar_enabled()  # a user's own setting kept
    finally:
        hf_logging.enable_progress_bar() if before else None
