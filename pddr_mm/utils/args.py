"""argparse types shared by the tools: a bad number fails at parsing, naming its option, before any work.

argparse turns the ``ArgumentTypeError`` raised here into ``error: argument --shape: ...`` and exit code 2.
"""
import argparse
from typing import Callable, Optional


def _number(kind: type, low: Optional[float], high: Optional[float], low_open: bool = False) -> Callable[[str], float]:
    """A parser of ``kind`` (int or float) values in [low, high] (or (low, high] with ``low_open``)."""
    if low is not None and high is not None:
        span = f'in {"(" if low_open else "["}{low:g}, {high:g}]'
    elif low is not None:
        span = f'{">" if low_open else ">="} {low:g}'
    else:
        span = f'<= {high:g}'
    noun = 'an integer' if kind is int else 'a number'

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'expected {noun} {span}, got {text!r}') from None
        if value != value or (low is not None and (value <= low if low_open else value < low)) or \
                (high is not None and value > high):  # value != value: NaN
            raise argparse.ArgumentTypeError(f'expected {noun} {span}, got {text}')
        return value

    parse.__name__ = f'{kind.__name__} {span}'  # what argparse names in "invalid ... value"
    return parse


positive_int = _number(int, 1, None)
non_negative_int = _number(int, 0, None)
non_negative_float = _number(float, 0, None)
positive_float = _number(float, 0, None, low_open=True)
unit_float = _number(float, 0, 1)  # a probability or a fraction


def int_at_least(low: int) -> Callable[[str], int]:
    """Integers >= low (an ONNX opset >= 11)."""
    return _number(int, low, None)


def int_range(low: int, high: int) -> Callable[[str], int]:
    """Integers in [low, high]."""
    return _number(int, low, high)


def float_range(low: float, high: float) -> Callable[[str], float]:
    """Numbers in [low, high]."""
    return _number(float, low, high)


class ImageShape(argparse.Action):
    """``--shape H W`` or ``--shape SIZE`` (a square), stored as (H, W); use with ``nargs='+'`` and
    ``type=positive_int``, so that three numbers are refused at parsing too."""

    def __call__(self, parser, namespace, values, option_string=None):
        if len(values) not in (1, 2):
            parser.error(f'argument {option_string}: expected H W or one size, got {len(values)} numbers')
        setattr(namespace, self.dest, tuple(values) * (3 - len(values)))
