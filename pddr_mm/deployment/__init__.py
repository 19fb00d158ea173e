"""Deployment of PDDR models: config rewriting, checkpoint conversion, complexity and benchmarking.

Importable on its own (the tools import it); ``import pddr_mm`` is not needed first. ONNX export and
ONNX Runtime checks live in ``pddr_mm.deployment.onnx`` (import it explicitly: it needs the deploy extra).
"""
from .configs import (count_pddr_cfgs, deploy_model_cfg, forward_path_model_cfg, is_deploy_cfg, is_pd_conv_cfg,
                      is_pddr_module_cfg, plain_model_cfg, to_deploy_config, to_plain_config)
from .models import (compare_outputs, count_flops, count_params, fused_copy, set_forward_path, unfused_reference,
                     unwrap)

__all__ = [
    'count_pddr_cfgs', 'deploy_model_cfg', 'forward_path_model_cfg', 'is_deploy_cfg', 'is_pd_conv_cfg',
    'is_pddr_module_cfg', 'plain_model_cfg', 'to_deploy_config', 'to_plain_config', 'compare_outputs',
    'count_flops', 'count_params', 'fused_copy', 'set_forward_path', 'unfused_reference', 'unwrap'
]
