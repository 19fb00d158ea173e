"""Put Fashion-MNIST where mmpretrain's ``FashionMNIST`` dataset reads it (``configs/fashion_mnist/``).

    python tools/misc/get_fashion_mnist.py [--out data/fashion_mnist] [--src DIR] [--no-apt]

The four gzipped idx files come from ``--src`` (default: where Debian's ``dataset-fashion-mnist`` package
puts them, /usr/share/datasets/fashion-mnist). Where they are missing and apt is usable (root, apt-get on
the PATH, no ``--no-apt``), the package is installed first; otherwise the tool says what to do. Each file is
unpacked into a folder beside ``--out`` and checked: the archive against the MD5 that mmpretrain's
``FashionMNIST`` lists or, failing that, the unpacked file against the MD5 Fashion-MNIST publishes for it
(Debian recompresses the archives: the same bytes unpacked, other archive bytes), then the idx headers (as
many labels as images). Only then is the set moved to ``--out``: an interrupted or failed run leaves
``--out`` as it was. Run again, it finds the set in place and does nothing.
"""
import argparse
import gzip
import hashlib
import os
import os.path as osp
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from typing import Dict, Optional, Sequence, Tuple

DEBIAN_PACKAGE = 'dataset-fashion-mnist'
DEBIAN_DIR = '/usr/share/datasets/fashion-mnist'
PUBLISHED_AT = 'https://github.com/zalandoresearch/fashion-mnist (the four *-ubyte.gz files)'
IDX_MAGIC = {'images': 2051, 'labels': 2049}  # idx3 of uint8 images, idx1 of uint8 labels
# MD5 of each unpacked file, as Fashion-MNIST's documentation publishes them (the archives' MD5s are
# mmpretrain's): what Debian's recompressed archives are checked against
UNPACKED_MD5 = {
    'train-images-idx3-ubyte': 'f4a8712d7a061bf5bd6d2ca38dc4d50a',
    'train-labels-idx1-ubyte': '9018921c3c673c538a1fc5bad174d6f9',
    't10k-images-idx3-ubyte': '8181f5470baa50b63fa0f6fddb340f0a',
    't10k-labels-idx1-ubyte': '15d484375f8d13e6eb1aabb0c3f46965',
}


class DataError(Exception):
    """A problem the user fixes (a message of one line, nothing deleted)."""


def mmpretrain_checksums() -> Dict[str, Tuple[str, str]]:
    """``{archive name: (archive MD5, unpacked MD5)}``: the archives mmpretrain's FashionMNIST lists, whose
    unpacked files its dataset class reads."""
    try:
        from mmpretrain.datasets import FashionMNIST
    except ImportError as e:
        raise DataError(f'mmpretrain is needed for the checksums its FashionMNIST lists ({e}); run '
                        'bash tools/setup_env.sh') from None
    return {name: (md5, UNPACKED_MD5[unpacked_name(name)])
            for name, md5 in FashionMNIST.train_list + FashionMNIST.test_list}


def unpacked_name(gz_name: str) -> str:
    return gz_name[:-3] if gz_name.endswith('.gz') else gz_name


def md5_of(path: str) -> str:
    h = hashlib.md5()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def idx_count(path: str) -> int:
    """The item count of an unpacked idx file, after checking its header and size."""
    kind = 'labels' if 'labels' in osp.basename(path) else 'images'
    with open(path, 'rb') as f:
        header = f.read(16 if kind == 'images' else 8)
    if len(header) < (16 if kind == 'images' else 8):
        raise DataError(f'{path}: too short for an idx {kind} file')
    magic, count = struct.unpack('>II', header[:8])
    if magic != IDX_MAGIC[kind]:
        raise DataError(f'{path}: not an idx {kind} file (magic {magic}, expected {IDX_MAGIC[kind]})')
    item = 1
    if kind == 'images':
        rows, cols = struct.unpack('>II', header[8:16])
        item = rows * cols
    if osp.getsize(path) != len(header) + count * item:
        raise DataError(f'{path}: {osp.getsize(path)} bytes, but its header says {count} {kind} '
                        f'({len(header) + count * item} bytes): truncated or corrupt')
    return count


def check_unpacked(folder: str, names: Sequence[str]) -> Dict[str, int]:
    """Check the unpacked files in ``folder``: each a whole idx file, each split as many labels as images."""
    counts = {n: idx_count(osp.join(folder, unpacked_name(n))) for n in names}
    for split in ('train', 't10k'):
        images = [c for n, c in counts.items() if n.startswith(split) and 'images' in n]
        labels = [c for n, c in counts.items() if n.startswith(split) and 'labels' in n]
        if images and labels and images != labels:
            raise DataError(f'{folder}: {split} has {images[0]} images but {labels[0]} labels')
    return counts


def is_complete(out: str, names: Sequence[str]) -> bool:
    return all(osp.isfile(osp.join(out, unpacked_name(n))) for n in names)


def check_out(out: str, names: Sequence[str]) -> None:
    """Refuse an --out that holds other files (the tool never deletes anything) or cannot be written."""
    if osp.exists(out) and not osp.isdir(out):
        raise DataError(f'--out {out} is a file, not a folder')
    if osp.isdir(out):
        foreign = sorted(set(os.listdir(out)) - {unpacked_name(n) for n in names})
        if foreign:
            raise DataError(f'--out {out} is not empty and holds files that are not Fashion-MNIST '
                            f'({", ".join(foreign[:3])}{", ..." if len(foreign) > 3 else ""}): pick another --out')
    existing = osp.dirname(osp.abspath(out))
    while not osp.exists(existing):
        existing = osp.dirname(existing)
    if not osp.isdir(existing):
        raise DataError(f'--out {out}: {existing} is a file, not a folder')


def apt_install() -> None:
    """``apt-get install dataset-fashion-mnist`` (after ``apt-get update`` if the package is not known yet)."""
    print(f'[get_fashion_mnist] installing Debian\'s {DEBIAN_PACKAGE} (apt-get)', flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    cmd = ['apt-get', 'install', '-y', '-q', DEBIAN_PACKAGE]
    if subprocess.run(cmd, env=env).returncode != 0:
        subprocess.run(['apt-get', 'update', '-q'], env=env, check=False)
        if subprocess.run(cmd, env=env).returncode != 0:
            raise DataError(f'apt-get could not install {DEBIAN_PACKAGE}; see its output above')


def apt_usable() -> bool:
    return shutil.which('apt-get') is not None and hasattr(os, 'geteuid') and os.geteuid() == 0


def find_source(src: Optional[str], names: Sequence[str], use_apt: bool) -> str:
    """The folder holding the four .gz files: ``src``, or Debian's, installing the package if allowed."""
    folder = src or DEBIAN_DIR
    missing = [n for n in names if not osp.isfile(osp.join(folder, n))]
    if missing and src is None and use_apt and apt_usable():
        apt_install()
        missing = [n for n in names if not osp.isfile(osp.join(folder, n))]
    if missing:
        how = (f'install Debian\'s {DEBIAN_PACKAGE} (as root: apt-get update && apt-get install {DEBIAN_PACKAGE}), '
               f'or download them from {PUBLISHED_AT} and pass --src DIR') if src is None else \
            f'put them there (published at {PUBLISHED_AT})'
        raise DataError(f'{folder} lacks {", ".join(missing)}: {how}')
    return folder


def unpack_checked(gz_path: str, dst: str, md5s: Tuple[str, str]) -> None:
    """Unpack ``gz_path`` to ``dst``; the archive must have the first MD5 or the unpacked file the second."""
    archive_md5, unpacked = md5_of(gz_path), hashlib.md5()
    try:
        with gzip.open(gz_path, 'rb') as fin, open(dst, 'wb') as fo:
            for chunk in iter(lambda: fin.read(1 << 20), b''):
                unpacked.update(chunk)
                fo.write(chunk)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f'{gz_path}: not a readable gzip archive ({e}): a corrupt or truncated file') from None
    if archive_md5 != md5s[0] and unpacked.hexdigest() != md5s[1]:
        raise DataError(f'{gz_path}: neither its MD5 ({archive_md5}) is the {md5s[0]} mmpretrain\'s FashionMNIST '
                        f'lists nor its unpacked MD5 ({unpacked.hexdigest()}) the published {md5s[1]}: a corrupt '
                        'or different file')


def get_fashion_mnist(out: str, src: Optional[str] = None, use_apt: bool = True,
                      checksums: Optional[Dict[str, Tuple[str, str]]] = None) -> Dict[str, int]:
    """Unpack the checked files into ``out``; returns each file's item count. Raises DataError."""
    checksums = checksums or mmpretrain_checksums()
    names = list(checksums)
    check_out(out, names)
    if is_complete(out, names):
        counts = check_unpacked(out, names)
        print(f'[get_fashion_mnist] {out} already holds Fashion-MNIST ({_counts_text(counts)}); nothing to do')
        return counts
    folder = find_source(src, names, use_apt)
    parent = osp.dirname(osp.abspath(out))
    try:  # the unpacked set is written beside --out, then moved in whole
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f'.{osp.basename(osp.abspath(out))}.part-', dir=parent)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would hide the data set from other users
    except OSError as e:
        raise DataError(f'--out {out}: cannot write in {parent} ({e.strerror})') from None
    try:
        for name in names:
            unpack_checked(osp.join(folder, name), osp.join(tmp, unpacked_name(name)), checksums[name])
        counts = check_unpacked(tmp, names)
        if osp.isdir(out):  # empty, or part of the set (check_out allows nothing else): file by file
            for name in os.listdir(tmp):
                os.replace(osp.join(tmp, name), osp.join(out, name))
            os.rmdir(tmp)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f'[get_fashion_mnist] {out}: Fashion-MNIST from {folder}, checked ({_counts_text(counts)})')
    return counts


def _counts_text(counts: Dict[str, int]) -> str:
    train = next((c for n, c in counts.items() if n.startswith('train') and 'images' in n), 0)
    test = next((c for n, c in counts.items() if n.startswith('t10k') and 'images' in n), 0)
    return f'{train} training and {test} test images'


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Fashion-MNIST in the layout mmpretrain's FashionMNIST reads")
    parser.add_argument('--out', default='data/fashion_mnist', help='where to unpack (default: data/fashion_mnist, '
                        "the configs' data_root)")
    parser.add_argument('--src', help=f'folder of the four *-ubyte.gz files (default: {DEBIAN_DIR}, Debian\'s '
                        f'{DEBIAN_PACKAGE})')
    parser.add_argument('--no-apt', action='store_true', help=f'never run apt-get to install {DEBIAN_PACKAGE}')
    args = parser.parse_args(argv)
    try:
        get_fashion_mnist(args.out, args.src, use_apt=not args.no_apt)
    except DataError as e:
        print(f'get_fashion_mnist.py: {e}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
