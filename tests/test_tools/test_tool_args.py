"""Bad numbers on the command line of benchmark.py, get_flops.py and pytorch2onnx.py fail at parsing, with
argparse's error naming the option (pddr_mm.utils.args), before any model is built."""
import argparse
import importlib.util
import os.path as osp

import pytest

from pddr_mm.utils.args import ImageShape, non_negative_int, positive_int, unit_float

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f'pddr_tool_args_{name.replace("/", "_")}',
                                                  osp.join(ROOT, 'tools', f'{name}.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


benchmark = load_tool('analysis_tools/benchmark')
get_flops = load_tool('analysis_tools/get_flops')
pytorch2onnx = load_tool('deployment/pytorch2onnx')

CASES = [
    (benchmark, ['--shape', '0', '0'], '--shape'),
    (benchmark, ['--shape', '-64', '64'], '--shape'),
    (benchmark, ['--batch-size', '0'], '--batch-size'),
    (benchmark, ['--repeat-num', '0'], '--repeat-num'),
    (benchmark, ['--num-warmup', '-1'], '--num-warmup'),
    (benchmark, ['--threads', '0'], '--threads'),
    (benchmark, ['--opset', '9'], '--opset'),
    (get_flops, ['--shape', '0'], '--shape'),
    (get_flops, ['--shape', '32', '-32'], '--shape'),
    (get_flops, ['--shape', '32', '32', '3'], '--shape'),
    (pytorch2onnx, ['--shape', '0', '32'], '--shape'),
    (pytorch2onnx, ['--shape', '1', '2', '3'], '--shape'),
    (pytorch2onnx, ['--batch-size', '0'], '--batch-size'),
    (pytorch2onnx, ['--opset', '10'], '--opset/--opset-version'),
    (pytorch2onnx, ['--tolerance', '-1e-4'], '--tolerance'),
]


@pytest.mark.parametrize('tool,bad,name', CASES,
                         ids=[f'{t.__name__.rsplit("_", 1)[-1]} {" ".join(b)}' for t, b, _ in CASES])
def test_bad_number_is_an_argparse_error_naming_the_option(tool, bad, name, capsys):
    positional = ['cfg.py', 'ckpt.pth'] if tool is pytorch2onnx else ['cfg.py']
    with pytest.raises(SystemExit) as exc:
        tool.parse_args(positional + bad)
    assert exc.value.code == 2
    assert f'argument {name}:' in capsys.readouterr().err


def test_good_numbers_parse():
    args = benchmark.parse_args(['cfg.py', '--shape', '64', '48', '--num-warmup', '0', '--threads', '1'])
    assert args.shape == [64, 48] and args.num_warmup == 0 and args.threads == 1 and args.repeat_num == 50
    assert get_flops.parse_args(['cfg.py', '--shape', '32']).shape == (32, 32)  # one size: a square
    assert get_flops.parse_args(['cfg.py', '--shape', '32', '48']).shape == (32, 48)
    assert get_flops.parse_args(['cfg.py']).shape is None
    assert pytorch2onnx.parse_args(['cfg.py', 'ckpt.pth', '--shape', '16']).shape == (16, 16)


@pytest.mark.parametrize('parse,good,bad', [(positive_int, '1', ['0', '-2', '1.5', 'x']),
                                            (non_negative_int, '0', ['-1', 'nan']),
                                            (unit_float, '1', ['1.01', '-0.1', 'nan', 'inf'])])
def test_argparse_types(parse, good, bad):
    assert parse(good) == float(good)
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError, match=repr(text).strip("'")):
            parse(text)


def test_image_shape_counts_its_numbers():
    parser = argparse.ArgumentParser()
    parser.add_argument('--shape', type=positive_int, nargs='+', action=ImageShape)
    assert parser.parse_args(['--shape', '7']).shape == (7, 7)
    with pytest.raises(SystemExit):
        parser.parse_args(['--shape', '1', '2', '3'])
