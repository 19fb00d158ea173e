"""Train variants of one config for several seeds, then summarise the metric as mean ± std.

    python tools/analysis_tools/ablation.py CONFIG --variants plain pd-a pd-b pd-b-anneal --seeds 3 \\
        [--work-dir DIR] [--cfg-options KEY=VALUE ...] [--metric KEY] [--dry-run]

A variant is ``NAME[:KEY=VALUE,KEY=VALUE...]``. NAME is a preset, a preset with a label
(``PRESET@LABEL``: the preset, then the overrides, e.g. ``plain@w8:model.backbone.base_channels=8,...`` for
a narrower plain baseline) or a free label; the overrides are
``--cfg-options`` pairs applied after the preset (a value may be a quoted tuple or list, e.g.
``s+g:model.backbone.branches="('standard','group')"``; a comma-separated piece without ``=`` continues
the previous value, ``x:a.b=1,2`` sets ``a.b=[1, 2]``). Presets:

- ``plain``: the plain baseline (every PD* module replaced by its plain type: ``to_plain_config``);
- ``pd-a`` / ``pd-b``: every PDDR module in mode A / B, no temperature annealing;
- ``pd-b-anneal``: mode B with ``PDDRTemperatureHook`` (30 -> configured temperature over the first third
  of training), unless the config already holds one, which is then kept;
- branch subsets, the seed paper's ablation rows: ``s`` (one standard conv = ``plain``), ``s+s``,
  ``s+g``, ``s+k``, ``s+g+k``, ``s+s+g+k`` (s: standard, g: group, k: skeleton), in the config's mode.

Seed ``s`` sets ``cfg.randomness.seed = s``. Run ``(variant, seed)`` lives in ``DIR/<variant>/seed<s>/``:
``config.py`` (the full config it trains), mmengine's logs and checkpoints, ``run.log`` (its console
output) and, once it is finished and evaluated, ``metrics.json``: the marker that makes a re-run skip
it. A run without the marker resumes from its last checkpoint (mmengine's ``resume``). A run holds an
exclusive lock on ``DIR/<variant>/seed<s>/.lock`` while it trains, so several studies may share a work dir
(e.g. one per core, with other variants or seeds): one that reaches a run another is training skips it. Results go to
``DIR/results.csv`` (one row per run), ``DIR/summary.csv`` and ``DIR/summary.md`` (per variant, mean ±
sample std over seeds, trainable parameters; each variant's per-seed difference to ``--baseline``, default
``plain``, with its mean and 95% t-interval; a log-linear fit of the metric on the trainable parameters per
series where they differ) and ``DIR/summary.png``; where the variants differ in trainable
parameters also ``DIR/summary_params.png``, the metric against them on a log axis.

Each run is a subprocess (this script with ``--run-one``): a crash, an out-of-memory kill or a leak in one
run cannot take the study down or bleed into the next run, and mmengine's process-wide state (the
visualizer and logger instances by name, MessageHub, the default scope) starts clean every time. The
subprocess, not ``tools/train.py``, so that the process that trained also writes the final metrics: the
metric of a run is its evaluation at the end of training (the train loop's last validation, or one run
after training when a resumed run had nothing left to train).
"""
import argparse
import contextlib
import copy
import csv
import fcntl
import json
import math
import os
import os.path as osp
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from mmengine.config import Config, DictAction

BRANCH_CODES = {'s': 'standard', 'g': 'group', 'k': 'skeleton'}
NAMED_PRESETS = ('plain', 'pd-a', 'pd-b', 'pd-b-anneal')
TEMPERATURE_HOOK = 'PDDRTemperatureHook'
ANNEAL_FRACTION = 1 / 3  # pd-b-anneal anneals over this part of training (DyConv: 10 of its first epochs)
ANNEAL_START = 30.0
METRICS_FILE = 'metrics.json'
LOCK_FILE = '.lock'
_NAME_RE = re.compile(r'^[A-Za-z0-9_.+@-]+$')


# ---------------------------------------------------------------------------------------------- variants
@dataclass
class Variant:
    """A parsed ``--variants`` entry."""
    name: str
    overrides: Dict[str, Any] = field(default_factory=dict)
    spec: str = ''

    @property
    def preset(self) -> Optional[str]:
        return preset_of(self.name)


def branch_preset(name: str) -> Optional[Tuple[str, ...]]:
    """The branches of a shorthand like ``s+g+k`` (None when ``name`` is not one)."""
    codes = name.split('+')
    if name and all(c in BRANCH_CODES for c in codes):
        return tuple(BRANCH_CODES[c] for c in codes)
    return None


def is_preset(name: str) -> bool:
    return name in NAMED_PRESETS or branch_preset(name) is not None


def preset_of(name: str) -> Optional[str]:
    """The preset a variant name starts with (``plain@w8`` -> ``plain``), or None for a free label."""
    head = name.split('@', 1)[0]
    return head if is_preset(head) else None


def split_overrides(text: str) -> List[Tuple[str, str]]:
    """``'a=1,b="(1,2)",c=3,4'`` -> ``[('a', '1'), ('b', '"(1,2)"'), ('c', '3,4')]``.

    Commas inside quotes or brackets never split; a top-level piece without ``=`` belongs to the
    previous value (a list, as ``--cfg-options key=1,2`` gives).
    """
    pieces, depth, quote, cur = [], 0, None, ''
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in '\'"':
            quote = ch
        elif ch in '([':
            depth += 1
        elif ch in ')]':
            depth -= 1
        elif ch == ',' and depth == 0:
            pieces.append(cur)
            cur = ''
            continue
        cur += ch
    if quote or depth:
        raise ValueError(f'unbalanced quotes or brackets in {text!r}')
    pieces.append(cur)
    pairs: List[List[str]] = []
    for piece in pieces:
        key, eq, value = piece.partition('=')
        if eq and re.fullmatch(r'[A-Za-z_][\w.]*', key.strip()):
            pairs.append([key.strip(), value])
        elif pairs:
            pairs[-1][1] += ',' + piece
        else:
            raise ValueError(f'{piece!r} is not KEY=VALUE')
    return [(k, v) for k, v in pairs]


def parse_variant(spec: str) -> Variant:
    """``NAME[:KEY=VALUE,...]`` -> Variant; values parsed as ``--cfg-options`` does (DictAction)."""
    name, _, rest = spec.partition(':')
    name = name.strip()
    if not _NAME_RE.match(name):
        raise ValueError(f'variant {spec!r}: the name {name!r} must be letters, digits and _ . + - @ only '
                         '(it names the run directory)')
    overrides = {}
    if rest.strip():
        for key, value in split_overrides(rest):
            overrides[key] = DictAction._parse_iterable(value.strip())
    elif preset_of(name) is None:
        raise ValueError(f'variant {spec!r} is neither a preset ({", ".join(NAMED_PRESETS)}, or branch codes '
                         f'like s+g+k, optionally PRESET@LABEL) nor NAME:KEY=VALUE,...')
    return Variant(name, overrides, spec)


def parse_variants(specs: Sequence[str]) -> List[Variant]:
    variants = [parse_variant(s) for s in specs]
    names = [v.name for v in variants]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f'variant names must be unique (they name the run directories): {dup}')
    return variants


def parse_seeds(text: str) -> List[int]:
    """``'3'`` -> [0, 1, 2]; ``'0,5,7'`` -> [0, 5, 7]."""
    try:
        if ',' in text:
            seeds = [int(s) for s in text.split(',') if s.strip()]
        else:
            seeds = list(range(int(text)))
    except ValueError:
        raise ValueError(f'--seeds takes a count (3) or a comma list (0,5,7), got {text!r}') from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f'--seeds must give at least one seed and no seed twice, got {text!r}')
    return seeds


# ---------------------------------------------------------------------------------------------- configs
def set_pddr_args(model_cfg: Dict, **kwargs) -> int:
    """Set PDDR arguments (``mode``, ``branches``, ...) on every PDDR module / PDConv2d dict of the model
    config, in place; returns how many dicts were changed."""
    from pddr_mm.deployment.configs import is_pd_conv_cfg, is_pddr_module_cfg
    count = 0

    def visit(node):
        nonlocal count
        if isinstance(node, dict):
            for v in node.values():
                visit(v)
            if is_pd_conv_cfg(node) or is_pddr_module_cfg(node):
                node.update(copy.deepcopy(kwargs))
                count += 1
        elif isinstance(node, (list, tuple)):
            for v in node:
                visit(v)

    visit(model_cfg)
    return count


def _without_temperature_hook(cfg: Config) -> None:
    hooks = [h for h in (cfg.get('custom_hooks') or []) if h.get('type') != TEMPERATURE_HOOK]
    cfg.custom_hooks = hooks


def _anneal_hook(cfg: Config) -> Dict:
    """PDDRTemperatureHook over the first ANNEAL_FRACTION of the config's training."""
    train_cfg = cfg.get('train_cfg') or {}
    if train_cfg.get('by_epoch', True) and 'max_epochs' in train_cfg:
        return dict(type=TEMPERATURE_HOOK, start=ANNEAL_START, epochs=max(1, round(train_cfg['max_epochs'] *
                                                                                   ANNEAL_FRACTION)))
    if 'max_iters' in train_cfg:
        return dict(type=TEMPERATURE_HOOK, start=ANNEAL_START, iters=max(1, round(train_cfg['max_iters'] *
                                                                                  ANNEAL_FRACTION)))
    raise ValueError('pd-b-anneal: train_cfg has neither max_epochs nor max_iters to size the annealing; add '
                     f'a {TEMPERATURE_HOOK} to custom_hooks in an override instead')


def apply_variant(base: Config, variant: Variant) -> Config:
    """A copy of ``base`` with the variant's preset, then its overrides, applied."""
    from pddr_mm.deployment.configs import count_pddr_cfgs, to_plain_config
    cfg = copy.deepcopy(base)
    preset = variant.preset
    branches = branch_preset(preset) if preset else None
    if preset and preset != 'plain' and branches != ('standard', ) and count_pddr_cfgs(cfg.model) == 0:
        raise ValueError(f'variant {variant.name!r} needs a PDDR config (PD* modules or PDConv2d), but '
                         f'{cfg.filename} holds none: start from the PDDR config, `plain` derives the baseline')
    if preset in ('plain', 's'):
        cfg = to_plain_config(cfg)
        _without_temperature_hook(cfg)
    elif preset in ('pd-a', 'pd-b'):
        set_pddr_args(cfg.model, mode=preset[-1].upper())
        _without_temperature_hook(cfg)
    elif preset == 'pd-b-anneal':
        set_pddr_args(cfg.model, mode='B')
        if not any(h.get('type') == TEMPERATURE_HOOK for h in (cfg.get('custom_hooks') or [])):
            cfg.custom_hooks = list(cfg.get('custom_hooks') or []) + [_anneal_hook(cfg)]
    elif branches:
        set_pddr_args(cfg.model, branches=branches)
    if variant.overrides:
        cfg.merge_from_dict(copy.deepcopy(variant.overrides))
    return cfg


def run_config(variant_cfg: Config, seed: int, run_dir: str) -> Config:
    cfg = copy.deepcopy(variant_cfg)
    cfg.randomness = dict(cfg.get('randomness') or {}, seed=seed)
    cfg.work_dir = osp.abspath(run_dir)
    cfg.launcher = 'none'
    cfg.resume = False  # the worker decides, from the run directory
    return cfg


def run_dir_of(root: str, variant: str, seed: int) -> str:
    return osp.join(root, variant, f'seed{seed}')


# ---------------------------------------------------------------------------------------------- runs
def run_state(run_dir: str) -> str:
    """'done' (metrics.json written), 'partial' (a checkpoint to resume from) or 'new'."""
    if osp.isfile(osp.join(run_dir, METRICS_FILE)):
        return 'done'
    if osp.isfile(osp.join(run_dir, 'last_checkpoint')):
        return 'partial'
    return 'new'


def check_run_config(cfg: Config, run_dir: str) -> None:
    """Refuse a run directory, finished or interrupted, that was made with another config."""
    path = osp.join(run_dir, 'config.py')
    if not osp.isfile(path) or run_state(run_dir) == 'new':
        return
    with open(path) as f:
        if f.read() != cfg.pretty_text:
            raise RuntimeError(
                f'{path} differs from the config this variant and seed give now (the variant, the base config '
                'or --cfg-options changed since that run): its results would not belong to this study. Delete '
                f'{run_dir} or use another --work-dir.')


def prepare_run(cfg: Config, run_dir: str) -> str:
    """Write ``run_dir/config.py``; refuses a run directory made with another config."""
    check_run_config(cfg, run_dir)
    os.makedirs(run_dir, exist_ok=True)
    path = osp.join(run_dir, 'config.py')
    with open(path, 'w') as f:
        f.write(cfg.pretty_text)
    return path


def run_subprocess(run_dir: str) -> int:
    """Train and evaluate one prepared run in a fresh interpreter; its output goes to ``run_dir/run.log``."""
    with open(osp.join(run_dir, 'run.log'), 'a') as log:
        log.write(f'\n===== {time.strftime("%Y-%m-%d %H:%M:%S")} ablation.py --run-one {run_dir}\n')
        log.flush()
        proc = subprocess.run([sys.executable, osp.abspath(__file__), '--run-one', run_dir], stdout=log,
                              stderr=subprocess.STDOUT)
    return proc.returncode


def _tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors='replace') as f:
            return ''.join(f.readlines()[-lines:])
    except OSError:
        return ''


def run_study(base: Config, variants: List[Variant], seeds: List[int], root: str,
              run_fn: Callable[[str], int] = run_subprocess, dry_run: bool = False) -> Dict[Tuple[str, int], str]:
    """Run every (variant, seed) not finished yet, in order; returns each run's state afterwards
    ('done', 'failed', or for a dry run the state found)."""
    configs = {v.name: apply_variant(base, v) for v in variants}  # every variant checked before training
    # every run's directory and config, each directory checked before anything trains: a finished run of
    # another config would otherwise join the summary
    runs = {}
    for v in variants:
        for seed in seeds:
            rd = run_dir_of(root, v.name, seed)
            cfg = run_config(configs[v.name], seed, rd)
            check_run_config(cfg, rd)
            runs[(v.name, seed)] = rd, cfg
    states = {}
    for k, ((name, seed), (rd, cfg)) in enumerate(runs.items(), 1):
        state = run_state(rd)
        tag = f'[{k}/{len(runs)}] {name} seed {seed}'
        if state == 'done':
            print(f'{tag}: finished before, skipped ({osp.join(rd, METRICS_FILE)})', flush=True)
            states[(name, seed)] = 'done'
            continue
        if dry_run:
            print(f'{tag}: would {"resume" if state == "partial" else "train"} in {rd}', flush=True)
            states[(name, seed)] = state
            continue
        with run_lock(rd) as mine:
            if not mine:
                print(f'{tag}: being trained by another process ({osp.join(rd, LOCK_FILE)} is locked), skipped',
                      flush=True)
                states[(name, seed)] = 'busy'
                continue
            state = run_state(rd)  # another study may have finished it meanwhile
            if state == 'done':
                print(f'{tag}: finished by another process, skipped', flush=True)
                states[(name, seed)] = 'done'
                continue
            prepare_run(cfg, rd)
            print(f'{tag}: {"resuming" if state == "partial" else "training"} in {rd} ...', flush=True)
            t0 = time.time()
            rc = run_fn(rd)
            ok = rc == 0 and run_state(rd) == 'done'
        states[(name, seed)] = 'done' if ok else 'failed'
        if ok:
            print(f'{tag}: done in {time.time() - t0:.0f} s', flush=True)
        else:
            print(f'{tag}: FAILED (exit code {rc}) after {time.time() - t0:.0f} s; the end of '
                  f'{osp.join(rd, "run.log")}:\n{_tail(osp.join(rd, "run.log"))}', flush=True)
    return states


@contextlib.contextmanager
def run_lock(run_dir: str):
    """Yields whether this process holds the run's lock (an exclusive ``flock`` on ``run_dir/.lock``, released
    when the process ends, however it ends): two studies sharing a --work-dir never train one run together."""
    os.makedirs(run_dir, exist_ok=True)
    with open(osp.join(run_dir, LOCK_FILE), 'w') as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------- worker
def _as_float(v: Any) -> Any:
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def run_one(run_dir: str) -> None:
    """Train (or resume) the run in ``run_dir`` and write its final metrics to ``metrics.json``."""
    from mmengine.hooks import Hook
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    from pddr_mm.utils import setup_runtime

    # without a file name: mmengine's Runner then dumps the config it runs (setup_runtime changes it) to
    # <timestamp>.py, not over config.py, which the study compares against when it comes back to this run
    cfg = Config(Config.fromfile(osp.join(run_dir, 'config.py')).to_dict())
    cfg.work_dir = osp.abspath(run_dir)
    if osp.isfile(osp.join(run_dir, 'last_checkpoint')):
        cfg.resume, cfg.load_from = True, None  # mmengine resumes from the checkpoint last_checkpoint names
    setup_runtime(cfg)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)

    class Capture(Hook):
        """Keeps the latest validation metrics and the iteration they were computed at."""
        priority = 'LOWEST'
        metrics, at_iter = None, -1

        def after_val_epoch(self, runner, metrics=None):
            self.metrics, self.at_iter = dict(metrics or {}), runner.iter

    capture = Capture()
    runner.register_hook(capture)
    t0 = time.time()
    runner.train()
    metrics = capture.metrics if capture.at_iter == runner.iter else None
    if metrics is None:  # resumed after the last training iteration, or the loop has no validation at its end
        metrics = runner.val_loop.run() or {}
    # after training: a model may freeze parts of itself when it builds or starts training
    params = list(runner.model.parameters())  # shared parameters (an RPG ring) once
    record = dict(metrics={k: _as_float(v) for k, v in metrics.items()}, iter=runner.iter, epoch=runner.epoch,
                  trainable_params=sum(p.numel() for p in params if p.requires_grad),
                  params=sum(p.numel() for p in params),
                  seconds=round(time.time() - t0, 1), finished=time.strftime('%Y-%m-%d %H:%M:%S'))
    tmp = osp.join(run_dir, METRICS_FILE + '.tmp')
    with open(tmp, 'w') as f:
        json.dump(record, f, indent=1)
    os.replace(tmp, osp.join(run_dir, METRICS_FILE))  # the marker appears whole or not at all


# ---------------------------------------------------------------------------------------------- summary
def collect(root: str, variants: Sequence[str], seeds: Sequence[int]) -> List[Dict]:
    """One row per (variant, seed): status, metrics and seconds, from the metrics files."""
    rows = []
    for v in variants:
        for s in seeds:
            path = osp.join(run_dir_of(root, v, s), METRICS_FILE)
            row = dict(variant=v, seed=s, status='missing', metrics={}, seconds=None, trainable_params=None)
            if osp.isfile(path):
                with open(path) as f:
                    rec = json.load(f)
                row.update(status='done', metrics=rec.get('metrics', {}), seconds=rec.get('seconds'),
                           trainable_params=rec.get('trainable_params'))
            rows.append(row)
    return rows


def default_metric(rows: List[Dict]) -> Optional[str]:
    """The evaluator's first numeric metric key (accuracy/top1, coco/bbox_mAP)."""
    for r in rows:
        for k, v in r['metrics'].items():
            if isinstance(v, (int, float)):
                return k
    return None


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (nan for fewer than two values)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    std = math.sqrt(sum((x - mean)**2 for x in values) / (n - 1)) if n > 1 else math.nan
    return mean, std


def summarize(rows: List[Dict], metric: str) -> List[Dict]:
    """Per variant (in order): seeds' values, n, mean, std, mean seconds per run."""
    out = {}
    for r in rows:
        s = out.setdefault(r['variant'], dict(variant=r['variant'], values={}, seconds=[], trainable_params=None))
        if r.get('trainable_params') is not None:
            s['trainable_params'] = r['trainable_params']
        if r['status'] == 'done' and isinstance(r['metrics'].get(metric), (int, float)):
            s['values'][r['seed']] = r['metrics'][metric]
            if r['seconds'] is not None:
                s['seconds'].append(r['seconds'])
    for s in out.values():
        s['n'] = len(s['values'])
        s['mean'], s['std'] = mean_std(list(s['values'].values()))
        s['mean_seconds'] = sum(s['seconds']) / len(s['seconds']) if s['seconds'] else math.nan
    return list(out.values())


def _digits(summary: List[Dict]) -> int:
    """2 decimals for percentages, 4 for fractions."""
    return 2 if any(s['mean'] > 1.5 for s in summary if not math.isnan(s['mean'])) else 4


def _fmt(x: float, digits: int) -> str:
    return 'n/a' if x is None or (isinstance(x, float) and math.isnan(x)) else f'{x:.{digits}f}'


def to_markdown(summary: List[Dict], seeds: Sequence[int], metric: str, specs: Dict[str, str],
                title: str = '') -> str:
    digits = _digits(summary)
    head = ['variant', 'definition'] + [f'seed {s}' for s in seeds] + [f'{metric} mean ± std', 'n', 's/run',
                                                                       'trainable params']
    lines = [f'## {title}' if title else '', '', '| ' + ' | '.join(head) + ' |',
             '|' + '---|' * len(head)]
    for s in summary:
        cells = [s['variant'], f'`{specs.get(s["variant"], s["variant"])}`']
        cells += [_fmt(s['values'].get(seed), digits) for seed in seeds]
        cells += [f'{_fmt(s["mean"], digits)} ± {_fmt(s["std"], digits)}', str(s['n']), _fmt(s['mean_seconds'], 0),
                  'n/a' if s.get('trainable_params') is None else f'{s["trainable_params"]:,}']
        lines.append('| ' + ' | '.join(cells) + ' |')
    lines.append('')
    lines.append('std: sample standard deviation over seeds. n/a: fewer than two seeds with the metric, or a seed '
                 'not finished (or finished without the metric, e.g. a detector that made no detection).')
    return '\n'.join(lines).lstrip('\n') + '\n'


def paired_differences(summary: List[Dict], baseline: str, confidence: float = 0.95) -> List[Dict]:
    """Each variant against ``baseline``, paired by seed: per-seed differences, their mean and its
    ``confidence`` t-interval (seeds where both finished; nan bounds for fewer than two pairs)."""
    from scipy import stats
    base = next((s for s in summary if s['variant'] == baseline), None)
    if base is None:
        return []
    out = []
    for s in summary:
        if s['variant'] == baseline:
            continue
        diffs = {seed: v - base['values'][seed] for seed, v in s['values'].items() if seed in base['values']}
        mean, std = mean_std(list(diffs.values()))
        n = len(diffs)
        half = stats.t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n) if n > 1 else math.nan
        out.append(dict(variant=s['variant'], diffs=diffs, n=n, mean=mean, low=mean - half, high=mean + half))
    return out


def paired_markdown(pairs: List[Dict], baseline: str, seeds: Sequence[int], digits: int) -> str:
    head = ['variant'] + [f'seed {s}' for s in seeds] + ['mean difference', '95% t-interval', 'n', 'verdict']
    lines = [f'Paired by seed: each variant minus `{baseline}`.', '', '| ' + ' | '.join(head) + ' |',
             '|' + '---|' * len(head)]
    for p in pairs:
        if math.isnan(p['low']):
            verdict = 'n/a'
        else:
            verdict = 'above' if p['low'] > 0 else 'below' if p['high'] < 0 else 'within noise'
        cells = [p['variant']] + [_fmt(p['diffs'].get(seed), digits) for seed in seeds]
        cells += [_fmt(p['mean'], digits), f'[{_fmt(p["low"], digits)}, {_fmt(p["high"], digits)}]', str(p['n']),
                  verdict]
        lines.append('| ' + ' | '.join(cells) + ' |')
    lines += ['', f'verdict: the interval above 0 (better than `{baseline}` beyond the seed noise), below 0, or '
              'containing 0 (within noise).']
    return '\n'.join(lines) + '\n'


def loglinear_fits(summary: List[Dict]) -> List[Dict]:
    """Per series of the parameter plot (:func:`series_of`) whose sizes span a doubling or more: the
    least-squares line of the mean metric on log2(trainable parameters): ``slope`` (metric per doubling),
    ``r2`` (on the means). A narrower span (PD-A against PD-B, 1% apart) would fit noise."""
    out = []
    points = [s for s in summary if s.get('trainable_params') and not math.isnan(s['mean'])]
    for name in dict.fromkeys(series_of(s['variant']) for s in points):
        pts = [(math.log2(s['trainable_params']), s['mean']) for s in points if series_of(s['variant']) == name]
        xs = [x for x, _ in pts]
        if max(xs) - min(xs) < 1:
            continue
        n = len(pts)
        mx, my = sum(xs) / n, sum(y for _, y in pts) / n
        sxx = sum((x - mx)**2 for x, _ in pts)
        slope = sum((x - mx) * (y - my) for x, y in pts) / sxx
        ss_res = sum((y - my - slope * (x - mx))**2 for x, y in pts)
        ss_tot = sum((y - my)**2 for _, y in pts)
        out.append(dict(series=name, n=n, slope=slope, intercept=my - slope * mx,
                        r2=1 - ss_res / ss_tot if ss_tot > 0 else math.nan))
    return out


def fits_markdown(fits: List[Dict], metric: str) -> str:
    lines = [f'Log-linear fit of the mean {metric} on log2(trainable parameters), per series:', '',
             '| series | sizes | per doubling | R² (means) |', '|---|---|---|---|']
    lines += [f'| {f["series"]} | {f["n"]} | {f["slope"]:+.2f} | {_fmt(f["r2"], 2)} |' for f in fits]
    return '\n'.join(lines) + '\n'


def write_results_csv(rows: List[Dict], path: str) -> None:
    keys = []
    for r in rows:
        keys += [k for k in r['metrics'] if k not in keys]
    with open(path, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['variant', 'seed', 'status'] + keys + ['seconds'])
        for r in rows:
            w.writerow([r['variant'], r['seed'], r['status']] + [r['metrics'].get(k, '') for k in keys] +
                       ['' if r['seconds'] is None else r['seconds']])


def write_summary_csv(summary: List[Dict], metric: str, path: str) -> None:
    with open(path, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['variant', 'metric', 'n', 'mean', 'std', 'mean_seconds', 'trainable_params'])
        for s in summary:
            w.writerow([s['variant'], metric, s['n'], s['mean'], s['std'], s['mean_seconds'],
                        '' if s.get('trainable_params') is None else s['trainable_params']])


def plot_summary(summary: List[Dict], metric: str, path: str, title: str = '') -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(1.3 * len(summary) + 2.5, 4))
    for i, s in enumerate(summary):
        vals = list(s['values'].values())
        ax.scatter([i] * len(vals), vals, color='tab:blue', s=18, alpha=0.6, zorder=3)
        if vals:
            std = 0 if math.isnan(s['std']) else s['std']
            ax.errorbar(i + 0.15, s['mean'], yerr=std, fmt='o', color='black', capsize=4, zorder=4)
    ax.set_xticks(range(len(summary)), [s['variant'] for s in summary], rotation=20)
    ax.set(ylabel=metric, title=title or f'{metric} per variant (dots: seeds; black: mean ± std)')
    ax.grid(axis='y', alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def series_of(variant: str) -> str:
    """The series a variant belongs to in the parameter plot: its name up to the first ``-`` or ``@``
    (``ring-1-4`` and ``ring-1-8`` -> ``ring``; ``plain`` and ``plain@w8`` -> ``plain``)."""
    return re.split(r'[-@]', variant, maxsplit=1)[0]


def plot_params(summary: List[Dict], metric: str, path: str, title: str = '') -> bool:
    """The metric (mean ± std) against trainable parameters on a log axis, one line per series; written
    only when the variants differ in trainable parameters (returns whether it was)."""
    points = [s for s in summary if s.get('trainable_params') and not math.isnan(s['mean'])]
    if len({s['trainable_params'] for s in points}) < 2:
        return False
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name in dict.fromkeys(series_of(s['variant']) for s in points):
        pts = sorted((s for s in points if series_of(s['variant']) == name), key=lambda s: s['trainable_params'])
        xs, ys = [s['trainable_params'] for s in pts], [s['mean'] for s in pts]
        errs = [0 if math.isnan(s['std']) else s['std'] for s in pts]
        line = ax.errorbar(xs, ys, yerr=errs, fmt='o-', capsize=3, label=name)
        for s in pts:
            ax.annotate(s['variant'], (s['trainable_params'], s['mean']), textcoords='offset points', xytext=(4, 4),
                        fontsize=7, color=line[0].get_color())
    ax.set_xscale('log')
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels crowd a short log axis
    ax.set(xlabel='trainable parameters (log)', ylabel=metric,
           title=title or f'{metric} against trainable parameters (mean ± std over seeds)')
    ax.grid(alpha=0.3, which='both')
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def report(root: str, variants: List[Variant], seeds: List[int], metric: Optional[str], title: str,
           baseline: Optional[str] = None) -> Optional[str]:
    """Write results.csv, summary.csv/.md/.png under ``root``; returns the markdown (None: nothing finished).
    With a ``baseline`` variant the markdown adds the paired differences to it; where the variants differ in
    trainable parameters, the log-linear fit per series."""
    rows = collect(root, [v.name for v in variants], seeds)
    write_results_csv(rows, osp.join(root, 'results.csv'))
    metric = metric or default_metric(rows)
    if metric is None:
        return None
    summary = summarize(rows, metric)
    md = to_markdown(summary, seeds, metric, {v.name: v.spec for v in variants}, title)
    digits = _digits(summary)
    if baseline is not None:
        md += '\n' + paired_markdown(paired_differences(summary, baseline), baseline, seeds, digits)
    fits = loglinear_fits(summary)  # only series spanning a doubling: the variants differ in parameters
    if fits:
        md += '\n' + fits_markdown(fits, metric)
    with open(osp.join(root, 'summary.md'), 'w') as f:
        f.write(md)
    write_summary_csv(summary, metric, osp.join(root, 'summary.csv'))
    plot_summary(summary, metric, osp.join(root, 'summary.png'), title)
    plot_params(summary, metric, osp.join(root, 'summary_params.png'), title)
    return md


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Train variants of a config for several seeds; report mean ± std of its metric',
        epilog='Presets: plain, pd-a, pd-b, pd-b-anneal, and branch subsets such as s+g+k '
        '(s: standard, g: group, k: skeleton). Custom: NAME:KEY=VALUE,KEY=VALUE (cfg-options syntax).')
    parser.add_argument('config', nargs='?', help='the config all variants start from')
    parser.add_argument('--variants', nargs='+', default=['plain', 'pd-a', 'pd-b'],
                        help='variants to train (default: plain pd-a pd-b)')
    parser.add_argument('--seeds', default='3', help='number of seeds (3: seeds 0, 1, 2) or a list (0,5,7; one '
                        'seed: 4,)')
    parser.add_argument('--work-dir', help='study directory (default: work_dirs/ablation/<config name>)')
    parser.add_argument('--metric', help="metric to summarise (default: the evaluator's first, e.g. "
                        'accuracy/top1 or coco/bbox_mAP)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='overrides for every variant (before the variant\'s own), as in tools/train.py')
    parser.add_argument('--baseline', help='variant the others are compared with, paired by seed (mean difference '
                        "and its 95%% t-interval; default: 'plain' when it is among the variants)")
    parser.add_argument('--dry-run', action='store_true', help='check the variants and print the plan only')
    parser.add_argument('--run-one', metavar='RUN_DIR', help=argparse.SUPPRESS)  # the per-run subprocess
    args = parser.parse_args(argv)
    if args.run_one is None and args.config is None:
        parser.error('the config is required')
    return args


def main(argv=None, run_fn: Callable[[str], int] = run_subprocess) -> int:
    args = parse_args(argv)
    if args.run_one:
        run_one(args.run_one)
        return 0
    try:
        variants = parse_variants(args.variants)
        seeds = parse_seeds(args.seeds)
    except ValueError as e:
        raise SystemExit(f'ablation.py: {e}')
    names = [v.name for v in variants]
    if args.baseline is not None and args.baseline not in names:
        raise SystemExit(f'ablation.py: --baseline {args.baseline!r} is not one of the variants {names}')
    baseline = args.baseline or ('plain' if 'plain' in names else None)
    import pddr_mm  # noqa: F401  (registers the PDDR modules: is_pddr_module_cfg looks types up)
    base = Config.fromfile(args.config)
    if args.cfg_options:
        base.merge_from_dict(args.cfg_options)
    root = args.work_dir or osp.join('work_dirs', 'ablation', osp.splitext(osp.basename(args.config))[0])
    os.makedirs(root, exist_ok=True)
    t0 = time.time()
    try:
        states = run_study(base, variants, seeds, root, run_fn=run_fn, dry_run=args.dry_run)
    except (ValueError, RuntimeError, KeyError) as e:  # a variant that cannot apply, a changed run directory
        raise SystemExit(f'ablation.py: {e}')
    if args.dry_run:
        return 0
    title = f'{osp.basename(args.config)}: {len(variants)} variants x {len(seeds)} seeds'
    md = report(root, variants, seeds, args.metric, title, baseline)
    print(f'\nstudy finished in {time.time() - t0:.0f} s; results in {root}/ (results.csv, summary.md, '
          'summary.csv, summary.png)\n')
    if md is None:
        done = sum(s == 'done' for s in states.values())
        print(f'{done} run(s) finished, but none has a metric to summarise' if done else 'no run finished')
        if done:
            print('(an evaluator with nothing to score returns no metrics, e.g. CocoMetric when the detector '
                  'made no detection: train longer)')
    else:
        print(md)
    busy = [k for k, s in states.items() if s == 'busy']
    failed = [k for k, s in states.items() if s not in ('done', 'busy')]
    if busy:
        print(f'{len(busy)} run(s) being trained by another process: ' + ', '.join(f'{v} seed {s}' for v, s in busy)
              + '; run this command again once they are finished')
    if failed:
        print(f'{len(failed)} run(s) failed: ' + ', '.join(f'{v} seed {s}' for v, s in failed))
    return 1 if busy or failed else 0


if __name__ == '__main__':
    sys.exit(main())
