"""argparse types shared by the tools: a bad number fails at parsing, naming its option, before any work.

argparse turns the ``ArgumentTypeError`` raised here into ``error: argument --shape: ...`` and exit code 2.
"""
import argparse
from typing import Callable, Optional


def _number(kind: type, low: float, high: Optional[float] = None) -> Callable[[str], float]:
    """A parser of ``kind`` (int or float) values in [low, high] (no upper bound if ``high`` is None)."""
    span = f'>= {low:g}' if high is None else f'in [{low:g}, {high:g}]'
    noun = 'an integer' if kind is int else 'a number'

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'expected {noun} {span}, got {text!r}') from None
        if value != value or value < low or (high is not None and value > high):  # value != value: NaN
            raise argparse.ArgumentTypeError(f'expected {noun} {span}, got {text}')
        return value

    return parse


positive_int = _number(int, 1)
non_negative_int = _number(int, 0)
non_negative_float = _number(float, 0)
unit_float = _number(float, 0, 1)  # a probability or a fraction


def int_at_least(low: int) -> Callable[[str], int]:
    """Integers >= low (an ONNX opset >= 11)."""
    return _number(int, low)


def int_range(low: int, high: int) -> Callable[[str], int]:
    """Integers in [low, high]."""
    return _number(int, low, high)


class ImageShape(argparse.Action):
    """``--shape H W`` or ``--shape SIZE`` (a square), stored as (H, W); use with ``nargs='+'`` and
    ``type=positive_int``, so that three numbers are refused at parsing too."""

    def __call__(self, parser, namespace, values, option_string=None):
        if len(values) not in (1, 2):
            parser.error(f'argument {option_string}: expected H W or one size, got {len(values)} numbers')
        setattr(namespace, self.dest, tuple(values) * (3 - len(values)))
