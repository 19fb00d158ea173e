"""Tiny ViTs for the Dyn-Adapter tests (32 dims, 4 blocks, 32x32 inputs, 4x4 patches: 65 tokens)."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    """Tiny networks: one intra-op thread is faster on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
