"""Interleaved latency / training-step benchmark of a PDDR model: unfused, fused and plain baseline.

All variants are timed in one process, round-robin within each repetition, so that drifts of the
machine (clock, other load) hit all of them alike; ``torch.utils.benchmark`` times one statement at a
time, so it is not used. Every ratio is reported as the ratio of the medians and, since the rows are timed
in pairs, as the spread of the per-repetition ratios: how far the figure can be trusted.
"""
import copy
import os.path as osp
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from mmcv.cnn import fuse_conv_bn
from mmengine.config import Config
from torch.nn.modules.batchnorm import _BatchNorm

from ..ops import PDConv2d, deploy_layers, fuse_pd_conv_bn, is_deployed, mix_kernels
from ..rpg import ModelRing
from .checkpoint import build_model, load_model
from .configs import to_plain_config
from .inputs import is_detector, make_inputs
from .models import count_flops, count_params, count_trainable, format_count, fused_copy, set_forward_path

MIN_REPEATS = 10  # fewer timed repeats than this get a warning: the p10 / p90 of so few are the extremes


def default_shape(model: nn.Module) -> Tuple[int, int]:
    """mmdet's and mmpretrain's usual test sizes (H, W)."""
    return (800, 1333) if is_detector(model) else (224, 224)


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], None], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return (time.perf_counter() - start) * 1e3


def summarize(times_ms: Sequence[float], batch_size: int) -> Dict:
    """One row: median, p10 and p90 of its times, its throughput, and the times themselves (in repetition
    order: the per-repetition ratios pair them)."""
    t = np.asarray(times_ms, dtype=float)
    median = float(np.median(t))
    return dict(median_ms=median, p10_ms=float(np.percentile(t, 10)), p90_ms=float(np.percentile(t, 90)),
                images_per_s=batch_size * 1e3 / median, repeats=len(t), times_ms=t.tolist())


def ratio_spread(num_ms: Sequence[float], den_ms: Sequence[float]) -> Dict:
    """The ratio of two rows timed in one round robin: of their medians (``ratio``), and the median, p10, p90,
    min and max of the per-repetition ratios ``num_ms[i] / den_ms[i]`` (both timings of repetition i saw the
    same state of the machine). ``within_noise``: the rows' p10-p90 ranges overlap, so they are not separated.
    """
    num, den = np.asarray(num_ms, dtype=float), np.asarray(den_ms, dtype=float)
    if num.ndim != 1 or num.shape != den.shape or not len(num):
        raise ValueError(f'need two equally long, non-empty lists of times, got {len(num)} and {len(den)}')
    per_rep = num / den
    p10, p90 = np.percentile(per_rep, (10, 90))
    (n10, n90), (d10, d90) = np.percentile(num, (10, 90)), np.percentile(den, (10, 90))
    return dict(ratio=float(np.median(num) / np.median(den)), median=float(np.median(per_rep)), p10=float(p10),
                p90=float(p90), min=float(per_rep.min()), max=float(per_rep.max()), repeats=len(per_rep),
                within_noise=bool(n10 <= d90 and d10 <= n90))


def noise_warnings(repeat: int, spreads: Dict[str, Dict]) -> List[str]:
    """Why the ratios in ``spreads`` may not be trusted: too few repeats, rows whose ranges overlap."""
    notes = []
    if repeat < MIN_REPEATS:
        notes.append(f'only {repeat} timed repeats (fewer than {MIN_REPEATS}): too few to separate the rows; '
                     'take --repeat-num 50 or more on a quiet machine for figures')
    notes += [f"{key}: the two rows' p10-p90 ranges overlap, so the ratio {s['ratio']:.3f} is within noise"
              for key, s in spreads.items() if s['within_noise']]
    return notes


def round_robin(fns: Dict[str, Callable[[], None]], repeat: int, warmup: int,
                device: torch.device) -> Dict[str, List[float]]:
    """Time every function ``repeat`` times, cycling through them each repetition, after ``warmup`` cycles."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: Dict[str, List[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            times[name].append(_timed(fn, device))
    return times


def check_pddr(model: nn.Module, cfg: Config) -> None:
    """Refuse a model without PDDR or RPG layers: its unfused, fused and plain forms are one network, and timing
    it against itself gives ratios that mean nothing."""
    if not deploy_layers(model) and not is_deployed(model):
        raise ValueError(f'{cfg.filename or "the config"} builds no PDDR layer (PDConv2d) or RPG layer: its unfused, '
                         'fused and baseline forms are the same network, so there is nothing to compare; pass a PDDR '
                         'or RPG config')


def deployed_form(model: nn.Module) -> Tuple[nn.Module, int]:
    """A copy of ``model`` as a deployment runs it: PDDR layers fused, then every conv + BN pair folded
    (``fuse_pd_conv_bn``, then mmcv's ``fuse_conv_bn``); and how many layers were fused."""
    fused, num = fused_copy(model)
    fuse_pd_conv_bn(fused)
    return fuse_conv_bn(fused), num


def same_architecture(a: nn.Module, b: nn.Module) -> bool:
    """True where two (deployed) models hold parameters of the same shapes in the same order, as a fused
    PD-A network and its plain baseline do: their latency ratio can only show noise."""
    return [p.shape for p in a.parameters()] == [p.shape for p in b.parameters()]


def build_variants(cfg: Config, checkpoint: Optional[str], device: torch.device) -> Tuple[Dict[str, nn.Module], int]:
    """The unfused model (computing branch by branch), its fused copy and the plain baseline, in eval mode.

    The fused copy and the baseline are both deployed forms (:func:`deployed_form`), so neither pays for
    BN layers the other has folded. A deploy config builds its PDDR layers fused: it has no unfused form,
    and the dict then holds only 'fused' and 'baseline'.
    """
    pd = load_model(cfg, checkpoint).to(device)
    check_pddr(pd, cfg)
    fused, num = deployed_form(pd)
    baseline = deployed_form(build_model(to_plain_config(cfg)).to(device).eval())[0]
    if is_deployed(pd):
        return dict(fused=fused, baseline=baseline), num
    set_forward_path(pd, 'branches')  # in eval mode 'auto' would already run the fused kernels
    return dict(unfused=pd, fused=fused, baseline=baseline), num


def kernel_mixing(model: nn.Module, inputs: torch.Tensor, samples: list) -> Optional[Tuple[Callable[[], None], int]]:
    """For a model with deployed PD-B layers: a function that mixes every such layer's per-sample kernels for
    ``inputs`` (``mix_kernels``, as the forward does), and nothing else; and the number of layer calls (a
    head layer shared by the FPN levels mixes once per level). None without such layers. Timed next to the
    forward, it shows how much of PD-B's cost the mixing takes.
    """
    layers = [m.fused for m in model.modules() if isinstance(m, PDConv2d) and is_deployed(m) and m.mode == 'B']
    if not layers:
        return None
    # one job per call: a shared head's layer runs (and mixes) once per FPN level; a head may skip some
    # layers in tensor mode
    jobs = []
    hooks = [m.refine.register_forward_hook(lambda mod, args, out, m=m: jobs.append((out, m.branch_kernels())))
             for m in layers]
    try:
        with torch.no_grad():
            model(inputs, samples, mode='tensor')
    finally:
        for h in hooks:
            h.remove()

    def fn() -> None:
        with torch.no_grad():
            for w, kernels in jobs:
                mix_kernels(w, kernels)
    return fn, len(jobs)


def _flops(model: nn.Module, inputs: torch.Tensor, samples: list) -> Dict:
    """FLOPs, or None and the reason (the table shows n/a): reported, not hidden."""
    try:
        return dict(flops=count_flops(model, inputs, samples))
    except Exception as e:
        return dict(flops=None, flops_error=f'{type(e).__name__}: {e}')


def benchmark_inference(models: Dict[str, nn.Module], batch_size: int, shape: Tuple[int, int], repeat: int,
                        warmup: int, device: torch.device) -> Dict[str, Dict]:
    """Latency of ``model(inputs, data_samples, mode='tensor')`` on one preprocessed batch, plus params/FLOPs."""
    data = make_inputs(models['fused'], batch_size, shape)
    inputs, samples = data['inputs'].to(device), data['data_samples']

    def forward(model):
        def fn():
            with torch.no_grad():
                model(inputs, samples, mode='tensor')
        return fn

    fns = {k: forward(m) for k, m in models.items()}
    mixing = kernel_mixing(models['fused'], inputs, samples)
    if mixing is not None:
        fns['mixing'] = mixing[0]
    times = round_robin(fns, repeat, warmup, device)
    out = {name: dict(summarize(times[name], batch_size), params=count_params(model), trainable=count_trainable(model),
                      **_flops(model, inputs, samples)) for name, model in models.items()}
    if mixing is not None:
        out['mixing'] = dict(summarize(times['mixing'], batch_size), layers=mixing[1])
    return out


def set_bn_state(model: nn.Module, frozen: bool) -> None:
    """Every BN in eval mode (``norm_eval=True`` style: PDConv2d trains through one fused convolution) or
    in training mode (PDConv2d trains branch by branch), whatever the config's ``norm_eval`` says."""
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            m.train(not frozen)


def amp_dtype(device: torch.device) -> torch.dtype:
    """The autocast dtype of mixed precision on ``device``: fp16 on CUDA (mmengine's AmpOptimWrapper), bf16 on CPU."""
    return torch.float16 if device.type == 'cuda' else torch.bfloat16


def train_step_fn(model: nn.Module, inputs: torch.Tensor, samples: list, amp: bool = False) -> Callable[[], None]:
    """One training step of ``model`` (forward in mode='loss', backward, SGD step), under autocast with ``amp``
    (with a gradient scaler on CUDA, as mmengine's AmpOptimWrapper)."""
    optim = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)
    device = inputs.device
    scaler = torch.amp.GradScaler(device.type, enabled=amp and device.type == 'cuda')

    def fn():
        optim.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp_dtype(device), enabled=amp):
            losses = model(inputs, samples, mode='loss')
            loss, _ = model.parse_losses(losses)
        scaler.scale(loss).backward()
        scaler.step(optim)
        scaler.update()
    return fn


def benchmark_training(cfg: Config, checkpoint: Optional[str], batch_size: int, shape: Tuple[int, int],
                       repeat: int, warmup: int, device: torch.device, amp: bool = False) -> Dict[str, Dict]:
    """Training-step time (forward + backward + SGD step) and memory, PD model vs plain, both BN states.

    ``bn_train``: every BN in training mode; ``bn_frozen``: every BN in eval mode (a config's
    ``norm_eval`` is overridden in both, on the PD model and the baseline alike); ``amp``: under autocast
    (``amp_dtype``). Memory: on CUDA the
    peak of ``torch.cuda.max_memory_allocated`` during a step minus the memory allocated before it; on
    CPU the bytes of the tensors autograd saves for backward in a step (the activation memory, which is
    what the training branches add), labelled as such.
    """
    base = {'pd': load_model(cfg, checkpoint), 'baseline': build_model(to_plain_config(cfg))}
    data = make_inputs(base['pd'], batch_size, shape, with_gt=True, training=True)
    inputs = data['inputs'].to(device)
    samples = [s.to(device) for s in data['data_samples']]  # the ground truth the loss reads: on the model's device
    results: Dict[str, Dict] = {}
    for bn_state in ('bn_train', 'bn_frozen'):
        models = {}
        for name, model in base.items():
            model = copy.deepcopy(model).to(device).train()  # mmdet's ResNet.train() applies norm_eval ...
            set_bn_state(model, frozen=bn_state == 'bn_frozen')  # ... which is overridden here, for both
            models[name] = model
        fns = {name: train_step_fn(model, inputs, samples, amp) for name, model in models.items()}
        times = round_robin(fns, repeat, warmup, device)
        results.update({f'{bn_state}/{name}': dict(summarize(times[name], batch_size), params=count_params(model),
                                                   **_step_memory(fns[name], device))
                        for name, model in models.items()})
    return results


def _step_memory(fn: Callable[[], None], device: torch.device) -> Dict:
    if device.type == 'cuda':
        _sync(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        _sync(device)
        return dict(memory_mb=(torch.cuda.max_memory_allocated(device) - before) / 2**20,
                    memory_kind='CUDA peak allocated during a step')
    storages = {}  # the distinct storages autograd saves for backward: the activation memory

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return dict(memory_mb=sum(storages.values()) / 2**20, memory_kind='autograd saved tensors per step (CPU)')


INFER_HEADER = ('model', 'median ms', 'p10-p90 ms', 'images/s', 'params', 'trainable', 'FLOPs')
TRAIN_HEADER = ('BN state', 'model', 'median ms', 'p10-p90 ms', 'images/s', 'params', 'memory MB')


def _table(header: Sequence[str], rows: List[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: ' | '.join(str(c).ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return '\n'.join([line(header), '-+-'.join('-' * w for w in widths)] + [line(r) for r in rows])


def _ratio(s: Dict) -> str:
    return (f"{s['ratio']:.3f} (per repetition: median {s['median']:.3f}, p10-p90 {s['p10']:.3f}-{s['p90']:.3f}, "
            f"{s['repeats']} pairs)")


def _infer_table(inf: Dict[str, Dict]) -> str:
    return _table(INFER_HEADER, [(name, f"{r['median_ms']:.2f}", f"{r['p10_ms']:.2f}-{r['p90_ms']:.2f}",
                                  f"{r['images_per_s']:.1f}", format_count(r['params'], 2),
                                  format_count(r['trainable'], 2), format_count(r['flops'], 2))
                                 for name, r in inf.items()])


def degrees_of_freedom(model: nn.Module, inference: Dict[str, Dict]) -> Dict:
    """For a model with RPG rings: ``rpg_ring`` (ring entries) beside the trainable, deployed and plain parameter
    counts of the inference rows; {} without rings."""
    ring = sum(p.numel() for m in model.modules() if isinstance(m, ModelRing) for p in m.parameters())
    return dict(rpg_ring=ring) if ring else {}


def _notes(result: Dict) -> List[str]:
    """The lines under the tables that qualify them: RPG's degrees of freedom, same network, FLOPs not counted,
    noise warnings."""
    text = []
    if result.get('rpg_ring'):
        inf = result['inference']
        rest = inf['unfused']['trainable'] - result['rpg_ring']
        text.append(f"RPG degrees of freedom: {format_count(inf['unfused']['trainable'])} trainable parameters (ring "
                    f"{format_count(result['rpg_ring'])} + other layers {format_count(rest)}) against "
                    f"{format_count(inf['fused']['params'])} deployed and {format_count(inf['baseline']['params'])} in "
                    "the plain baseline (the unfused row is the ring model)")
    if result['same_network']:
        kind = 'RPG' if result.get('rpg_ring') else 'PD-A'
        text.append(f'note: fused and baseline are the same network (same parameter shapes: a fused {kind} model is '
                    'the plain one): their ratio shows the measurement noise, expect 1')
    text += [f'FLOPs of {name} could not be counted: {r["flops_error"]}'
             for name, r in result['inference'].items() if r.get('flops_error')]
    return text + [f'warning: {w}' for w in result['warnings']]


def format_report(result: Dict) -> str:
    """The printed tables: inference per variant, ratios, and (with --train) training steps."""
    inf = dict(result['inference'])
    mixing = inf.pop('mixing', None)
    spread = result['ratio_spread']
    text = [f"inference ({result['device']}, torch threads {result['threads']}, batch {result['batch_size']}, input "
            f"{result['shape'][0]}x{result['shape'][1]}, model forward in mode='tensor' on a preprocessed batch, "
            f"{result['repeat']} interleaved repeats after {result['warmup']} warm-up):", _infer_table(inf)]
    if 'unfused' not in inf:
        text.append('note: the config builds the deployed (fused) form: there is no unfused row; pass the '
                    'training config to time the branches')
    text += [f'latency ratio {key}: {_ratio(spread[key])}' for key in ('fused/baseline', 'unfused/fused')
             if key in spread]
    if mixing is not None:
        text.append(f"PD-B kernel mixing alone ({mixing['layers']} layer calls, the fused forward's "
                    f"per-sample kernels, timed in the same round robin): {mixing['median_ms']:.2f} ms "
                    f"({mixing['p10_ms']:.2f}-{mixing['p90_ms']:.2f}) = {_ratio(spread['mixing/baseline'])} "
                    "of the baseline's latency")
    if 'training' in result:
        tr = result['training']
        rows = []
        for key, r in tr.items():
            bn_state, name = key.split('/')
            rows.append((bn_state, 'pd (unfused)' if name == 'pd' else name, f"{r['median_ms']:.2f}",
                         f"{r['p10_ms']:.2f}-{r['p90_ms']:.2f}", f"{r['images_per_s']:.1f}",
                         format_count(r['params'], 2), f"{r['memory_mb']:.3g}"))
        kind = next(iter(tr.values()))['memory_kind']
        text += ['', f'training step (forward + backward + SGD step; bn_train: all BN in train mode, PDConv2d '
                 f'branch by branch; bn_frozen: all BN in eval mode, PDConv2d online fusion; memory: {kind}):',
                 _table(TRAIN_HEADER, rows)]
        for bn_state in ('bn_train', 'bn_frozen'):
            pd, plain = tr[f'{bn_state}/pd'], tr[f'{bn_state}/baseline']
            text.append(f"{bn_state}: step time pd/baseline {_ratio(result['training_ratios'][bn_state])}   "
                        f"memory pd/baseline {pd['memory_mb'] / max(plain['memory_mb'], 1e-9):.3f}")
    return '\n'.join(text + _notes(result))


def run_benchmark(cfg: Config, checkpoint: Optional[str] = None, batch_size: int = 1,
                  shape: Optional[Tuple[int, int]] = None, repeat: int = 50, warmup: int = 10,
                  train: bool = False, device: Optional[str] = None) -> Dict:
    """Everything ``tools/analysis_tools/benchmark.py`` prints, as a dict (also what ``--json`` writes)."""
    device = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    models, num = build_variants(cfg, checkpoint, device)
    if train and 'unfused' not in models:
        raise ValueError('--train times the training structure (branch by branch), and this config builds the '
                         'deployed (fused) form: pass the training config')
    shape = tuple(shape) if shape else default_shape(models['fused'])
    inference = benchmark_inference(models, batch_size, shape, repeat, warmup, device)
    pairs = [('fused', 'baseline'), ('unfused', 'fused'), ('mixing', 'baseline')]
    spread = {f'{a}/{b}': ratio_spread(inference[a]['times_ms'], inference[b]['times_ms'])
              for a, b in pairs if a in inference}
    result = dict(device=str(device) if device.type == 'cpu' else torch.cuda.get_device_name(device),
                  threads=torch.get_num_threads(), batch_size=batch_size, shape=list(shape), repeat=repeat,
                  warmup=warmup, fused_layers=num, same_network=same_architecture(models['fused'], models['baseline']),
                  inference=inference, ratios={k: s['ratio'] for k, s in spread.items()}, ratio_spread=spread)
    if 'unfused' in models:
        result.update(degrees_of_freedom(models['unfused'], inference))
    del models
    compared = {k: s for k, s in spread.items() if not k.startswith('mixing')}  # mixing is a part, not a rival
    if train:
        tr = result['training'] = benchmark_training(cfg, checkpoint, batch_size, shape, repeat, warmup, device)
        result['training_ratios'] = {bn: ratio_spread(tr[f'{bn}/pd']['times_ms'], tr[f'{bn}/baseline']['times_ms'])
                                     for bn in ('bn_train', 'bn_frozen')}
        compared.update({f'{bn} step time pd/baseline': s for bn, s in result['training_ratios'].items()})
    result['warnings'] = noise_warnings(repeat, compared)
    return result


def benchmark_onnxruntime(cfg: Config, checkpoint: Optional[str] = None, batch_size: int = 1,
                          shape: Optional[Tuple[int, int]] = None, repeat: int = 50, warmup: int = 10,
                          opset: Optional[int] = None, threads: Optional[int] = None) -> Dict:
    """The fused PD model and the plain baseline in ONNX Runtime (CPU), exported the same way (dynamic batch,
    one opset) and timed interleaved, on one preprocessed batch, with ``threads`` intra-op threads (default:
    as torch); params and FLOPs are those of the PyTorch models in deployed form (BN folded, as the runtime
    folds it)."""
    import onnxruntime

    from .onnx import DEFAULT_OPSET, export_onnx, ort_session, run_onnx
    opset = opset or DEFAULT_OPSET
    models = dict(fused=load_model(cfg, checkpoint), baseline=build_model(to_plain_config(cfg)).eval())
    check_pddr(models['fused'], cfg)
    shape = tuple(shape) if shape else default_shape(models['fused'])
    data = make_inputs(models['fused'], batch_size, shape)
    inputs, samples = data['inputs'], data['data_samples']
    sessions, exports = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in models.items():
            exports[name] = export_onnx(model, inputs, osp.join(tmp, f'{name}.onnx'), opset, True, samples)
            sessions[name] = ort_session(exports[name]['output_file'], threads)
    fns = {name: (lambda s=s: run_onnx(s, inputs)) for name, s in sessions.items()}
    times = round_robin(fns, repeat, warmup, torch.device('cpu'))
    models = {name: deployed_form(model)[0] for name, model in models.items()}  # as the runtime folds them
    inference = {name: dict(summarize(times[name], batch_size), params=count_params(model),
                            trainable=count_trainable(model),
                            conv_nodes=exports[name]['conv_nodes'], loops=exports[name]['loops'],
                            **_flops(model, inputs, samples)) for name, model in models.items()}
    threads = sessions['fused'].get_session_options().intra_op_num_threads
    spread = {'fused/baseline': ratio_spread(times['fused'], times['baseline'])}
    return dict(backend='onnxruntime', device=f'CPU, ONNX Runtime {onnxruntime.__version__}, {threads} intra-op '
                'threads', threads=threads, batch_size=batch_size, shape=list(shape), repeat=repeat, warmup=warmup,
                opset=opset, fused_layers=exports['fused']['fused_layers'],
                same_network=same_architecture(models['fused'], models['baseline']), inference=inference,
                ratios={k: s['ratio'] for k, s in spread.items()}, ratio_spread=spread,
                warnings=noise_warnings(repeat, spread))


def format_onnx_report(result: Dict) -> str:
    """The printed table of :func:`benchmark_onnxruntime`."""
    inf = result['inference']
    return '\n'.join([
        f"inference in ONNX Runtime ({result['device']}, batch {result['batch_size']}, input "
        f"{result['shape'][0]}x{result['shape'][1]}, opset {result['opset']} with a dynamic batch, network "
        f"outputs in mode='tensor' on a preprocessed batch, {result['repeat']} interleaved repeats after "
        f"{result['warmup']} warm-up):", _infer_table(inf),
        f"latency ratio fused/baseline: {_ratio(result['ratio_spread']['fused/baseline'])}",
        f"graphs: fused {inf['fused']['conv_nodes']} Conv nodes ({inf['fused']['loops']} of them in per-sample "
        f"Loops of PD-B layers), baseline {inf['baseline']['conv_nodes']} Conv nodes"] + _notes(result))
