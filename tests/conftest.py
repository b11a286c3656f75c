"""Test-wide settings: no model hub access (a hub name fails at once instead of retrying)."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
