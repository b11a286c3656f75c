"""PANNs encoders: CNN14 features equal panns_inference's own model; ResNet38 has the official
parameter names and shapes; checkpoints load strictly or fail clearly; features are batch-invariant.

Random-weight checkpoints are built here (never downloaded), once per module.
"""

import argparse
import copy
import dataclasses
import hashlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from diffatr.errors import UserError
from diffatr.extract.panns import (
    MIN_SAMPLES,
    AudioEncoder,
    AudioEncoderConfig,
    build_model,
    check_state_dict,
    fold_batchnorm,
    load_panns_models,
    read_checkpoint,
)
from diffatr.extract.resnet38 import BasicBlock, ConvBlock, ResNet38


def randomise_batchnorm(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial BN statistics and scales, so a wrong BN (or a skipped one) shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))


def clips(n: int, seconds: float, seed: int = 0) -> torch.Tensor:
    """(n, L) noise plus a different tone per clip."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * 32000)) / 32000
    freqs = torch.linspace(200.0, 3000.0, n)[:, None]
    return 0.3 * torch.sin(2 * torch.pi * freqs * t) + 0.05 * torch.randn(n, len(t), generator=g)


def save_checkpoint(model: torch.nn.Module, path: Path) -> Path:
    torch.save({"model": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def cnn14(tmp_path_factory):
    """(checkpoint path, panns_inference Cnn14 holding the same random weights, eval mode)."""
    torch.manual_seed(0)
    model = build_model("cnn14")
    randomise_batchnorm(model, seed=1)
    path = save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "Cnn14_random.pth")
    return path, model.eval(), (path.stat().st_mtime_ns, path.stat().st_size)


@pytest.fixture(scope="module")
def encoder(cnn14):
    return AudioEncoder(AudioEncoderConfig(checkpoint=str(cnn14[0]), frames=True, device="cpu"))


@pytest.fixture(scope="module")
def encoder_bf16(cnn14):
    cfg = AudioEncoderConfig(checkpoint=str(cnn14[0]), frames=True, precision="bf16", device="cpu")
    return AudioEncoder(cfg)


def library_outputs(model: torch.nn.Module, waves: torch.Tensor) -> dict[str, np.ndarray]:
    """The library's own forward, with hooks at fc1's input and conv_block6's output."""
    seen = {}
    hooks = [
        model.fc1.register_forward_pre_hook(lambda m, args: seen.update(pre_fc1=args[0].clone())),
        model.conv_block6.register_forward_hook(
            lambda m, args, out: seen.update(frames=out.mean(dim=3).transpose(1, 2))
        ),
    ]
    try:
        with torch.no_grad():
            out = model(waves)
    finally:
        for h in hooks:
            h.remove()
    return {
        "pre_fc1": seen["pre_fc1"].numpy(),
        "embedding": out["embedding"].numpy(),
        "frames": seen["frames"].numpy(),
    }


def with_settings(encoder: AudioEncoder, **changes) -> AudioEncoder:
    """The same loaded model under other settings (saves rebuilding an 80M-parameter net)."""
    other = copy.copy(encoder)
    other.cfg = dataclasses.replace(encoder.cfg, **changes)
    return other


def test_cnn14_class_is_panns_inference_own_code(encoder):
    models = load_panns_models()
    package_dir = Path(models.__file__).parent
    assert package_dir.name == "panns_inference" and models.__file__.endswith("models.py")
    assert type(encoder.model) is models.Cnn14


def test_cnn14_features_equal_panns_inference(encoder, cnn14):
    model = cnn14[1]
    waves = clips(2, 1.2)
    ours = encoder.features(waves)
    ref = library_outputs(model, waves)
    for key in ("pre_fc1", "embedding", "frames"):
        assert ours[key].dtype == np.float32
        assert ours[key].shape == ref[key].shape, key
        scale = np.abs(ref[key]).max()
        assert scale > 1e-3 and ref[key].std() > 1e-4  # random weights still give signal
        np.testing.assert_allclose(ours[key], ref[key], rtol=1e-5, atol=1e-6 * scale, err_msg=key)
    assert ours["frames"].shape == (2, encoder.n_frames(waves.shape[1]), 2048)


def test_embed_picks_feature_and_frames(encoder):
    waves = clips(2, 1.0)
    feats, frames = encoder.embed(waves)
    full = encoder.features(waves)
    np.testing.assert_array_equal(feats, full["pre_fc1"])
    assert feats.shape == (2, encoder.dim) and encoder.dim == encoder.frame_dim == 2048
    assert len(frames) == 2 and frames[0].shape == (encoder.n_frames(waves.shape[1]), 2048)
    feats, frames = with_settings(encoder, feature="embedding", frames=False).embed(waves)
    assert frames is None
    np.testing.assert_allclose(feats, full["embedding"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_clip_alone_equals_clip_in_batch(request, precision):
    encoder = request.getfixturevalue("encoder" if precision == "fp32" else "encoder_bf16")
    waves = clips(3, 1.0, seed=5)
    batch = encoder.features(waves)
    # fp32: equal up to summation order. bf16: a different oneDNN kernel choice may flip a
    # rounding by one bf16 step (2^-8); padding or cropping would differ by far more.
    tolerance = 1e-5 if precision == "fp32" else 1e-2
    for i in range(len(waves)):
        alone = encoder.features(waves[i : i + 1])
        for key in ("pre_fc1", "embedding", "frames"):
            scale = np.abs(batch[key]).max()
            np.testing.assert_allclose(
                alone[key][0], batch[key][i], rtol=0, atol=tolerance * scale, err_msg=key
            )
    again = encoder.features(waves)
    np.testing.assert_array_equal(again["pre_fc1"], batch["pre_fc1"])  # same run, same bits


def test_short_clip_is_zero_padded_to_one_second(encoder):
    short = clips(1, 0.1)[0].numpy()  # 3,200 samples: too short for the 32x time pooling
    padded = encoder.prepare(short)
    assert padded.shape == (MIN_SAMPLES,) and padded.dtype == np.float32
    np.testing.assert_array_equal(padded[: len(short)], short)
    assert not padded[len(short) :].any()
    long = clips(1, 1.5)[0].numpy()
    assert encoder.prepare(long) is long or np.array_equal(encoder.prepare(long), long)
    feats, frames = encoder.embed(torch.from_numpy(padded)[None])
    assert np.isfinite(feats).all() and frames[0].shape == (3, 2048)
    with pytest.raises(ValueError, match="prepare"):
        encoder.embed(torch.from_numpy(short)[None])
    assert len(pickle.dumps(encoder.prepare)) < 500  # workers get the rule, not the model


def test_bf16_autocast_on_cpu_is_close_to_fp32(encoder, encoder_bf16):
    bf16 = encoder_bf16
    conv = bf16.model.conv_block1.conv2
    assert conv.weight.dtype == torch.bfloat16 and conv.bias is not None  # BN folded in
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    waves = clips(2, 1.0)
    a, b = encoder.features(waves), bf16.features(waves)
    for key in ("pre_fc1", "embedding"):
        assert b[key].dtype == np.float32
        norms = np.linalg.norm(a[key], axis=1) * np.linalg.norm(b[key], axis=1)
        cos = (a[key] * b[key]).sum(1) / norms
        assert (cos > 0.999).all(), (key, cos)
    assert not np.array_equal(a["pre_fc1"], b["pre_fc1"])  # autocast did run in bf16
    assert bf16.provenance()["settings"]["precision"] == "bf16"


def test_fold_batchnorm_keeps_the_function():
    torch.manual_seed(4)
    net = torch.nn.Sequential(ConvBlock(1, 4), BasicBlock(4, 8, stride=2), BasicBlock(8, 8))
    randomise_batchnorm(net, seed=6)
    net.eval()
    x = torch.randn(2, 1, 20, 16)
    with torch.no_grad():
        before = net(x)
        fold_batchnorm(net)
        after = net(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert net[1].downsample[1].bias is not None  # the shortcut's BN went into its conv
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-6)


def test_fp16_needs_cuda_and_options_are_checked():
    with pytest.raises(UserError, match="fp16 needs a CUDA"):
        AudioEncoder(AudioEncoderConfig(checkpoint="x.pth", precision="fp16", device="cpu"))
    for cfg, option in (
        (AudioEncoderConfig(encoder="vggish"), "--audio-encoder"),
        (AudioEncoderConfig(feature="logits"), "--audio-feature"),
        (AudioEncoderConfig(precision="int8"), "--precision"),
    ):
        with pytest.raises(UserError, match=option):
            AudioEncoder(cfg)


def test_checkpoint_errors_name_the_file_and_the_fix(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a pickle" * 100)
    no_model = tmp_path / "no_model.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, no_model)
    resnet_like = tmp_path / "resnet_like.pth"
    torch.save({"model": {"resnet.layer1.0.conv1.weight": torch.zeros(1)}}, resnet_like)
    cases = [
        ("", "needs a checkpoint"),
        (str(tmp_path / "Cnn14_mAP=0.431.pth"), "checkpoint not found"),
        (str(tmp_path), "not a file"),
        (str(garbage), "not a PyTorch checkpoint"),
        (str(no_model), "'model' entry"),
        (str(resnet_like), "--audio-encoder resnet38"),
    ]
    for path, message in cases:
        with pytest.raises(UserError, match=message) as info:
            AudioEncoder(AudioEncoderConfig(checkpoint=path, device="cpu"))
        if path:
            assert path in str(info.value)
        assert "--audio-checkpoint" in str(info.value) or "--audio-encoder" in str(info.value)


def test_state_dict_mismatch_lists_keys_and_shapes():
    model = torch.nn.Linear(2, 3)
    check_state_dict(model, {"weight": torch.zeros(3, 2), "bias": torch.zeros(3)}, "f.pth", "x")
    with pytest.raises(UserError, match=r"f.pth: does not fit cnn14 \(1 missing keys \(e.g. bias"):
        check_state_dict(model, {"weight": torch.zeros(3, 2)}, "f.pth", "cnn14")
    with pytest.raises(UserError, match=r"1 unexpected keys \(e.g. extra\)"):
        state = {"weight": torch.zeros(3, 2), "bias": torch.zeros(3), "extra": torch.zeros(1)}
        check_state_dict(model, state, "f.pth", "cnn14")
    with pytest.raises(UserError, match=r"weight has shape \(2, 2\), expected \(3, 2\)"):
        check_state_dict(model, {"weight": torch.zeros(2, 2), "bias": torch.zeros(3)}, "f", "x")


def test_released_style_checkpoints_load_weights_only(tmp_path):
    """NumPy training state beside the weights (as in the released files) is data: it loads
    with weights_only=True and NumPy allowed, no --trust-checkpoint needed."""
    path = tmp_path / "old_style.pth"
    rng_state = np.random.RandomState(0).get_state()  # numpy objects, as in the released files
    torch.save({"model": {"w": torch.ones(2)}, "sampler": {"random_state": rng_state}}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)  # plain weights_only refuses the NumPy values
    state = read_checkpoint(path)
    assert list(state) == ["w"] and torch.equal(state["w"], torch.ones(2))


def test_a_checkpoint_that_needs_full_unpickling_loads_only_when_trusted(tmp_path):
    path = tmp_path / "with_args.pth"  # old training scripts pickled their argparse options
    torch.save({"model": {"w": torch.ones(2)}, "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(UserError, match=r"with_args.pth: not loaded: it pickles argparse"):
        read_checkpoint(path)
    state = read_checkpoint(path, trust=True)
    assert list(state) == ["w"] and torch.equal(state["w"], torch.ones(2))


def test_checkpoint_is_never_modified_and_hash_is_recorded(cnn14, encoder):
    path, _, stat_when_saved = cnn14
    assert (path.stat().st_mtime_ns, path.stat().st_size) == stat_when_saved
    prov = encoder.provenance()
    assert prov["checkpoint_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert prov["encoder"] == "cnn14" and prov["feature_kind"] == "pre_fc1"
    assert prov["sample_rate"] == 32000
    settings = json.loads(json.dumps(prov["settings"]))
    assert settings["precision"] == "fp32" and settings["hop_size"] == 320
    assert settings["mel_bins"] == 64 and settings["min_samples"] == MIN_SAMPLES


def test_import_runs_no_panns_inference_package_code(tmp_path):
    """panns_inference/__init__.py would wget a label file into ~/panns_data at import."""
    code = (
        "import sys\n"
        "from diffatr.extract.panns import load_panns_models\n"
        "m = load_panns_models()\n"
        "bad = [k for k in sys.modules if k.split('.')[0] == 'panns_inference']\n"
        "assert not bad, bad\n"
        "print(m.Cnn14.__module__)\n"
    )
    env = {**os.environ, "HOME": str(tmp_path), "PATH": str(tmp_path)}  # no wget to be found
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "_diffatr_panns_inference.models"
    assert not (tmp_path / "panns_data").exists()


def official_resnet38_shapes(classes: int = 527) -> dict[str, tuple[int, ...]]:
    """state_dict names and shapes of ResNet38 as defined in audioset_tagging_cnn's
    pytorch/models.py, transcribed from that code:

        spectrogram_extractor = Spectrogram(n_fft=1024, ...)   # stft.conv_real / conv_imag
        logmel_extractor = LogmelFilterBank(sr=32000, n_fft=1024, n_mels=64, ...)  # melW
        bn0 = nn.BatchNorm2d(64)
        conv_block1 = ConvBlock(in_channels=1, out_channels=64)  # conv1, conv2, bn1, bn2
        resnet = _ResNet(block=_ResnetBasicBlock, layers=[3, 4, 6, 3], zero_init_residual=True)
            # layer1..4 with planes 64, 128, 256, 512; _make_layer adds to the first block of
            # layers 2-4 (stride 2): downsample = Sequential(AvgPool2d(2), conv1x1, BatchNorm2d)
            # _ResnetBasicBlock: conv1 = conv3x3, bn1, conv2 = conv3x3, bn2 (all convs bias=False)
        conv_block_after1 = ConvBlock(in_channels=512, out_channels=2048)
        fc1 = nn.Linear(2048, 2048); fc_audioset = nn.Linear(2048, classes_num, bias=True)
    """
    shapes: dict[str, tuple[int, ...]] = {
        "spectrogram_extractor.stft.conv_real.weight": (513, 1, 1024),
        "spectrogram_extractor.stft.conv_imag.weight": (513, 1, 1024),
        "logmel_extractor.melW": (513, 64),
    }

    def bn(name: str, c: int) -> None:
        for stat in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.{stat}"] = (c,)
        shapes[f"{name}.num_batches_tracked"] = ()

    def conv_block(name: str, c_in: int, c_out: int) -> None:
        shapes[f"{name}.conv1.weight"] = (c_out, c_in, 3, 3)
        shapes[f"{name}.conv2.weight"] = (c_out, c_out, 3, 3)
        bn(f"{name}.bn1", c_out)
        bn(f"{name}.bn2", c_out)

    bn("bn0", 64)
    conv_block("conv_block1", 1, 64)
    inplanes = 64
    stages = zip([3, 4, 6, 3], [64, 128, 256, 512], strict=True)  # layers=[3, 4, 6, 3]
    for stage, (blocks, planes) in enumerate(stages, start=1):
        for b in range(blocks):
            name = f"resnet.layer{stage}.{b}"
            c_in = inplanes if b == 0 else planes
            shapes[f"{name}.conv1.weight"] = (planes, c_in, 3, 3)
            bn(f"{name}.bn1", planes)
            shapes[f"{name}.conv2.weight"] = (planes, planes, 3, 3)
            bn(f"{name}.bn2", planes)
            if b == 0 and stage > 1:
                shapes[f"{name}.downsample.1.weight"] = (planes, inplanes, 1, 1)
                bn(f"{name}.downsample.2", planes)
        inplanes = planes
    conv_block("conv_block_after1", 512, 2048)
    shapes.update(
        {
            "fc1.weight": (2048, 2048),
            "fc1.bias": (2048,),
            "fc_audioset.weight": (classes, 2048),
            "fc_audioset.bias": (classes,),
        }
    )
    return shapes


def test_resnet38_parameter_names_and_shapes_are_the_official_ones():
    ours = {k: tuple(v.shape) for k, v in ResNet38().state_dict().items()}
    expected = official_resnet38_shapes()
    assert sorted(set(expected) - set(ours)) == []
    assert sorted(set(ours) - set(expected)) == []
    assert ours == expected
    assert len(ours) == 246
    assert ours["resnet.layer2.0.downsample.1.weight"] == (128, 64, 1, 1)
    assert ours["resnet.layer4.2.bn2.num_batches_tracked"] == ()


def test_resnet38_checkpoint_loads_strict_and_features_match_its_forward(tmp_path):
    torch.manual_seed(2)
    model = ResNet38()
    randomise_batchnorm(model, seed=3)
    path = save_checkpoint(model, tmp_path / "ResNet38_random.pth")
    enc = AudioEncoder(AudioEncoderConfig(encoder="resnet38", checkpoint=str(path), frames=True))
    waves = clips(2, 1.0)
    ours = enc.features(waves)
    seen = {}
    model.eval().fc1.register_forward_pre_hook(lambda m, args: seen.update(z=args[0].clone()))
    with torch.no_grad():
        ref = model(waves)
    scale = np.abs(ours["pre_fc1"]).max()
    assert scale > 1e-3
    np.testing.assert_allclose(ours["pre_fc1"], seen["z"].numpy(), rtol=1e-5, atol=1e-6 * scale)
    np.testing.assert_allclose(ours["embedding"], ref["embedding"].numpy(), rtol=1e-5, atol=1e-6)
    assert ours["frames"].shape == (2, enc.n_frames(waves.shape[1]), 2048)


def test_random_weights_checkpoint_is_seeded_and_said_loudly(capsys, monkeypatch):
    """--audio-checkpoint random:SEED: the network as build_model makes it under that seed, no
    file read, the global RNG untouched, a warning, and RANDOM WEIGHTS in the cache's encoder.
    (A small stand-in network: building CNN14 twice costs seconds.)"""
    import diffatr.extract.panns as panns

    monkeypatch.setattr(panns, "build_model", lambda encoder: torch.nn.Linear(8, 8))
    before = torch.random.get_rng_state()
    enc = AudioEncoder(AudioEncoderConfig(checkpoint="random:3", device="cpu"))
    assert torch.equal(torch.random.get_rng_state(), before)
    assert "RANDOM weights" in capsys.readouterr().err
    torch.manual_seed(3)
    want = torch.nn.Linear(8, 8).state_dict()
    got = enc.model.state_dict()
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)
    prov = enc.provenance()
    assert prov["encoder"] == "cnn14 RANDOM WEIGHTS (seed 3)" and prov["random_weights_seed"] == 3
    assert prov["checkpoint_sha256"] == ""
    for bad in ("random:", "random:x", "random:-1"):
        with pytest.raises(UserError, match="random weights take random:SEED"):
            AudioEncoder(AudioEncoderConfig(checkpoint=bad, device="cpu"))
