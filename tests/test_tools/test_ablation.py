"""tools/analysis_tools/ablation.py: variant parsing, config rewriting, skip/resume, summary; one real run."""
import csv
import json
import math
import os
import os.path as osp
import subprocess
import sys
import time

import ablation
import pytest
from conftest import REPO
from mmengine.config import Config

import pddr_mm  # noqa: F401  (registers PDResNet: the config helpers look types up)

CLS_CONFIG = osp.join(REPO, 'configs', 'demo', 'pd-b-resnet18_shapes-cls.py')
DET_CONFIG = osp.join(REPO, 'configs', 'demo', 'retinanet_r18-pdb_shapes.py')
PLAIN_DET_CONFIG = osp.join(REPO, 'configs', 'demo', 'retinanet_r18-plain_shapes.py')


# ---------------------------------------------------------------------------------------------- parsing
def test_split_overrides_respects_quotes_brackets_and_lists():
    assert ablation.split_overrides('a=1,b="(\'x\',\'y\')",c.d=3,4') == [('a', '1'), ('b', '"(\'x\',\'y\')"'),
                                                                         ('c.d', '3,4')]
    assert ablation.split_overrides("k=[1,2],m=x") == [('k', '[1,2]'), ('m', 'x')]
    with pytest.raises(ValueError, match='unbalanced'):
        ablation.split_overrides('a=(1,2')
    with pytest.raises(ValueError, match='KEY=VALUE'):
        ablation.split_overrides('nokey')


def test_parse_variants():
    v = ablation.parse_variant('s+g:model.backbone.branches="(\'standard\',\'group\')",optim_wrapper.optimizer.lr=1e-3')
    assert v.name == 's+g' and v.preset == 's+g'
    assert v.overrides == {'model.backbone.branches': ('standard', 'group'), 'optim_wrapper.optimizer.lr': 1e-3}
    v = ablation.parse_variant('wide:model.backbone.base_channels=32,train_cfg.max_epochs=2')
    assert v.preset is None and v.overrides == {'model.backbone.base_channels': 32, 'train_cfg.max_epochs': 2}
    assert ablation.parse_variant('x:a=1,2,b=c').overrides == {'a': [1, 2], 'b': 'c'}
    for name in ('plain', 'pd-a', 'pd-b', 'pd-b-anneal', 's', 's+s+g+k', 's+k'):
        assert ablation.parse_variant(name).preset == name
    with pytest.raises(ValueError, match='neither a preset'):
        ablation.parse_variant('pdb')
    # PRESET@LABEL: the preset under another name, then the overrides
    v = ablation.parse_variant('plain@w8:model.backbone.base_channels=8')
    assert v.name == 'plain@w8' and v.preset == 'plain' and v.overrides == {'model.backbone.base_channels': 8}
    assert ablation.parse_variant('s+g@lr:optim_wrapper.optimizer.lr=1e-3').preset == 's+g'
    assert ablation.parse_variant('pd-b@again').preset == 'pd-b'
    assert ablation.parse_variant('ring@x:a=1').preset is None  # a free label may hold an @
    with pytest.raises(ValueError, match='neither a preset'):
        ablation.parse_variant('ring@x')
    with pytest.raises(ValueError, match='names the run directory'):
        ablation.parse_variant('a/b:x=1')
    with pytest.raises(ValueError, match='unique'):
        ablation.parse_variants(['pd-a', 'pd-a:x=1'])
    assert ablation.parse_seeds('3') == [0, 1, 2]
    assert ablation.parse_seeds('0,5,7') == [0, 5, 7]
    with pytest.raises(ValueError):
        ablation.parse_seeds('0,0')


# ---------------------------------------------------------------------------------------------- configs
def _apply(config, spec):
    return ablation.apply_variant(Config.fromfile(config), ablation.parse_variant(spec))


def _hooks(cfg):
    return [h['type'] for h in cfg.get('custom_hooks') or []]


@pytest.mark.parametrize('config', [CLS_CONFIG, DET_CONFIG])
def test_presets_rewrite_classifier_and_detector(config):
    plain = _apply(config, 'plain')
    assert plain.model.backbone.type == 'ResNet' and 'mode' not in plain.model.backbone
    assert _apply(config, 's').model.backbone.type == 'ResNet'  # one standard branch is the plain conv
    assert _apply(config, 'pd-a').model.backbone.mode == 'A'
    pdb = _apply(config, 'pd-b')
    assert pdb.model.backbone.mode == 'B' and ablation.TEMPERATURE_HOOK not in _hooks(pdb)
    sgk = _apply(config, 's+g+k')
    assert tuple(sgk.model.backbone.branches) == ('standard', 'group', 'skeleton')
    assert sgk.model.backbone.type == 'PDResNet'


def test_anneal_preset_sizes_hook_and_keeps_a_configured_one():
    cfg = _apply(CLS_CONFIG, 'pd-b-anneal')  # 6 epochs: the first third
    (hook, ) = [h for h in cfg.custom_hooks if h['type'] == ablation.TEMPERATURE_HOOK]
    assert hook['epochs'] == 2 and hook['start'] == 30.0 and cfg.model.backbone.mode == 'B'
    cfg = _apply(CLS_CONFIG, 'pd-b-anneal:train_cfg.max_epochs=12')  # overrides come after the preset
    assert cfg.train_cfg.max_epochs == 12
    anneal_cfg = osp.join(REPO, 'configs', 'demo', 'pd-b-resnet18_shapes-cls_anneal.py')
    kept = _apply(anneal_cfg, 'pd-b-anneal')
    assert _hooks(kept).count(ablation.TEMPERATURE_HOOK) == 1
    assert ablation.TEMPERATURE_HOOK not in _hooks(_apply(anneal_cfg, 'pd-b'))  # pd-b: without annealing
    assert ablation.TEMPERATURE_HOOK not in _hooks(_apply(anneal_cfg, 'plain'))


def test_override_variant_and_seed():
    cfg = _apply(CLS_CONFIG, "s+g:model.backbone.branches=\"('standard','group')\",model.backbone.reduction=2")
    assert tuple(cfg.model.backbone.branches) == ('standard', 'group') and cfg.model.backbone.reduction == 2
    run = ablation.run_config(cfg, 7, '/tmp/x/s+g/seed7')
    assert run.randomness.seed == 7 and run.work_dir == '/tmp/x/s+g/seed7' and run.resume is False
    assert Config.fromfile(CLS_CONFIG).randomness.seed == 0  # the base is not touched


def test_labelled_plain_preset_and_ring_variants_of_the_rpg_study():
    """The RPG study (docs/benchmarks.md): ring variants set the ring; plain@wN is the inner ResNet, narrower."""
    config = osp.join(REPO, 'configs', 'rpg', 'rpg-resnet18_shapes-cls-hard.py')
    ring = _apply(config, 'ring-1-8:model.backbone.ring_ratio=0.125,model.backbone.permutation=full')
    assert ring.model.backbone.type == 'RPGBackbone' and ring.model.backbone.ring_ratio == 0.125
    assert ring.model.backbone.permutation == 'full'
    narrow = _apply(config, 'plain@w8:model.backbone.base_channels=8,model.head.in_channels=64')
    assert narrow.model.backbone.type == 'ResNet' and 'ring_ratio' not in narrow.model.backbone
    assert narrow.model.backbone.base_channels == 8 and narrow.model.head.in_channels == 64
    assert _apply(config, 'plain').model.backbone.base_channels == 16


def test_pd_presets_need_a_pddr_config():
    with pytest.raises(ValueError, match='needs a PDDR config'):
        _apply(PLAIN_DET_CONFIG, 'pd-b')
    assert _apply(PLAIN_DET_CONFIG, 'plain').model.backbone.type == 'ResNet'


# ---------------------------------------------------------------------------------------------- skip / resume
def _fake_done(run_dir, top1, seconds=1.0, trainable_params=None):
    os.makedirs(run_dir, exist_ok=True)
    with open(osp.join(run_dir, ablation.METRICS_FILE), 'w') as f:
        json.dump(dict(metrics={'accuracy/top1': top1, 'accuracy/top5': 99.0}, seconds=seconds,
                       trainable_params=trainable_params), f)


def test_study_skips_finished_resumes_partial_and_reports_failures(tmp_path, capsys):
    base = Config.fromfile(CLS_CONFIG)
    variants = ablation.parse_variants(['plain', 'pd-b'])
    root = str(tmp_path)
    _fake_done(ablation.run_dir_of(root, 'plain', 0), 80.0)  # finished before
    partial = ablation.run_dir_of(root, 'pd-b', 0)  # interrupted: a checkpoint, no metrics
    os.makedirs(partial)
    ablation.prepare_run(ablation.run_config(ablation.apply_variant(base, variants[1]), 0, partial), partial)
    open(osp.join(partial, 'last_checkpoint'), 'w').write(osp.join(partial, 'epoch_2.pth'))
    assert ablation.run_state(partial) == 'partial'

    calls = []

    def fake_run(run_dir):
        calls.append((run_dir, ablation.run_state(run_dir)))
        assert osp.isfile(osp.join(run_dir, 'config.py'))
        if run_dir.endswith(osp.join('pd-b', 'seed1')):
            return 1  # a crash: no metrics file
        _fake_done(run_dir, 70.0 + len(calls))
        return 0

    states = ablation.run_study(base, variants, [0, 1], root, run_fn=fake_run)
    assert [(osp.relpath(d, root), s) for d, s in calls] == [
        (osp.join('plain', 'seed1'), 'new'), (osp.join('pd-b', 'seed0'), 'partial'), (osp.join('pd-b', 'seed1'), 'new')]
    assert states == {('plain', 0): 'done', ('plain', 1): 'done', ('pd-b', 0): 'done', ('pd-b', 1): 'failed'}
    out = capsys.readouterr().out
    assert 'finished before, skipped' in out and 'resuming' in out and 'FAILED (exit code 1)' in out
    cfg = Config.fromfile(osp.join(root, 'pd-b', 'seed1', 'config.py'))
    assert cfg.randomness.seed == 1 and cfg.model.backbone.mode == 'B'

    calls.clear()  # a second study only retries the failed run
    ablation.run_study(base, variants, [0, 1], root, run_fn=lambda d: calls.append(d) or 1)
    assert calls == [ablation.run_dir_of(root, 'pd-b', 1)]


@pytest.mark.parametrize('dry_run', [False, True])
def test_changed_config_is_refused_for_a_finished_run_before_anything_trains(tmp_path, dry_run):
    base = Config.fromfile(CLS_CONFIG)
    root = str(tmp_path)
    rd = ablation.run_dir_of(root, 'pd-b', 1)
    ablation.prepare_run(ablation.run_config(ablation.apply_variant(base, ablation.parse_variant('pd-b')), 1, rd), rd)
    _fake_done(rd, 75.0)
    assert ablation.run_state(rd) == 'done'
    other = ablation.parse_variants(['pd-b:model.backbone.reduction=2'])
    calls = []
    with pytest.raises(RuntimeError, match='differs from the config'):
        ablation.run_study(base, other, [0, 1], root, run_fn=calls.append, dry_run=dry_run)
    assert calls == []  # seed 0 was not trained first


def test_a_run_another_study_is_training_is_skipped_not_trained_twice(tmp_path, capsys):
    import fcntl
    base = Config.fromfile(CLS_CONFIG)
    variants = ablation.parse_variants(['plain'])
    root = str(tmp_path)
    busy = ablation.run_dir_of(root, 'plain', 0)
    os.makedirs(busy)
    trained = []

    def fake_run(rd):
        trained.append(rd)
        _fake_done(rd, 80.0)
        return 0

    with open(osp.join(busy, ablation.LOCK_FILE), 'w') as held:  # as another study process would hold it
        fcntl.flock(held, fcntl.LOCK_EX)
        states = ablation.run_study(base, variants, [0, 1], root, run_fn=fake_run)
    assert states == {('plain', 0): 'busy', ('plain', 1): 'done'} and trained == [ablation.run_dir_of(root, 'plain', 1)]
    assert 'plain seed 0: being trained by another process' in capsys.readouterr().out
    states = ablation.run_study(base, variants, [0, 1], root, run_fn=fake_run)  # the lock is free again
    assert states == {('plain', 0): 'done', ('plain', 1): 'done'} and trained[-1] == busy


def test_changed_config_is_refused_for_an_unfinished_run(tmp_path):
    base = Config.fromfile(CLS_CONFIG)
    rd = ablation.run_dir_of(str(tmp_path), 'pd-b', 0)
    ablation.prepare_run(ablation.run_config(ablation.apply_variant(base, ablation.parse_variant('pd-b')), 0, rd), rd)
    open(osp.join(rd, 'last_checkpoint'), 'w').write('epoch_1.pth')
    other = ablation.parse_variants(['pd-b:model.backbone.reduction=2'])
    with pytest.raises(RuntimeError, match='differs from the config'):
        ablation.run_study(base, other, [0], str(tmp_path), run_fn=lambda d: 0)


# ---------------------------------------------------------------------------------------------- summary
def test_summary_mean_std_markdown_csv(tmp_path):
    root = str(tmp_path)
    for seed, v in enumerate((80.0, 82.0, 84.0)):
        _fake_done(ablation.run_dir_of(root, 'plain', seed), v, seconds=10)
    for seed, v in enumerate((90.0, 91.0)):  # seed 2 missing
        _fake_done(ablation.run_dir_of(root, 'pd-b', seed), v, seconds=20)
    variants = ablation.parse_variants(['plain', 'pd-b'])
    md = ablation.report(root, variants, [0, 1, 2], None, 'test study')
    rows = list(csv.DictReader(open(osp.join(root, 'results.csv'))))
    assert len(rows) == 6 and rows[-1]['status'] == 'missing' and rows[0]['accuracy/top1'] == '80.0'
    summary = {r['variant']: r for r in csv.DictReader(open(osp.join(root, 'summary.csv')))}
    assert summary['plain']['metric'] == 'accuracy/top1'  # the evaluator's first key
    assert float(summary['plain']['mean']) == 82.0 and math.isclose(float(summary['plain']['std']), 2.0)
    assert summary['pd-b']['n'] == '2' and math.isclose(float(summary['pd-b']['std']), math.sqrt(0.5))
    assert '| plain | `plain` | 80.00 | 82.00 | 84.00 | 82.00 ± 2.00 | 3 | 10 |' in md
    assert '| pd-b | `pd-b` | 90.00 | 91.00 | n/a | 90.50 ± 0.71 | 2 | 20 |' in md
    assert open(osp.join(root, 'summary.md')).read() == md
    assert osp.getsize(osp.join(root, 'summary.png')) > 1000
    ablation.report(root, variants, [0, 1, 2], 'accuracy/top5', 'x')
    assert '99.00 ± 0.00' in open(osp.join(root, 'summary.md')).read()
    assert ablation.mean_std([1.0])[0] == 1.0 and math.isnan(ablation.mean_std([1.0])[1])
    assert not osp.exists(osp.join(root, 'summary_params.png'))  # no parameter counts: no parameter plot


def test_summary_reports_trainable_parameters_and_plots_against_them(tmp_path):
    root = str(tmp_path)
    runs = {'ring-1-4': (60.0, 180120), 'ring-1-8': (55.0, 92952), 'plain': (62.0, 703128),
            'plain@w8': (58.0, 177232)}
    for name, (top1, params) in runs.items():
        for seed in (0, 1):
            _fake_done(ablation.run_dir_of(root, name, seed), top1 + seed, trainable_params=params)
    variants = ablation.parse_variants(['ring-1-4:a=1', 'ring-1-8:a=2', 'plain', 'plain@w8:b=1'])
    md = ablation.report(root, variants, [0, 1], None, 'rpg')
    assert '| 60.50 ± 0.71 | 2 | 1 | 180,120 |' in md and '| 58.50 ± 0.71 | 2 | 1 | 177,232 |' in md
    summary = {r['variant']: r for r in csv.DictReader(open(osp.join(root, 'summary.csv')))}
    assert summary['ring-1-8']['trainable_params'] == '92952'
    assert [ablation.series_of(v.name) for v in variants] == ['ring', 'ring', 'plain', 'plain']
    assert osp.getsize(osp.join(root, 'summary_params.png')) > 1000


def test_paired_differences_to_the_baseline_with_t_intervals(tmp_path):
    root = str(tmp_path)
    plain, better, same = (80.0, 82.0, 84.0, 81.0), (81.0, 83.5, 85.0, 82.5), (81.0, 81.0, 85.0, 80.0)
    for seed in range(4):
        _fake_done(ablation.run_dir_of(root, 'plain', seed), plain[seed])
        _fake_done(ablation.run_dir_of(root, 'pd-a', seed), better[seed])
        if seed != 3:  # pd-b seed 3 unfinished: compared on the three pairs it has
            _fake_done(ablation.run_dir_of(root, 'pd-b', seed), same[seed])
    variants = ablation.parse_variants(['plain', 'pd-a', 'pd-b'])
    md = ablation.report(root, variants, [0, 1, 2, 3], None, 'paired', baseline='plain')
    pairs = {p['variant']: p for p in ablation.paired_differences(
        ablation.summarize(ablation.collect(root, ['plain', 'pd-a', 'pd-b'], range(4)), 'accuracy/top1'), 'plain')}
    # pd-a - plain = 1, 1.5, 1, 1.5: mean 1.25, sample std 0.2887, t(0.975, 3) = 3.1824
    half = 3.182446305284263 * math.sqrt(1 / 12) / 2
    assert pairs['pd-a']['mean'] == pytest.approx(1.25) and pairs['pd-a']['n'] == 4
    assert (pairs['pd-a']['low'], pairs['pd-a']['high']) == pytest.approx((1.25 - half, 1.25 + half))
    assert pairs['pd-b']['n'] == 3 and pairs['pd-b']['diffs'] == {0: 1.0, 1: -1.0, 2: 1.0}
    assert f'| pd-a | 1.00 | 1.50 | 1.00 | 1.50 | 1.25 | [{1.25 - half:.2f}, {1.25 + half:.2f}] | 4 | above |' in md
    assert '| pd-b | 1.00 | -1.00 | 1.00 | n/a | 0.33 |' in md and md.rstrip().endswith('(within noise).')


def test_a_baseline_that_is_not_a_variant_is_refused_before_anything_trains(tmp_path):
    with pytest.raises(SystemExit, match=r"--baseline 'plian' is not one of the variants \['plain', 'pd-b'\]"):
        ablation.main([CLS_CONFIG, '--variants', 'plain', 'pd-b', '--baseline', 'plian', '--work-dir', str(tmp_path)],
                      run_fn=lambda d: pytest.fail('trained'))
    assert os.listdir(tmp_path) == []


def test_log_linear_fit_per_series():
    summary = [dict(variant=v, trainable_params=p, mean=m, std=0.5) for v, p, m in (
        ('ring-1-2', 400, 70.0), ('ring-1-4', 200, 68.0), ('ring-1-8', 100, 66.0),
        ('plain', 800, 75.0), ('plain@w8', 200, 71.0), ('plain@w4', 50, 60.0),
        ('pd-a', 1939642, 86.3), ('pd-b', 1958494, 85.9))]  # a series 1% apart: no fit
    fits = {f['series']: f for f in ablation.loglinear_fits(summary)}
    assert set(fits) == {'ring', 'plain'}
    assert fits['ring']['slope'] == pytest.approx(2.0) and fits['ring']['r2'] == pytest.approx(1.0)
    assert fits['plain']['n'] == 3 and 0 < fits['plain']['r2'] < 1
    assert '| ring | 3 | +2.00 | 1.00 |' in ablation.fits_markdown(list(fits.values()), 'top1')


def test_coco_metric_is_the_default_for_detectors():
    rows = [dict(variant='a', seed=0, status='done', seconds=1,
                 metrics={'coco/bbox_mAP': 0.4, 'coco/bbox_mAP_50': 0.6, 'coco/bbox_mAP_copypaste': '0.4 0.6'})]
    assert ablation.default_metric(rows) == 'coco/bbox_mAP'


# ---------------------------------------------------------------------------------------------- real run
def test_real_study_two_variants_two_seeds_then_skips(tmp_path):
    """2 variants x 2 seeds of the demo classifier, one short epoch each on a tiny set, then a re-run."""
    import generate_shapes_dataset as gen
    data = str(tmp_path / 'data')
    gen.main(['--out', data, '--num-train', '12', '--num-val', '4', '--img-size', '64', '--max-size', '30'])
    work = str(tmp_path / 'study')
    root = osp.join(data, 'cls')
    cmd = [sys.executable, osp.join(REPO, 'tools', 'analysis_tools', 'ablation.py'), CLS_CONFIG,
           '--variants', 'plain', 's+g', '--seeds', '2', '--work-dir', work, '--cfg-options',
           f'train_dataloader.dataset.data_root={root}', f'val_dataloader.dataset.data_root={root}',
           'train_dataloader.batch_size=16', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
           'param_scheduler.0.end=2', 'default_hooks.logger.interval=1']
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    took = time.time() - t0
    rows = list(csv.DictReader(open(osp.join(work, 'results.csv'))))
    assert len(rows) == 4 and all(r['status'] == 'done' for r in rows)
    # top-1 is a whole number of correct crops out of the val crops on disk (a NaN, a fraction or a
    # metric read from the wrong key fails)
    num_val = sum(len(files) for _, _, files in os.walk(osp.join(root, 'val')))
    correct = [float(r['accuracy/top1']) * num_val / 100 for r in rows]
    assert num_val > 0 and all(0 <= c <= num_val and abs(c - round(c)) < 1e-3 for c in correct), correct
    assert [(r['variant'], r['seed']) for r in rows] == [('plain', '0'), ('plain', '1'), ('s+g', '0'), ('s+g', '1')]
    assert 'accuracy/top1 mean ± std' in proc.stdout
    # trainable parameters recorded from the trained model: s+g adds a group branch (and its BN) to each conv
    params = {v: json.load(open(osp.join(work, v, 'seed0', ablation.METRICS_FILE)))['trainable_params']
              for v in ('plain', 's+g')}
    assert 0 < params['plain'] < params['s+g']

    # a run that died after its last checkpoint but before its metrics were written: resumed, then evaluated
    interrupted = osp.join(work, 'plain', 'seed1', ablation.METRICS_FILE)
    before = json.load(open(interrupted))['metrics']
    os.remove(interrupted)
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=str(tmp_path))
    assert again.returncode == 0, again.stdout[-3000:]
    assert again.stdout.count('finished before, skipped') == 3 and 'training in' not in again.stdout
    assert again.stdout.count('resuming in') == 1
    after = json.load(open(interrupted))
    assert after['metrics'] == pytest.approx(before) and after['iter'] == 2  # the same checkpoint, evaluated
    assert len(list(csv.DictReader(open(osp.join(work, 'results.csv'))))) == 4
    print(f'study of 4 runs: {took:.1f} s, the re-run {time.time() - t0 - took:.1f} s')
