"""Tiny Fashion-MNIST idx files written by the tests (no apt, no real data): 50 training and 20 test images."""
import gzip
import hashlib
import os
import os.path as osp
import struct
import sys

import numpy as np

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
sys.path.insert(0, osp.join(REPO, 'tools', 'misc'))  # get_fashion_mnist

SIZES = {'train': 50, 't10k': 20}


def write_idx_gz(folder: str, split: str, n: int, seed: int) -> None:
    """``<split>-images-idx3-ubyte.gz`` and ``<split>-labels-idx1-ubyte.gz`` of ``n`` random 28x28 images."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    with gzip.open(osp.join(folder, f'{split}-images-idx3-ubyte.gz'), 'wb') as f:
        f.write(struct.pack('>IIII', 2051, n, 28, 28) + images.tobytes())
    with gzip.open(osp.join(folder, f'{split}-labels-idx1-ubyte.gz'), 'wb') as f:
        f.write(struct.pack('>II', 2049, n) + labels.tobytes())


def md5s(folder: str) -> dict:
    """The tool's ``checksums`` for the archives in ``folder``: {name: (archive MD5, unpacked MD5)}."""
    def md5(data):
        return hashlib.md5(data).hexdigest()
    return {name: (md5(open(osp.join(folder, name), 'rb').read()), md5(gzip.open(osp.join(folder, name)).read()))
            for name in sorted(os.listdir(folder)) if name.endswith('.gz')}
