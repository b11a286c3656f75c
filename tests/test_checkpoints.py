"""diffatr/checkpoints.py reading a checkpoint's config back: settings this diffatr does not know
are refused by name, missing ones are warned about by name and take today's defaults."""

import pytest
import torch
from rerank_oracle import random_head

from diffatr.diffusion_head import HeadConfig, load_head
from diffatr.diffusion_head.checkpoint import save_head
from diffatr.errors import UserError


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "head.pt"
    save_head(path, random_head(8, 4, lr=3e-4))
    return path


def rewrite(path, edit) -> None:
    blob = torch.load(path, weights_only=True)
    edit(blob["config"])
    torch.save(blob, path)


def test_round_trip_is_silent(saved, capsys) -> None:
    assert load_head(saved).config == HeadConfig(K=4, lr=3e-4)
    assert "warning" not in capsys.readouterr().err


def test_unknown_settings_are_refused_by_name(saved) -> None:
    rewrite(saved, lambda cfg: cfg.update(dropout=0.1, heads=4))
    with pytest.raises(UserError, match=rf"{saved}: .*does not know \(dropout, heads\)"):
        load_head(saved)


def test_missing_settings_are_warned_about_by_name(saved, capsys) -> None:
    rewrite(saved, lambda cfg: [cfg.pop("ema"), cfg.pop("warmup")])
    cfg = load_head(saved).config
    assert (cfg.ema, cfg.warmup, cfg.lr, cfg.K) == (0.99, 0.1, 3e-4, 4)
    err = capsys.readouterr().err
    assert f"warning: {saved}: its config lacks warmup=0.1, ema=0.99" in err


def test_unreadable_files_say_what_they_are(saved, tmp_path) -> None:
    text = tmp_path / "notes.pt"
    text.write_text("hello\n")
    with pytest.raises(UserError, match=r"notes.pt: not a checkpoint: not a file torch.save wrote"):
        load_head(text)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(saved.read_bytes()[:200])  # a torch.save zip cut short
    with pytest.raises(UserError, match=r"cut.pt: a PyTorch file that cannot be read .*Error"):
        load_head(cut)


def test_loading_fills_every_weight_from_the_file(tmp_path) -> None:
    """load_head builds its denoisers uninitialised (no random draws) and loads every weight:
    the loaded head equals the saved one, and loading leaves torch's generator alone."""
    head = random_head(16, 5, seed=3)
    save_head(tmp_path / "h.pt", head)
    torch.manual_seed(0)
    loaded = load_head(tmp_path / "h.pt")
    after = torch.randn(3)
    torch.manual_seed(0)
    assert torch.equal(after, torch.randn(3))  # no draw in between
    for d in ("t2a", "a2t"):
        want, got = getattr(head, d).state_dict(), getattr(loaded, d).state_dict()
        assert want.keys() == got.keys()
        for k, v in want.items():
            assert got[k].device.type == "cpu" and torch.equal(got[k], v), k
        assert all(p.requires_grad for p in getattr(loaded, d).parameters())
