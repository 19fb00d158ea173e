"""``DynAdapterClassifier``: a frozen mmpretrain ViT with adapters in every block, heads at several depths
and dynamic early exit (Dyn-Adapter, Zhang et al., ECCV 2024; see docs/dyn_adapter.md)."""
import copy
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmpretrain.models.backbones import VisionTransformer
from mmpretrain.models.classifiers import BaseClassifier
from mmpretrain.models.utils import resize_pos_embed
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from .checkpoint import register_trainable_only_state_dict
from .flops import cumulative_exit_flops, full_model_flops
from .heads import build_exit_heads
from .sparsity import build_sparsity

OUT_TYPES = ('cls_token', 'avg_featmap')


def resolve_exits(num_layers: int, exit_indices: Optional[Sequence[int]], exit_every: Optional[int]) -> Tuple[int]:
    """The blocks (0-based) after which a head sits. ``exit_every=T``: after blocks T-1, 2T-1, ... and the
    last block. The last exit must be the last block, so that no exit means the whole backbone."""
    if (exit_indices is None) == (exit_every is None):
        raise ValueError('give exactly one of exit_indices (e.g. (2, 5, 8, 11)) and exit_every (e.g. 3)')
    if exit_every is not None:
        if not isinstance(exit_every, int) or not 1 <= exit_every <= num_layers:
            raise ValueError(f'exit_every must be an int in [1, {num_layers}] (the backbone depth), got {exit_every}')
        exits = list(range(exit_every - 1, num_layers, exit_every))
        if exits[-1] != num_layers - 1:
            exits.append(num_layers - 1)
        return tuple(exits)
    exits = tuple(int(i) for i in exit_indices)
    if not exits:
        raise ValueError('exit_indices is empty; give at least the last block, e.g. (num_layers - 1, )')
    bad = [i for i in exits if not 0 <= i < num_layers]
    if bad:
        raise ValueError(f'exit_indices {bad} outside the backbone depth: blocks are 0..{num_layers - 1}')
    if list(exits) != sorted(set(exits)):
        raise ValueError(f'exit_indices must be strictly increasing, got {exits}')
    if exits[-1] != num_layers - 1:
        raise ValueError(f'exit_indices must end with the last block ({num_layers - 1}), got {exits}: '
                         'threshold None runs the whole backbone')
    return exits


def check_threshold(value: Optional[float]) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0. <= value <= 1.:
        raise ValueError(f'exit_threshold must be None or a probability in [0, 1], got {value!r}')
    return float(value)


@MODELS.register_module()
class DynAdapterClassifier(BaseClassifier):
    """Parameter-efficient transfer of a frozen ViT with early exits.

    Training: all blocks run, every head is supervised; the loss is ``sum_k w_k * CE_k`` (logged as
    ``loss_exit{k}``), the weights ``w_k`` set by ``ExitLossWeightHook`` (all 1 without it).
    Inference: the batch runs block by block; at each exit the samples whose max softmax probability
    reaches ``exit_threshold`` leave with that head's prediction and are removed from the batch, so no
    later block runs on them and each prediction is the one the sample would get alone. Each prediction
    carries ``exit_index`` (0-based over the exits) and ``flops`` (spent on that image, see
    :mod:`.flops`), which ``ExitMetric`` reports.

    Args:
        backbone (dict): an mmpretrain ``VisionTransformer`` (DeiT included) config; kept at ``backbone``
            with its own module names, frozen (``requires_grad=False``), its dropouts as configured.
            ``out_type`` 'cls_token' or 'avg_featmap' (the feature the heads read).
        head (dict): ``num_classes`` and optionally ``balanced`` (True: MLP heads, heavier at shallow
            exits; False: linear heads), ``max_hidden_layers`` (2), ``hidden_dims``, ``dropout`` and
            ``loss`` (default ``dict(type='CrossEntropyLoss')``, mmpretrain's).
        adapter (dict, optional): the module put in every block, ``dict(type='Adapter', hidden_dim=8)``
            (AdaptFormer) or ``dict(type='LoRA', rank=4)``; None: no adapters (a probe of the heads).
        exit_indices (Sequence[int], optional): blocks (0-based) followed by an exit; must end with the
            last block. Exactly one of it and ``exit_every``.
        exit_every (int, optional): an exit every T blocks (and at the last block).
        exit_threshold (float, optional): max softmax probability at which a sample exits; None: every
            sample runs to the last head (and no earlier head is evaluated).
        sparsity (dict, optional): bidirectional sparsity (``drop_shallow``, ``drop_deep``, ``grad_mask``,
            see :mod:`.sparsity`); None switches it off. Defaults to ``dict()`` (on, default rates).
        loss_weights (Sequence[float], optional): initial per-exit loss weights. Defaults to all 1.
        save_frozen (str | bool): whether checkpoints hold the frozen backbone. 'auto' (default): not
            when the backbone has a ``Pretrained`` init_cfg, which names where it comes from; True: always;
            False: never (the backbone must then come from its init_cfg).
    """

    def __init__(self,
                 backbone: dict,
                 head: dict,
                 adapter: Optional[dict] = dict(type='Adapter', hidden_dim=8),
                 exit_indices: Optional[Sequence[int]] = None,
                 exit_every: Optional[int] = None,
                 exit_threshold: Optional[float] = None,
                 sparsity: Optional[dict] = dict(),
                 loss_weights: Optional[Sequence[float]] = None,
                 save_frozen='auto',
                 train_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        data_preprocessor = copy.deepcopy(data_preprocessor) or {}
        if isinstance(data_preprocessor, dict):
            data_preprocessor.setdefault('type', 'ClsDataPreprocessor')
            data_preprocessor.setdefault('batch_augments', train_cfg)
            data_preprocessor = MODELS.build(data_preprocessor)
        super().__init__(init_cfg=init_cfg, data_preprocessor=data_preprocessor)

        self.backbone = backbone if isinstance(backbone, nn.Module) else MODELS.build(backbone)
        if not isinstance(self.backbone, VisionTransformer):
            raise ValueError('DynAdapterClassifier needs an mmpretrain VisionTransformer backbone (or a subclass '
                             f'such as DistilledVisionTransformer), got {type(self.backbone).__name__}')
        if self.backbone.out_type not in OUT_TYPES:
            raise ValueError(f'backbone out_type must be one of {OUT_TYPES} (the feature the heads read), got '
                             f'{self.backbone.out_type!r}')
        for p in self.backbone.parameters():
            p.requires_grad = False
        num_layers = len(self.backbone.layers)
        self.exit_indices = resolve_exits(num_layers, exit_indices, exit_every)
        self.num_exits = len(self.exit_indices)
        self.exit_threshold = exit_threshold  # checked by the setter

        self.sparsity = build_sparsity(sparsity)
        self.adapters = nn.ModuleList()
        self._hook_handles = []
        if adapter is not None:
            drop_rates = self.sparsity.drop_rates(num_layers) if self.sparsity else [None] * num_layers
            for layer, rate in zip(self.backbone.layers, drop_rates):
                module = MODELS.build(dict(adapter, embed_dims=self.backbone.embed_dims))
                if rate is not None:
                    module.set_drop_rate(rate)
                self._hook_handles += module.attach(layer)
                self.adapters.append(module)
            if self.sparsity:
                self._hook_handles += self.sparsity.mask_gradients(self.adapters)

        head = dict(head)
        if 'num_classes' not in head:
            raise ValueError('head needs num_classes')
        self.loss_module = MODELS.build(head.pop('loss', dict(type='CrossEntropyLoss', loss_weight=1.0)))
        self.heads = build_exit_heads(self.backbone.embed_dims, self.num_exits, **head)
        self.loss_weights = [1.] * self.num_exits if loss_weights is None else [float(w) for w in loss_weights]
        if len(self.loss_weights) != self.num_exits:
            raise ValueError(f'loss_weights has {len(self.loss_weights)} values for {self.num_exits} exits')

        self.exit_flops = cumulative_exit_flops(self.backbone, self.adapters, self.heads, self.exit_indices)
        self.full_flops = full_model_flops(self.backbone, self.adapters, self.heads[-1])
        if save_frozen not in ('auto', True, False):
            raise ValueError(f"save_frozen must be 'auto', True or False, got {save_frozen!r}")
        if save_frozen == 'auto':
            save_frozen = not self.backbone_is_pretrained
        self.save_frozen = save_frozen
        register_trainable_only_state_dict(self)
        self.log_summary()

    # ------------------------------------------------------------------ configuration
    @property
    def exit_threshold(self) -> Optional[float]:
        return self._exit_threshold

    @exit_threshold.setter
    def exit_threshold(self, value: Optional[float]) -> None:
        self._exit_threshold = check_threshold(value)

    @property
    def backbone_is_pretrained(self) -> bool:
        cfgs = self.backbone.init_cfg if isinstance(self.backbone.init_cfg, list) else [self.backbone.init_cfg]
        return any(isinstance(c, dict) and c.get('type') == 'Pretrained' for c in cfgs)

    # ------------------------------------------------------------------ the ViT, block by block
    def _embed(self, inputs: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """What ``VisionTransformer.forward`` does before its first block."""
        vit = self.backbone
        x, hw = vit.patch_embed(inputs)
        tokens = [vit.cls_token.expand(x.shape[0], -1, -1)] if vit.cls_token is not None else []
        if getattr(vit, 'dist_token', None) is not None:  # DistilledVisionTransformer
            tokens.append(vit.dist_token.expand(x.shape[0], -1, -1))
        x = torch.cat(tokens + [x], dim=1)
        x = x + resize_pos_embed(vit.pos_embed, vit.patch_resolution, hw, mode=vit.interpolate_mode,
                                 num_extra_tokens=vit.num_extra_tokens)
        return vit.pre_norm(vit.drop_after_pos(x)), hw

    def _exit_feature(self, x: torch.Tensor, k: int, hw) -> torch.Tensor:
        """The last exit reads exactly the backbone's output; an earlier one the same token(s) (its head
        normalises them)."""
        vit = self.backbone
        if k == self.num_exits - 1:
            if vit.final_norm:
                x = vit.ln1(x)
            out = vit._format_output(x, hw)
            return out[0] if isinstance(out, tuple) else out  # a distilled ViT's (cls, dist): the cls token
        if vit.out_type == 'cls_token':
            return x[:, 0]
        return x[:, vit.num_extra_tokens:].mean(dim=1)

    def exit_logits(self, inputs: torch.Tensor) -> List[torch.Tensor]:
        """Logits of every head, all blocks run on the whole batch (training)."""
        x, hw = self._embed(inputs)
        logits, block = [], 0
        for k, index in enumerate(self.exit_indices):
            for block in range(block, index + 1):
                x = self.backbone.layers[block](x)
            block = index + 1
            logits.append(self.heads[k](self._exit_feature(x, k, hw)))
        return logits

    def dynamic_forward(self, inputs: torch.Tensor,
                        threshold: Optional[float] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Probabilities and exit index of every sample under ``threshold``; exited samples leave the batch.

        Returns:
            (scores (N, num_classes), exit_index (N,)).
        """
        x, hw = self._embed(inputs)
        num = inputs.shape[0]
        alive = torch.arange(num, device=inputs.device)
        scores = inputs.new_zeros(num, self.heads[-1].fc.out_features)
        exits = torch.full((num, ), -1, dtype=torch.long, device=inputs.device)
        block = 0
        for k, index in enumerate(self.exit_indices):
            last = k == self.num_exits - 1
            if threshold is None and not last:
                continue  # no early head is evaluated: the blocks run at the last exit
            for block in range(block, index + 1):
                x = self.backbone.layers[block](x)
            block = index + 1
            probs = self.heads[k](self._exit_feature(x, k, hw)).softmax(dim=-1)
            done = torch.ones_like(alive, dtype=torch.bool) if last else probs.max(dim=-1).values >= threshold
            scores[alive[done]] = probs[done]
            exits[alive[done]] = k
            x, alive = x[~done], alive[~done]
            if alive.numel() == 0:
                break
        return scores, exits

    # ------------------------------------------------------------------ BaseClassifier's interface
    def extract_feat(self, inputs: torch.Tensor, stage: str = 'backbone'):
        """The backbone's output features (with the adapters), as ``ImageClassifier.extract_feat``."""
        if stage != 'backbone':
            raise ValueError(f'DynAdapterClassifier.extract_feat has only stage="backbone", got {stage!r}')
        return self.backbone(inputs)

    def forward(self, inputs: torch.Tensor, data_samples: Optional[List[DataSample]] = None, mode: str = 'tensor'):
        if mode == 'tensor':
            return self.exit_logits(inputs)
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        raise RuntimeError(f'Invalid mode "{mode}".')

    def loss(self, inputs: torch.Tensor, data_samples: List[DataSample]) -> Dict[str, torch.Tensor]:
        if 'gt_score' in data_samples[0]:  # batch augments (mixup, cutmix) give soft labels
            target = torch.stack([s.gt_score for s in data_samples])
        else:
            target = torch.cat([s.gt_label for s in data_samples])
        losses = {}
        for k, logits in enumerate(self.exit_logits(inputs)):
            ce = self.loss_module(logits, target, avg_factor=logits.size(0))
            losses[f'loss_exit{k}'] = ce * self.loss_weights[k]  # mmengine sums every 'loss*' key
        return losses

    def predict(self, inputs: torch.Tensor, data_samples: Optional[List[DataSample]] = None) -> List[DataSample]:
        scores, exits = self.dynamic_forward(inputs, self.exit_threshold)
        if data_samples is None:
            data_samples = [DataSample() for _ in range(inputs.shape[0])]
        for sample, score, k in zip(data_samples, scores.detach(), exits.tolist()):
            sample.set_pred_score(score).set_pred_label(score.argmax(keepdim=True))
            sample.set_field(k, 'exit_index')
            sample.set_field(self.full_flops if self.exit_threshold is None else self.exit_flops[k], 'flops')
            sample.set_field(self.full_flops, 'full_flops')  # the reference of ExitMetric's ratio
        return data_samples

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def log_summary(self) -> None:
        total = sum(p.numel() for p in self.parameters())
        print_log(f'DynAdapterClassifier: exits after blocks {self.exit_indices}, {self.trainable_parameters()} '
                  f'trainable of {total} parameters; FLOPs per exit {self.exit_flops}, without exits '
                  f'{self.full_flops}', logger='current')
