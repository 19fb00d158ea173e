"""One command for a CUDA machine: what PDDR costs on a GPU, in one table (issue 24).

    python tools/analysis_tools/gpu_check.py [--out gpu_check.json]

Measured, each in one interleaved round robin against its plain baseline (pddr_mm.deployment.benchmark):

1. training step time and peak memory of the RetinaNet R-50 configs (PD-A and PD-B backbones) against plain
   RetinaNet R-50, batch 2, 800x1333, fp32 and mixed precision, with BN training and frozen;
2. PD-B's three frozen-BN strategies side by side ('branches', 'fused': one grouped convolution per layer
   with per-sample kernels, 'stacked': one dense convolution over the branch kernels, mixed per sample),
   and which of them forward_path='auto' takes;
3. fused / plain latency of the ResNet-50 classifiers at batch 1 and 32;
4. with two or more GPUs, the command of a 2-process DDP run (printed, not run here).

Without CUDA it says so and exits 0. ``--device cpu`` with small ``--shape`` and configs runs the same code
on the CPU (what the tests do); its figures say nothing about a GPU.
"""
import argparse
import json
from typing import Dict, List

import torch
from mmengine.config import Config

import pddr_mm  # noqa: F401  (registers the PDDR modules)
from pddr_mm.deployment.benchmark import (benchmark_training, ratio_spread, round_robin, run_benchmark,
                                          set_bn_state, summarize, train_step_fn)
from pddr_mm.deployment.checkpoint import build_model
from pddr_mm.deployment.inputs import make_inputs
from pddr_mm.deployment.models import pd_layers, set_forward_path
from pddr_mm.utils.args import ImageShape, positive_int

DET_CONFIGS = ['configs/retinanet/retinanet_pd-a-r50_fpn_1x_coco.py', 'configs/retinanet/retinanet_pd-b-r50_fpn_1x_coco.py']
CLS_CONFIGS = ['configs/resnet/pd-a-resnet50_8xb32_in1k.py', 'configs/resnet/pd-b-resnet50_8xb32_in1k.py']
STRATEGIES = ('branches', 'fused', 'stacked')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--det-configs', nargs='+', default=DET_CONFIGS, help='PDDR detector configs (training)')
    parser.add_argument('--cls-configs', nargs='+', default=CLS_CONFIGS, help='PDDR classifier configs (latency)')
    parser.add_argument('--shape', type=positive_int, nargs='+', action=ImageShape, default=(800, 1333),
                        metavar='SIZE', help='detector input H W (default 800 1333)')
    parser.add_argument('--cls-shape', type=positive_int, nargs='+', action=ImageShape, default=(224, 224),
                        metavar='SIZE', help='classifier input H W (default 224 224)')
    parser.add_argument('--batch-size', type=positive_int, default=2, help='detector training batch')
    parser.add_argument('--latency-batches', type=positive_int, nargs='+', default=[1, 32])
    parser.add_argument('--repeat-num', type=positive_int, default=20)
    parser.add_argument('--num-warmup', type=positive_int, default=5)
    parser.add_argument('--device', default='cuda', help="'cuda' (default) or 'cpu' (a dry run of the code)")
    parser.add_argument('--out', help='also write every figure to this JSON file')
    return parser.parse_args(argv)


def training_rows(configs: List[str], args, device: torch.device) -> List[Dict]:
    """Part 1: step time and memory of each PDDR detector against its plain baseline, fp32 and AMP."""
    rows = []
    for path in configs:
        cfg = Config.fromfile(path)
        for amp in (False, True):
            res = benchmark_training(cfg, None, args.batch_size, args.shape, args.repeat_num, args.num_warmup,
                                     device, amp)
            for bn in ('bn_train', 'bn_frozen'):
                pd, plain = res[f'{bn}/pd'], res[f'{bn}/baseline']
                rows.append(dict(config=path, amp=amp, bn=bn, pd_ms=pd['median_ms'], plain_ms=plain['median_ms'],
                                 ratio=ratio_spread(pd['times_ms'], plain['times_ms']), pd_mb=pd['memory_mb'],
                                 plain_mb=plain['memory_mb'], memory_kind=pd['memory_kind']))
    return rows


def strategy_rows(configs: List[str], args, device: torch.device) -> List[Dict]:
    """Part 2: the frozen-BN training step of each PD-B detector through each strategy, in one round robin."""
    rows = []
    for path in configs:
        model = build_model(Config.fromfile(path)).to(device).train()
        layers = [m for m in pd_layers(model) if m.mode == 'B']
        if not layers:
            continue
        set_bn_state(model, frozen=True)
        data = make_inputs(model, args.batch_size, args.shape, with_gt=True, training=True)
        inputs, samples = data['inputs'].to(device), [s.to(device) for s in data['data_samples']]
        for amp in (False, True):
            step = train_step_fn(model, inputs, samples, amp)

            def through(path_name, step=step):
                def fn():
                    set_forward_path(model, path_name)
                    step()
                return fn

            times = round_robin({s: through(s) for s in STRATEGIES}, args.repeat_num, args.num_warmup, device)
            set_forward_path(model, 'auto')
            auto = 'fused'  # what 'auto' runs with frozen BN (PDConv2d._use_fused_path)
            medians = {s: summarize(times[s], args.batch_size)['median_ms'] for s in STRATEGIES}
            rows.append(dict(config=path, amp=amp, **{f'{s}_ms': medians[s] for s in STRATEGIES}, auto=auto,
                             fastest=min(medians, key=medians.get)))
    return rows


def latency_rows(configs: List[str], args, device: torch.device) -> List[Dict]:
    """Part 3: fused / plain latency of each classifier at each batch size (both with BN folded)."""
    rows = []
    for path in configs:
        for batch in args.latency_batches:
            res = run_benchmark(Config.fromfile(path), None, batch, args.cls_shape, args.repeat_num,
                                args.num_warmup, device=str(device))
            inf = res['inference']
            rows.append(dict(config=path, batch=batch, fused_ms=inf['fused']['median_ms'],
                             plain_ms=inf['baseline']['median_ms'], ratio=res['ratio_spread']['fused/baseline']))
    return rows


def _spread(s: Dict) -> str:
    return f"{s['ratio']:.3f} ({s['p10']:.3f}-{s['p90']:.3f})"


def format_tables(result: Dict) -> str:
    lines = [f"# gpu_check on {result['device']} (torch {result['torch']})", '',
             '| config | AMP | BN | PD ms | plain ms | PD / plain (p10-p90) | PD MB | plain MB |', '|---' * 8 + '|']
    lines += [f"| {r['config']} | {r['amp']} | {r['bn']} | {r['pd_ms']:.1f} | {r['plain_ms']:.1f} | "
              f"{_spread(r['ratio'])} | {r['pd_mb']:.0f} | {r['plain_mb']:.0f} |" for r in result['training']]
    lines += ['', '| PD-B config | AMP | branches ms | fused ms | stacked ms | fastest | auto takes |', '|---' * 7 + '|']
    lines += [f"| {r['config']} | {r['amp']} | {r['branches_ms']:.1f} | {r['fused_ms']:.1f} | {r['stacked_ms']:.1f} | "
              f"{r['fastest']} | {r['auto']} |" for r in result['strategies']]
    lines += ['', '| classifier | batch | fused ms | plain ms | fused / plain (p10-p90) |', '|---' * 5 + '|']
    lines += [f"| {r['config']} | {r['batch']} | {r['fused_ms']:.2f} | {r['plain_ms']:.2f} | {_spread(r['ratio'])} |"
              for r in result['latency']]
    lines += ['', result['ddp']]
    return '\n'.join(lines)


def main(argv=None) -> Dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        print('gpu_check: no CUDA device on this machine; nothing measured (run it on a GPU machine)')
        return {}
    gpus = torch.cuda.device_count() if device.type == 'cuda' else 0
    ddp = ('DDP: fewer than two GPUs here, not run' if gpus < 2 else
           'DDP: run `bash tools/dist_train.sh configs/demo/retinanet_r18-pdb_shapes.py 2 --cfg-options '
           'train_cfg.max_epochs=1` (after `python tools/misc/generate_shapes_dataset.py`) and compare the '
           "replicas' checkpoints")
    result = dict(device=torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu',
                  torch=torch.__version__, training=training_rows(args.det_configs, args, device),
                  strategies=strategy_rows(args.det_configs, args, device),
                  latency=latency_rows(args.cls_configs, args, device), ddp=ddp)
    print(format_tables(result))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == '__main__':
    main()
