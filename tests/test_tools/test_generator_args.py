"""generate_shapes_dataset.py: a bad option or a failure part way never costs the set already in --out.

Every option is checked before anything is deleted or written (argparse errors naming the option), and
the new set is written beside --out and moved in only when complete.
"""
import hashlib
import os
import os.path as osp

import generate_shapes_dataset as gen
import pytest

SMALL = ['--num-train', '3', '--num-val', '2', '--img-size', '64', '--max-size', '30']


def snapshot(root):
    """Every file under ``root`` (and the folders around it) with its SHA-1: equal snapshots, equal sets."""
    files = {}
    for d, _, names in os.walk(root):
        for name in names:
            with open(osp.join(d, name), 'rb') as f:
                files[osp.relpath(osp.join(d, name), root)] = hashlib.sha1(f.read()).hexdigest()
    return files, sorted(os.listdir(osp.dirname(root)))


@pytest.fixture(scope='module')
def existing_set(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('gen') / 'shapes')
    gen.main(['--out', out] + SMALL)
    before = snapshot(out)
    assert len(before[0]) > 5 and before[1] == ['shapes']
    return out, before


BAD = [
    (['--crop-size', '0'], '--crop-size'),
    (['--img-size', '0'], '--img-size'),
    (['--num-train', '-5'], '--num-train'),
    (['--num-train', '0'], '--num-train'),
    (['--num-val', '0'], '--num-val'),
    (['--num-val', 'many'], '--num-val'),
    (['--seed', '-1'], '--seed'),
    (['--max-objects', '0'], '--max-objects'),
    (['--min-objects', '-1'], '--min-objects'),
    (['--min-objects', '5', '--max-objects', '4'], '--max-objects'),
    (['--min-size', '1'], '--min-size'),
    (['--min-size', '40', '--max-size', '30'], '--max-size'),
    (['--max-size', '65'], '--max-size'),  # larger than --img-size 64
    (['--max-overlap', '1.5'], '--max-overlap'),
    (['--num-classes', '0'], '--num-classes'),
    (['--num-classes', str(len(gen.ALL_CLASSES) + 1)], '--num-classes'),
    (['--alpha-min', '2'], '--alpha-min'),
    (['--noise-std', '-1'], '--noise-std'),
    (['--clutter', '-1'], '--clutter'),
    (['--occlusion', '-0.1'], '--occlusion'),
    (['--blur', 'nan'], '--blur'),
    (['--crop-jitter', '2'], '--crop-jitter'),
]


@pytest.mark.parametrize('bad,name', BAD, ids=[' '.join(b) for b, _ in BAD])
def test_a_bad_option_is_refused_before_the_existing_set_is_touched(existing_set, capsys, bad, name):
    out, before = existing_set
    with pytest.raises(SystemExit) as exc:
        gen.main(['--out', out, '--force'] + SMALL + bad)
    assert exc.value.code == 2
    assert f'argument {name}:' in capsys.readouterr().err
    assert snapshot(out) == before


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    path = tmp_path / 'not_a_dir'
    path.write_text('keep me')
    with pytest.raises(SystemExit):
        gen.main(['--out', str(path), '--force'] + SMALL)
    assert 'argument --out:' in capsys.readouterr().err and path.read_text() == 'keep me'


def test_a_failure_part_way_keeps_the_old_set_and_leaves_no_partial_folder(existing_set, monkeypatch):
    """--force replaces the old set only once the new one is complete: an error (or Ctrl-C) while the
    images are drawn leaves it as it was, and the half-written sibling folder is removed."""
    out, before = existing_set
    made = []

    def make_image(rng, args):
        if len(made) == 2:
            raise KeyboardInterrupt
        made.append(1)
        return real(rng, args)

    real = gen.make_image
    monkeypatch.setattr(gen, 'make_image', make_image)
    with pytest.raises(KeyboardInterrupt):
        gen.main(['--out', out, '--force', '--seed', '5'] + SMALL)
    assert len(made) == 2 and snapshot(out) == before


def test_force_replaces_the_set_in_place_and_keeps_other_files(tmp_path):
    """--force swaps images/, annotations/ and cls/ for the new ones; anything else in --out stays."""
    out, fresh = str(tmp_path / 'out'), str(tmp_path / 'fresh')
    gen.main(['--out', out, '--seed', '1'] + SMALL)
    (tmp_path / 'out' / 'README.txt').write_text('mine')
    gen.main(['--out', out, '--seed', '2', '--force', '--no-crops'] + SMALL)
    gen.main(['--out', fresh, '--seed', '2', '--no-crops'] + SMALL)
    files, siblings = snapshot(out)
    assert files.pop('README.txt') and files == snapshot(fresh)[0]
    assert siblings == ['fresh', 'out']  # no partial or old folder left beside it
