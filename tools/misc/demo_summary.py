"""The table that ends tools/run_demo.sh: plain / PD unfused / PD fused, accuracy next to cost.

    python tools/misc/demo_summary.py BENCH_JSON --unfused DIR --fused DIR [--baseline DIR]
        [--baseline-config CFG] [--train-dirs DIR ...] [--name PD-B] [--out summary.md]

Accuracy: the test metrics tools/test.py wrote under each test work dir (``<DIR>/<timestamp>/<timestamp>.json``;
the newest). Parameters, FLOPs and latency: the JSON of tools/analysis_tools/benchmark.py (``--json``), which
times the unfused PD model, its fused copy and the plain baseline interleaved in one process and counts
their parameters and FLOPs on the same input (the fused model in its deployed form). The benchmark builds
the baseline from the PD config (``pddr_mm.deployment.configs.to_plain_config``) with random weights,
which does not change its latency; with ``--baseline-config`` its parameter count is checked against the
trained baseline's config. The table goes to stdout and, as markdown, to ``--out``.
"""
import argparse
import glob
import json
import os.path as osp
from typing import Dict, List, Optional

DET_METRICS = (('coco/bbox_mAP', 'mAP'), ('coco/bbox_mAP_50', 'mAP@50'))
CLS_METRICS = (('accuracy/top1', 'top-1 acc. (%)'), ('accuracy/top5', 'top-5 acc. (%)'))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Summary table of the demo')
    parser.add_argument('benchmark', help='JSON written by tools/analysis_tools/benchmark.py --json')
    parser.add_argument('--unfused', required=True, help='test work dir of the PD model, branches computed')
    parser.add_argument('--fused', required=True, help='test work dir of the fused PD model (tools/test.py --deploy)')
    parser.add_argument('--baseline', help='test work dir of the trained plain baseline (none: not trained)')
    parser.add_argument('--baseline-config', help='config of the trained baseline, to check its parameter count')
    parser.add_argument('--train-dirs', nargs='*', default=[],
                        help='training work dirs, to report the epochs each was trained for')
    parser.add_argument('--name', default='PD', help='name of the PD model in the table (default: PD)')
    parser.add_argument('--baseline-name', default='plain', help='name of the baseline (default: plain)')
    parser.add_argument('--note', action='append', default=[], help='a line to add below the table (repeatable)')
    parser.add_argument('--out', help='markdown file to write the table to')
    return parser.parse_args(argv)


def test_metrics(test_dir: Optional[str]) -> Dict:
    """The newest test metrics under ``test_dir`` (mmengine's LoggerHook: <timestamp>/<timestamp>.json)."""
    if not test_dir:
        return {}
    files = sorted(glob.glob(osp.join(test_dir, '*', '*.json')), key=osp.getmtime)
    if not files:
        return {}
    with open(files[-1]) as f:
        return json.load(f)


def metric_columns(*metric_dicts: Dict):
    for columns in (DET_METRICS, CLS_METRICS):
        present = [(k, name) for k, name in columns if any(k in m for m in metric_dicts)]
        if present:
            return present
    return []


def fmt_metric(key: str, value) -> str:
    if not isinstance(value, (int, float)):
        return '-'
    return f'{100 * value:.1f}' if key.startswith('coco/') else f'{value:.2f}'  # COCO as mmdet's model zoo: x100


def epochs_trained(train_dir: str) -> Optional[int]:
    files = glob.glob(osp.join(train_dir, '*', 'vis_data', 'scalars.json'))
    epochs = []
    for path in files:
        with open(path) as f:
            epochs += [json.loads(line).get('epoch', 0) for line in f if '"loss"' in line]
    return max(epochs) if epochs else None


def baseline_params(config: str) -> int:
    """Parameters of the trained baseline's model counted as the benchmark counts its plain one: BNs folded."""
    from mmcv.cnn import fuse_conv_bn
    from mmengine.config import Config

    import pddr_mm  # noqa: F401
    from pddr_mm.deployment.checkpoint import build_model
    from pddr_mm.deployment.models import count_params
    model = build_model(Config.fromfile(config))
    model.eval()
    return count_params(fuse_conv_bn(model))


def markdown_table(header: List[str], rows: List[List[str]]) -> str:
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: '| ' + ' | '.join(c.ljust(w) for c, w in zip(r, widths)) + ' |'  # noqa: E731
    return '\n'.join([line(header), '|' + '|'.join('-' * (w + 2) for w in widths) + '|'] + [line(r) for r in rows])


def build_summary(args: argparse.Namespace) -> str:
    from pddr_mm.deployment.models import format_count
    with open(args.benchmark) as f:
        bench = json.load(f)
    inf = bench['inference']
    tests = {'baseline': test_metrics(args.baseline), 'unfused': test_metrics(args.unfused),
             'fused': test_metrics(args.fused)}
    if not tests['unfused'] or not tests['fused'] or (args.baseline and not tests['baseline']):
        missing = [k for k in ('baseline', 'unfused', 'fused') if not tests[k] and (k != 'baseline' or args.baseline)]
        raise SystemExit(f'no test metrics found for {", ".join(missing)}: see the test logs above')
    columns = metric_columns(*tests.values())
    names = {'baseline': args.baseline_name + ('' if args.baseline else ' (untrained: latency and size only)'),
             'unfused': f'{args.name} unfused', 'fused': f'{args.name} fused'}
    h, w = bench['shape']
    header = ['model'] + [name for _, name in columns] + [
        'params', f'FLOPs ({h}x{w})', f'latency ms (batch {bench["batch_size"]}, {h}x{w})', 'p10-p90 ms']
    rows = []
    for key in ('baseline', 'unfused', 'fused'):
        r = inf[key]
        rows.append([names[key]] + [fmt_metric(k, tests[key].get(k)) for k, _ in columns] + [
            format_count(r['params']), format_count(r['flops']), f"{r['median_ms']:.2f}",
            f"{r['p10_ms']:.2f}-{r['p90_ms']:.2f}"])
    lines = [markdown_table(header, rows), '']
    same = all(tests['unfused'].get(k) == tests['fused'].get(k) for k, _ in columns)
    lines.append(f'- fused == unfused on every metric: {"yes" if same else "NO"}')
    if args.train_dirs:
        lines.append('- epochs trained: ' + ', '.join(
            f'{osp.basename(osp.normpath(d))} {epochs_trained(d)}' for d in args.train_dirs))
    lines.append(f"- latency: tools/analysis_tools/benchmark.py, the three models timed round robin in one process "
                 f"({bench['repeat']} repeats after {bench['warmup']} warm-up, median), the model's forward in "
                 f"mode='tensor' on a preprocessed batch (no data loading, no post-processing such as NMS), on {bench['device']}; the "
                 f"plain model there is built from the {args.name} config with random weights ("
                 + ("the trained baseline's architecture; " if args.baseline else '')
                 + "weights do not change its latency)")
    lines.append(f"- latency ratios: fused/{args.baseline_name} {bench['ratios']['fused/baseline']:.2f}, "
                 f"unfused/fused {bench['ratios']['unfused/fused']:.2f}"
                 + (f"; the per-sample kernel mixing of the fused PD-B layers alone takes "
                    f"{inf['mixing']['median_ms']:.2f} ms ({inf['mixing']['layers']} layers)" if 'mixing' in inf else ''))
    lines.append("- FLOPs: mmengine's FlopAnalyzer (one multiply-add = 1 FLOP) on the same forward; unfused counts "
                 "every branch, fused counts the deployed form (refinement module and kernel mixing included)")
    if args.baseline_config:
        n = baseline_params(args.baseline_config)
        ok = n == inf['baseline']['params']
        lines.append(f'- parameters of the trained baseline\'s config ({osp.basename(args.baseline_config)}): '
                     f'{format_count(n)}, {"the same as" if ok else "DIFFERENT FROM"} the benchmark\'s plain model')
    lines += [f'- {note}' for note in args.note]
    for key, r in inf.items():
        if isinstance(r, dict) and r.get('flops_error'):
            lines.append(f'- FLOPs of {key} could not be counted: {r["flops_error"]}')
    return '\n'.join(lines) + '\n'


def main(argv=None) -> str:
    args = parse_args(argv)
    text = build_summary(args)
    print(text, end='')
    if args.out:
        with open(args.out, 'w') as f:
            f.write(text)
        print(f'(written to {args.out})')
    return text


if __name__ == '__main__':
    main()
