"""Test a pddr_mm (or any mmdet / mmpretrain) config: the arguments of mmdet's tools/test.py, plus --deploy."""
import argparse
import copy
import os
import os.path as osp

from mmengine.config import Config, ConfigDict, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from pddr_mm.utils import setup_runtime


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the directory to save the file containing evaluation metrics')
    parser.add_argument('--out', type=str, help='dump predictions to a pickle file for offline evaluation')
    parser.add_argument('--show', action='store_true', help='show prediction results')
    parser.add_argument('--show-dir', help='directory where painted images will be saved; relative paths are '
                        'inside the timestamped log directory of the work dir')
    parser.add_argument('--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument(
        '--deploy',
        action='store_true',
        help='fuse the PDDR branches after the checkpoint is loaded (adds PDDRDeployHook), so the '
        'deployed model is the one evaluated; the fused outputs are checked against the unfused ones on the '
        'first batch. A deploy config written by tools/model_converters/reparameterize.py needs no --deploy')
    parser.add_argument('--tta', action='store_true',
                        help="test-time augmentation: the config's tta_model and tta_pipeline, else a flip TTA "
                        "(mmdet's DetTTAModel or mmpretrain's AverageClsScoreTTA, as their test.py do)")
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override some settings in the used config, the key-value pair in xxx=yyy format will be merged '
        'into config file.')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def trigger_visualization_hook(cfg: Config, args) -> None:
    """Switch on the config's visualization hook, as mmdet's and mmpretrain's test tools do."""
    hook = cfg.get('default_hooks', {}).get('visualization')
    if hook is None:
        raise ValueError('--show/--show-dir need a visualization hook in default_hooks; mmdet and mmpretrain '
                         "configs have one: dict(type='DetVisualizationHook') / dict(type='VisualizationHook')")
    hook['enable'] = True
    if args.show:
        hook['show'] = True
        hook['wait_time'] = args.wait_time
    if args.show_dir:
        # mmdet's hook writes test images to test_out_dir, mmpretrain's to out_dir
        hook['test_out_dir' if 'Det' in str(hook.get('type')) else 'out_dir'] = args.show_dir


def apply_tta(cfg: Config) -> None:
    """Wrap the model in its TTA model and give the test set the TTA pipeline (mmdet's and mmpretrain's
    test.py --tta: the config's ``tta_model`` / ``tta_pipeline``, else horizontal-flip TTA)."""
    detector = cfg.get('default_scope') == 'mmdet'
    if not cfg.get('tta_model'):  # absent, or None as some configs set it
        det_tta = dict(type='DetTTAModel', tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
        cfg.tta_model = det_tta if detector else dict(type='mmpretrain.AverageClsScoreTTA')
    dataset = cfg.test_dataloader.dataset
    while 'dataset' in dataset:  # dataset wrappers
        dataset = dataset['dataset']
    if not cfg.get('tta_pipeline'):
        pack = dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor',
                                                      'flip', 'flip_direction')) if detector else dataset.pipeline[-1]
        cfg.tta_pipeline = copy.deepcopy(dataset.pipeline)
        cfg.tta_pipeline[-1] = dict(type='TestTimeAug', transforms=[
            [dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)], [pack]])
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    dataset.pipeline = cfg.tta_pipeline


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)

    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint

    if args.deploy:  # a configured hook is kept, with fusing before testing switched on
        hooks = cfg.get('custom_hooks', None) or []
        deploy_hooks = [h for h in hooks if h.get('type') == 'PDDRDeployHook']
        for h in deploy_hooks:
            h['fuse_test'] = True
        if not deploy_hooks:
            hooks.append(dict(type='PDDRDeployHook'))
        cfg.custom_hooks = hooks

    if args.show or args.show_dir:
        trigger_visualization_hook(cfg, args)

    if args.tta:
        apply_tta(cfg)

    if args.out is not None:
        assert args.out.endswith(('.pkl', '.pickle')), 'The dump file must be a pkl file.'
        cfg.test_evaluator = [cfg.test_evaluator] if not isinstance(cfg.test_evaluator, list) else cfg.test_evaluator
        # mmdet's dump drops the ground truth and encodes masks, as its offline tools expect
        dump = 'mmdet.DumpDetResults' if cfg.get('default_scope') == 'mmdet' else 'DumpResults'
        cfg.test_evaluator.append(dict(type=dump, out_file_path=args.out))

    setup_runtime(cfg)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    return runner.test()


if __name__ == '__main__':
    main()
