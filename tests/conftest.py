"""Shared fixtures: single-threaded, deterministic CPU runs with tiny configs."""

import os

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("MPLP_OFFLINE", "1")
os.environ.setdefault("MPLP_COMPILE", "0")   # eager steps by default; test_fast and test_peer check compiled ones

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)
