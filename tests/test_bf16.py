"""`--precision bf16` on a CPU without bf16 instructions warns (it is emulated, ~2x slower than
fp32, and said nothing before); with them, or where the flags are unknown, nothing is printed.
The CPU's flags are mocked: the test does not depend on the machine it runs on."""

import pytest
import torch

from diffatr.extract import bf16
from diffatr.extract.joint.audio import check_precision


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(bf16, "_warned", set())


def test_cpu_flags_are_read_from_x86_and_arm_cpuinfo(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n\nprocessor\t: 1\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")
    assert bf16.cpu_flags(str(x86)) == {"fpu", "sse", "avx2", "avx512f"}
    assert "bf16" in bf16.cpu_flags(str(arm))
    assert bf16.cpu_flags(str(tmp_path / "absent")) is None


@pytest.mark.parametrize(
    ("flags", "warns"),
    [({"avx2", "avx512f"}, True), ({"avx512_bf16"}, False), ({"amx_bf16"}, False), (None, False)],
)
def test_bf16_on_cpu_warns_only_without_native_support(fresh, monkeypatch, capsys, flags, warns):
    monkeypatch.setattr(bf16, "cpu_flags", lambda path="": flags)
    check_precision("bf16", torch.device("cpu"))
    err = capsys.readouterr().err
    assert ("bfloat16 instructions" in err) == warns, err
    check_precision("fp32", torch.device("cpu"))  # fp32: never
    check_precision("bf16", torch.device("cpu"))  # once a process
    assert "bfloat16" not in capsys.readouterr().err


def test_the_text_encoder_warns_too(fresh, monkeypatch, capsys, tmp_path):
    """Every extraction path checks: here the Hugging Face text encoder's, failing after."""
    from diffatr.errors import UserError
    from diffatr.extract.text import TextEncoder, TextEncoderConfig

    monkeypatch.setattr(bf16, "cpu_flags", lambda path="": {"avx2"})
    with pytest.raises(UserError):  # no model there: the warning comes before the load
        TextEncoder(TextEncoderConfig(name=str(tmp_path), precision="bf16", device="cpu"))
    assert "bfloat16 instructions" in capsys.readouterr().err
