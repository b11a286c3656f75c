"""`load_failure`: a file torch.load cannot read is described by what it is (its first bytes),
not by the unpickler's bare `KeyError: 101`; through the PANNs loader, as users meet it."""

import pytest
import torch

from diffatr.errors import UserError
from diffatr.extract.panns import read_checkpoint
from diffatr.torch_files import load_failure


def _failure(path):
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        return e
    raise AssertionError("torch.load read it")


def test_a_text_file_is_named_as_text_with_its_first_bytes(tmp_path):
    path = tmp_path / "model.pth"
    path.write_text("hello, not a model\n")
    exc = _failure(path)
    assert str(exc) == "101"  # torch's own text: the byte 'e' read as a memo index
    why = load_failure(path, exc)
    assert "starts with b'hello, not a model\\n' (text)" in why, why
    assert "zip header or pickle mark" in why and "KeyError: 101" in why


def test_binary_shown_printable_and_empty_and_zip(tmp_path):
    ogg = tmp_path / "clip.pth"
    ogg.write_bytes(b"OggS\x00\x02" + bytes(range(256)) * 3)
    why = load_failure(ogg, _failure(ogg))
    assert "b'OggS\\x00\\x02" in why and "(binary data)" in why
    assert why.isprintable() and len(why) < 400
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    assert load_failure(empty, ValueError("x")) == "the file is empty"
    good = tmp_path / "good.pth"
    torch.save({"a": torch.ones(3)}, good)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[:200])
    assert "zip archive, but not one torch.save wrote whole" in load_failure(cut, _failure(cut))


def test_the_panns_loader_says_what_the_file_is(tmp_path):
    path = tmp_path / "Cnn14.pth"
    path.write_text("hello")
    with pytest.raises(UserError) as e:
        read_checkpoint(path)
    msg = str(e.value)
    assert "not a PyTorch checkpoint" in msg and "starts with b'hello' (text)" in msg, msg
    assert "\n" not in msg
