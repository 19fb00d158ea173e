import os
import sys

import pytest
import torch

# the model tests share _helpers.py from this directory
sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(scope='module')
def one_thread():
    """Tiny networks at batch 1: one intra-op thread is faster, and much faster on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
