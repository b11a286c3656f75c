"""Training phase 1 on cached backbone features (diffatr/contrastive/train.py, checkpoint.py):
it learns, the checkpoint and its logs, reproducibility, refusals."""

import csv
import json
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from diffatr.cache import (
    BackboneSyntheticConfig,
    SyntheticConfig,
    load_tensors,
    make_synthetic,
    make_synthetic_backbone,
)
from diffatr.contrastive import ContrastiveConfig, ProjectionHeads, load_projection, nt_xent
from diffatr.contrastive import train as train_module
from diffatr.contrastive.train import SELECT_ON, epoch_batches, train_contrastive, validate
from diffatr.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = BackboneSyntheticConfig(captions_per_clip=(1, 3, 5), audio_dim=64, text_dim=48)
CFG = ContrastiveConfig(joint_dim=32, epochs=4, batch_size=16, lr=1e-3, device="cpu")
VAL_CLIPS = 100


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    root = tmp_path_factory.mktemp("contrastive")
    specs = {
        "train": replace(DATA, n_clips=300, seed=1),
        "val": replace(DATA, n_clips=VAL_CLIPS, seed=2),
        "val_other_map": replace(DATA, n_clips=VAL_CLIPS, seed=2, map_seed=7),
        "val_wide": replace(DATA, n_clips=VAL_CLIPS, seed=2, audio_dim=80),
    }
    paths = {name: root / f"{name}.h5" for name in specs}
    for name, cfg in specs.items():
        make_synthetic_backbone(paths[name], cfg, split=name)
    paths["joint"] = root / "joint.h5"
    make_synthetic(paths["joint"], SyntheticConfig(n_clips=40, dim=32), split="train")
    return paths


def train(caches, out, cfg=CFG, **changes):
    return train_contrastive(
        caches["train"], caches["val"], out, replace(cfg, **changes), False, lambda _: None
    )


@pytest.fixture(scope="module")
def trained(caches, tmp_path_factory):
    out = tmp_path_factory.mktemp("proj") / "sub" / "proj.pt"  # missing folder: created
    return train(caches, out), out


def without_times(history):
    return [{k: v for k, v in row.items() if "seconds" not in k} for row in history]


def untrained(seed=0):
    torch.manual_seed(seed)
    return ProjectionHeads(DATA.audio_dim, DATA.text_dim, CFG.joint_dim)


def test_training_lowers_the_loss_and_learns_retrieval(trained, caches, tmp_path) -> None:
    proj, _ = trained
    history = proj.meta["history"]
    frozen = train(caches, tmp_path / "frozen.pt", lr=0.0).meta["history"]
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]  # observed: 2.55 -> 0.52
    assert all(h["loss"] < f["loss"] for h, f in zip(history, frozen, strict=True))
    chance = 100 / VAL_CLIPS
    before = validate(untrained(), load_tensors(caches["val"]), "cpu")["t2a_R@1"]
    best = proj.meta["val_metrics"]
    assert best["t2a_R@1"] > 8 * chance and best["a2t_R@1"] > 8 * chance  # observed 14.5, 18.0
    assert best["t2a_R@1"] > before + 10 and frozen[-1]["t2a_R@1"] < before + 5


def test_a_projection_only_fits_splits_of_its_encoders(trained, caches) -> None:
    proj, _ = trained
    other = validate(proj.heads, load_tensors(caches["val_other_map"]), "cpu")
    assert other["t2a_R@1"] < 5 * 100 / VAL_CLIPS < proj.meta["val_metrics"]["t2a_R@1"]


def test_checkpoint_is_a_plain_dict_with_its_config(trained, caches) -> None:
    _, out = trained
    blob = torch.load(out, map_location="cpu", weights_only=True)
    assert blob["format"] == "diffatr-projection" and blob["version"] == 1
    assert blob["config"] == asdict(CFG)
    assert (blob["audio_dim"], blob["text_dim"]) == (64, 48)
    assert set(blob["state_dict"]) == {
        f"{side}.{layer}.{kind}" for side in ("audio", "text") for layer in (0, 2)
        for kind in ("weight", "bias")
    }  # fmt: skip
    assert blob["train_cache"] == str(caches["train"]) and blob["val_cache"] == str(caches["val"])
    assert blob["encoders"]["audio"]["encoder"] == "synthetic-cnn14"
    assert blob["encoders"]["text"]["settings"]["text_dim"] == 48
    history = blob["history"]
    assert [row["epoch"] for row in history] == list(range(1, CFG.epochs + 1))
    assert [row["lr"] for row in history] == [CFG.lr] * CFG.epochs
    score = [sum(row[k] for k in SELECT_ON) for row in history]
    assert blob["epoch"] == 1 + int(np.argmax(score))
    logged = history[blob["epoch"] - 1]
    assert blob["val_metrics"] == {
        k: v for k, v in logged.items() if k.startswith(("t2a_", "a2t_"))
    }
    assert not list(out.parent.glob("*.partial"))


def test_logs_beside_the_checkpoint(trained) -> None:
    proj, out = trained
    log = json.loads(out.with_name("proj.pt.log.json").read_text())
    assert without_times(log) == proj.meta["history"]  # the checkpoint holds no wall clock
    assert all(row["seconds"] > 0 and row["train_seconds"] > 0 for row in log)
    assert out.with_name("proj.pt.log.png").read_bytes()[:4] == b"\x89PNG"
    with open(out.with_name("proj.pt.log.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(log) and list(rows[0]) == list(log[0])
    for row, want in zip(rows, log, strict=True):
        assert {k: float(v) for k, v in row.items()} == pytest.approx(want)


def test_loaded_weights_give_the_logged_validation_metrics(trained, caches) -> None:
    proj, out = trained
    loaded = load_projection(out)
    assert loaded.config == CFG and loaded.meta["epoch"] == proj.meta["epoch"]
    for name, tensor in proj.heads.state_dict().items():
        assert torch.equal(loaded.heads.state_dict()[name], tensor), name
    metrics = validate(loaded.heads, load_tensors(caches["val"]), "cpu")
    assert metrics == pytest.approx(proj.meta["val_metrics"])


def test_the_best_epoch_is_kept_and_a_crash_loses_no_finished_epoch(
    caches, tmp_path, monkeypatch
) -> None:
    """Validation scores made to peak at epoch 2: the checkpoint holds epoch 2's weights, on
    disk as soon as epoch 2 ends, whether the run finishes or dies in epoch 4."""
    states, fake = [], [10.0, 30.0, 20.0, 0.0]

    def scripted(heads, val, device):
        states.append({k: v.clone() for k, v in heads.state_dict().items()})
        if len(states) == 4:
            raise RuntimeError("killed")
        return {**validate(heads, val, device), **dict.fromkeys(SELECT_ON[1:], 0.0),
                "t2a_R@1": fake[len(states) - 1]}  # fmt: skip

    monkeypatch.setattr(train_module, "validate", scripted)
    for name, epochs in (("done.pt", 3), ("crashed.pt", 4)):
        states.clear()
        try:
            proj = train(caches, tmp_path / name, epochs=epochs)
            assert proj.meta["epoch"] == 2
        except RuntimeError:
            assert epochs == 4
        saved = load_projection(tmp_path / name)
        assert saved.meta["epoch"] == 2 and saved.meta["val_metrics"]["t2a_R@1"] == 30.0
        for key, tensor in saved.heads.state_dict().items():
            assert torch.equal(tensor, states[1][key]), key
        assert not torch.equal(states[2]["audio.0.weight"], states[1]["audio.0.weight"])
        log = json.loads((tmp_path / f"{name}.log.json").read_text())
        assert len(log) == 3


def test_same_seed_same_checkpoint(trained, caches, tmp_path) -> None:
    proj, _ = trained
    again = train(caches, tmp_path / "again.pt")
    for name, tensor in proj.heads.state_dict().items():
        assert torch.equal(again.heads.state_dict()[name], tensor), name
    assert without_times(again.meta["history"]) == without_times(proj.meta["history"])
    for changes in ({"seed": 1}, {"exclude_siblings": False}):
        other = train(caches, tmp_path / "other.pt", **changes)
        diff = (other.heads.audio[0].weight - proj.heads.audio[0].weight).abs().max()
        assert diff > 1e-4, changes


def test_batches_are_random_rows_with_siblings_masked(caches) -> None:
    data = load_tensors(caches["train"])
    rows = torch.nonzero(data.audio_index >= 0).squeeze(1)
    batches = epoch_batches(rows, 16, torch.Generator().manual_seed(0))
    assert batches.shape == (len(rows) // 16, 16)
    assert len(set(batches.flatten().tolist())) == batches.numel()  # each row at most once
    clips = data.audio_index[batches]
    assert any(len(set(b.tolist())) < 16 for b in clips)  # a clip can fill two rows
    # the step's loss sees exactly those clip ids: masked != unmasked on such a batch
    b = next(b for b, c in zip(batches, clips, strict=True) if len(set(c.tolist())) < 16)
    t, a = untrained()(data.text[b], data.audio[data.audio_index[b]])
    assert nt_xent(t, a, 0.07, data.audio_index[b]) < nt_xent(t, a, 0.07)


def test_refusals_name_the_file_and_what_to_do(caches, tmp_path) -> None:
    out = tmp_path / "p.pt"

    def run(train_path, val_path, **changes):
        train_contrastive(train_path, val_path, out, replace(CFG, **changes), False, print)

    with pytest.raises(UserError, match=r"joint\.h5: train cache is already in a joint space"):
        run(caches["joint"], caches["val"])
    with pytest.raises(UserError, match=r"joint\.h5: validation cache is already in a joint"):
        run(caches["train"], caches["joint"])
    with pytest.raises(UserError, match=r"val_wide\.h5: 80-d audio and 48-d text.*64-d and 48-d"):
        run(caches["train"], caches["val_wide"])
    with pytest.raises(UserError, match=r"missing\.h5: no such file"):
        run(tmp_path / "missing.h5", caches["val"])
    with pytest.raises(UserError, match=r"train\.h5: .* fewer than one batch of 100000"):
        run(caches["train"], caches["val"], batch_size=100_000)
    assert not list(tmp_path.glob("p.pt*"))


def test_a_split_that_loses_many_captions_to_the_last_batch_is_warned_about(
    caches, tmp_path, capsys
) -> None:
    n = int((load_tensors(caches["train"]).audio_index >= 0).sum())
    batch = n * 2 // 3 + 1  # one whole batch; the other third of the captions never trains
    train(caches, tmp_path / "p.pt", epochs=1, batch_size=batch)
    err = capsys.readouterr().err
    assert f"{n - batch} of {n} captions" in err and "lower --batch-size" in err
    train(caches, tmp_path / "q.pt", epochs=1, batch_size=n // 4)  # < 25% left out: quiet
    assert "left out" not in capsys.readouterr().err
