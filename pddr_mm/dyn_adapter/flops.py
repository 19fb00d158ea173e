"""Analytic FLOPs of a ViT run to a given exit.

Convention (mmengine's ``FlopAnalyzer`` / fvcore): one multiply-add is one FLOP, and only the linear
layers, the patch-embedding convolution and the two attention matmuls are counted; norms, activations,
softmax and additions are not. Computed from the ViT's shapes, so they hold for any input of the size
the backbone was built for and cost nothing at test time. ``tests/test_dyn_adapter`` checks them against
``FlopAnalyzer`` on the same model.
"""
from typing import List, Sequence

import torch.nn as nn


def block_flops(layer: nn.Module, num_tokens: int) -> int:
    """One mmpretrain ``TransformerEncoderLayer`` on ``num_tokens`` tokens, without adapters."""
    attn = layer.attn
    linears = [attn.qkv, attn.proj] + [m for m in layer.ffn.modules() if isinstance(m, nn.Linear)]
    dense = sum(num_tokens * m.in_features * m.out_features for m in linears)
    matmuls = 2 * num_tokens * num_tokens * attn.embed_dims  # q @ k^T and attn @ v over all heads
    return dense + matmuls


def embed_flops(backbone: nn.Module) -> int:
    conv = backbone.patch_embed.projection
    out_h, out_w = backbone.patch_resolution
    kh, kw = conv.kernel_size
    return out_h * out_w * conv.out_channels * conv.in_channels // conv.groups * kh * kw


def cumulative_exit_flops(backbone: nn.Module, adapters: Sequence[nn.Module], heads: Sequence[nn.Module],
                          exit_indices: Sequence[int]) -> List[int]:
    """FLOPs per image of a sample that leaves at each exit: the embedding, every block up to the exit
    (with its adapter) and every head evaluated on the way (the heads of the earlier exits included)."""
    num_tokens = backbone.patch_resolution[0] * backbone.patch_resolution[1] + backbone.num_extra_tokens
    total, block, out = embed_flops(backbone), 0, []
    for k, index in enumerate(exit_indices):
        while block <= index:
            total += block_flops(backbone.layers[block], num_tokens)
            if adapters:
                total += adapters[block].flops(num_tokens)
            block += 1
        total += heads[k].flops()
        out.append(total)
    return out


def full_model_flops(backbone: nn.Module, adapters: Sequence[nn.Module], last_head: nn.Module) -> int:
    """The same model without early exits: every block and the last head only (the reference of the
    FLOPs ratio)."""
    return cumulative_exit_flops(backbone, adapters, [last_head], [len(backbone.layers) - 1])[0]
