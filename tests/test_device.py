"""diffatr.device.flush_denormal: on inside the block, the caller's own setting after it."""

import pytest
import torch

from diffatr.device import denormals_flushed, flush_denormal


@pytest.fixture
def supported():
    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU cannot flush denormals")
    yield
    torch.set_flush_denormal(False)


def probe() -> bool:
    """Independent of denormals_flushed: a denormal product read back as zero?"""
    return float(torch.tensor([3e-39]) * 0.5) == 0.0


@pytest.mark.parametrize("caller", [False, True])
def test_the_callers_setting_is_restored(supported, caller) -> None:
    torch.set_flush_denormal(caller)
    assert probe() is caller and denormals_flushed() is caller
    with flush_denormal():
        assert probe()
        with flush_denormal():
            assert probe()
        assert probe()  # the inner block leaves the outer one's setting
    assert probe() is caller
    with pytest.raises(RuntimeError), flush_denormal():
        raise RuntimeError("a failure inside the block")
    assert probe() is caller
