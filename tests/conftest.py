"""Test-wide settings: no model hub access (a hub name fails at once instead of retrying),
a fixture for modules of tiny tensor ops, and a small indexed sound library."""

import os

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="module")
def one_thread():
    """Tiny ops: OpenMP hand-offs between 2 busy cores cost ~100x the arithmetic."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def torch_optimiser(monkeypatch):
    """The head's optimiser on its torch code (optim.py), compiled or eager, not its C kernel
    (native_optim.py), which it takes by default where it builds."""
    from diffatr.diffusion_head import native_optim

    monkeypatch.setattr(native_optim, "usable", lambda tensors: False)


@pytest.fixture
def torch_loss(monkeypatch):
    """The training loss's forward and backward through torch.compile (stacked.CompiledLoss),
    not written out with its C kernel (native_loss.py), which it takes by default where it
    builds."""
    from diffatr.diffusion_head import native_loss

    monkeypatch.setattr(native_loss, "usable", lambda tensors: False)


@pytest.fixture(scope="session")
def library(tmp_path_factory):
    """A sound library indexed with a tiny joint model (`library_helpers.build_library`)."""
    from library_helpers import build_library

    return build_library(tmp_path_factory.mktemp("library"))
