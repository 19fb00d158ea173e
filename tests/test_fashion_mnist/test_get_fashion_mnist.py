"""tools/misc/get_fashion_mnist.py: checked, idempotent, all or nothing, one-line errors, and what it writes is
what mmpretrain's FashionMNIST reads (the test set only with test_mode=True)."""
import gzip
import os
import os.path as osp
import struct

import pytest
from fmnist_fixtures import SIZES, md5s, write_idx_gz

import get_fashion_mnist as gfm

UNPACKED = sorted(['train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte',
                   't10k-labels-idx1-ubyte'])


def _leftovers(parent: str):
    return [n for n in os.listdir(parent) if '.part-' in n]


def test_unpacks_what_mmpretrain_fashion_mnist_reads(fixture_src, tmp_path):
    from mmpretrain.datasets import FashionMNIST
    src, sums = fixture_src
    out = str(tmp_path / 'data' / 'fashion_mnist')  # parents made as needed
    counts = gfm.get_fashion_mnist(out, src, use_apt=False, checksums=sums)
    assert sorted(os.listdir(out)) == UNPACKED
    assert counts['train-images-idx3-ubyte.gz'] == SIZES['train'] and counts['t10k-labels-idx1-ubyte.gz'] == SIZES['t10k']
    assert not _leftovers(str(tmp_path / 'data'))
    train = FashionMNIST(data_prefix=out, test_mode=False, download=False)
    test = FashionMNIST(data_prefix=out, test_mode=True, download=False)
    assert (len(train), len(test)) == (SIZES['train'], SIZES['t10k'])
    assert train[0]['img'].shape == (28, 28)
    # the trap the configs avoid: split='test' without test_mode reads the training images
    assert len(FashionMNIST(data_prefix=out, test_mode=False, split='test', download=False)) == SIZES['train']


def test_the_checksums_are_mmpretrains_and_the_published_unpacked_ones():
    from mmpretrain.datasets import FashionMNIST
    sums = gfm.mmpretrain_checksums()
    assert {n: a for n, (a, _) in sums.items()} == dict(FashionMNIST.train_list + FashionMNIST.test_list)
    assert {gfm.unpacked_name(n): u for n, (_, u) in sums.items()} == gfm.UNPACKED_MD5


def test_a_recompressed_archive_passes_on_its_unpacked_md5(fixture_src, tmp_path):
    src, sums = fixture_src  # as Debian's package: other archive bytes, the same unpacked file
    path = osp.join(src, 'train-labels-idx1-ubyte.gz')
    data = gzip.open(path).read()
    with gzip.GzipFile(path, 'wb', mtime=1234567) as f:
        f.write(data)
    assert md5s(src)['train-labels-idx1-ubyte.gz'][0] != sums['train-labels-idx1-ubyte.gz'][0]
    gfm.get_fashion_mnist(str(tmp_path / 'fm'), src, use_apt=False, checksums=sums)
    assert open(tmp_path / 'fm' / 'train-labels-idx1-ubyte', 'rb').read() == data


def test_second_run_changes_nothing(fixture_src, tmp_path, capsys):
    src, sums = fixture_src
    out = str(tmp_path / 'fm')
    gfm.get_fashion_mnist(out, src, use_apt=False, checksums=sums)
    stamps = {n: os.stat(osp.join(out, n)).st_mtime_ns for n in os.listdir(out)}
    os.remove(osp.join(src, 'train-images-idx3-ubyte.gz'))  # not read again
    gfm.get_fashion_mnist(out, src, use_apt=False, checksums=sums)
    assert 'nothing to do' in capsys.readouterr().out
    assert {n: os.stat(osp.join(out, n)).st_mtime_ns for n in os.listdir(out)} == stamps


def test_completes_an_empty_or_partial_out(fixture_src, tmp_path):
    src, sums = fixture_src
    out = tmp_path / 'fm'
    out.mkdir()
    (out / 'train-labels-idx1-ubyte').write_bytes(b'half')
    gfm.get_fashion_mnist(str(out), src, use_apt=False, checksums=sums)
    assert sorted(os.listdir(out)) == UNPACKED and gfm.idx_count(str(out / 'train-labels-idx1-ubyte')) == 50


@pytest.mark.parametrize('damage, match', [
    ('truncate', r't10k-images-idx3-ubyte.gz: not a readable gzip archive'),
    ('other content', r't10k-images-idx3-ubyte.gz: neither its MD5 \([0-9a-f]+\) is the [0-9a-f]+ mmpretrain'),
])
def test_a_corrupt_file_is_refused_and_nothing_is_written(fixture_src, tmp_path, damage, match):
    src, sums = fixture_src
    path = osp.join(src, 't10k-images-idx3-ubyte.gz')
    if damage == 'truncate':
        data = open(path, 'rb').read()
        open(path, 'wb').write(data[:len(data) // 2])
    else:
        write_idx_gz(src, 't10k', SIZES['t10k'], seed=99)  # a valid idx file with other images
    out = str(tmp_path / 'fm')
    with pytest.raises(gfm.DataError, match=match):
        gfm.get_fashion_mnist(out, src, use_apt=False, checksums=sums)
    assert not osp.exists(out) and not _leftovers(str(tmp_path))


def test_an_inconsistent_set_is_refused_after_unpacking_and_nothing_is_left(tmp_path):
    src = tmp_path / 'src'
    src.mkdir()
    write_idx_gz(str(src), 'train', 30, 0)
    write_idx_gz(str(src), 't10k', 20, 1)
    with gzip.open(src / 'train-labels-idx1-ubyte.gz', 'wb') as f:  # 29 labels for 30 images
        f.write(struct.pack('>II', 2049, 29) + bytes(29))
    out = tmp_path / 'fm'
    out.mkdir()
    with pytest.raises(gfm.DataError, match='train has 30 images but 29 labels'):
        gfm.get_fashion_mnist(str(out), str(src), use_apt=False, checksums=md5s(str(src)))
    assert os.listdir(out) == [] and not _leftovers(str(tmp_path))


def test_a_foreign_out_is_refused_and_kept(fixture_src, tmp_path):
    src, sums = fixture_src
    out = tmp_path / 'mine'
    out.mkdir()
    (out / 'notes.txt').write_text('keep me')
    with pytest.raises(gfm.DataError, match=r'--out .*mine is not empty .*notes.txt'):
        gfm.get_fashion_mnist(str(out), src, use_apt=False, checksums=sums)
    assert os.listdir(out) == ['notes.txt']
    (tmp_path / 'afile').write_text('')
    with pytest.raises(gfm.DataError, match='is a file, not a folder'):
        gfm.get_fashion_mnist(str(tmp_path / 'afile'), src, use_apt=False, checksums=sums)
    with pytest.raises(gfm.DataError, match='is a file, not a folder'):
        gfm.get_fashion_mnist(str(tmp_path / 'afile' / 'fm'), src, use_apt=False, checksums=sums)


def test_an_unwritable_out_is_a_one_line_error(fixture_src):
    src, sums = fixture_src  # /proc takes no new folder, not even from root
    with pytest.raises(gfm.DataError, match=r'--out /proc/pddr_fm: cannot write in /proc'):
        gfm.get_fashion_mnist('/proc/pddr_fm', src, use_apt=False, checksums=sums)


def test_missing_files_say_what_to_do(tmp_path, monkeypatch):
    empty = tmp_path / 'empty'
    empty.mkdir()
    sums = {n: ('0' * 32, '0' * 32) for n in ['train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz',
                                  't10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz']}
    with pytest.raises(gfm.DataError, match=r'lacks train-images-idx3-ubyte.gz, .*put them there'):
        gfm.get_fashion_mnist(str(tmp_path / 'fm'), str(empty), use_apt=False, checksums=sums)
    # the default source, Debian's folder, without apt: the package to install and where the data is published
    monkeypatch.setattr(gfm, 'DEBIAN_DIR', str(empty))
    with pytest.raises(gfm.DataError, match=r"install Debian's dataset-fashion-mnist .* or download them from "
                       r'https://github.com/zalandoresearch/fashion-mnist'):
        gfm.get_fashion_mnist(str(tmp_path / 'fm'), None, use_apt=False, checksums=sums)
    assert not osp.exists(tmp_path / 'fm')


def test_cli_reports_one_line_and_exits_1(tmp_path, capsys):
    (tmp_path / 'src').mkdir()
    assert gfm.main(['--out', str(tmp_path / 'fm'), '--src', str(tmp_path / 'src'), '--no-apt']) == 1
    err = capsys.readouterr().err
    assert err.startswith('get_fashion_mnist.py: ') and err.count('\n') == 1
    assert not osp.exists(tmp_path / 'fm')
