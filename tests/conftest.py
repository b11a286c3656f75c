"""Test-wide settings: no model hub access (a hub name fails at once instead of retrying),
and a fixture for modules of tiny tensor ops."""

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
