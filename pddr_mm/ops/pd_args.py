"""The PDDR arguments, defined once: every PDDR module (PDConv2d, PDFPN, PDRetinaHead, PDResNet,
PDDRBackbone) and ``convert_to_pd`` take exactly these keywords, with these defaults and checks."""
from dataclasses import dataclass, fields
from typing import Any, Dict, Tuple

from .branches import BranchCfg, branch_class, check_branch_list

# the paper's four branches: two kxk convs, a group conv and the kx1 + 1xk skeleton pair
DEFAULT_BRANCHES = ('standard', 'standard', 'group', 'skeleton')
MODES = ('A', 'B')
FORWARD_PATHS = ('auto', 'branches', 'fused', 'stacked')


@dataclass(frozen=True)
class PDArgs:
    """The PDDR arguments of a layer or of every layer of a module.

    Args:
        mode: 'A' sums the branch outputs; 'B' weights them per sample with softmax weights from a
            refinement module on the input.
        branches: branch types registered in ``pddr_mm.ops.BRANCHES``, by name or as
            ``dict(type=name, ...)``; names may repeat. Built in: 'standard', 'group', 'skeleton',
            'pointwise', 'identity'.
        branch_groups: groups of the 'group' branch: a multiple of the layer's ``groups`` dividing both
            channel counts.
        reduction: hidden width of the refinement module is ``in_channels // reduction`` (PD-B).
        temperature: softmax temperature of the refinement (PD-B; 1 is the paper's softmax).
        forward_path: 'auto' runs the fused kernels whenever every branch BN is in eval mode (frozen, or
            the model in eval) and the branches otherwise; 'branches' and 'fused' force one path. 'stacked'
            (PD-B, frozen BN) convolves with every branch kernel at once and mixes the outputs per sample
            (``stacked_conv2d``), for backends whose grouped convolutions are slow. All give the same
            outputs and gradients.
        deploy: build the deploy form directly (to load a checkpoint written after ``switch_to_deploy``).
    """
    mode: str = 'A'
    branches: Tuple[BranchCfg, ...] = DEFAULT_BRANCHES
    branch_groups: int = 64
    reduction: int = 16
    temperature: float = 1.0
    forward_path: str = 'auto'
    deploy: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f'mode must be one of {MODES}, got {self.mode!r}')
        check_branch_list(self.branches)
        object.__setattr__(self, 'branches', tuple(self.branches))
        for cfg in self.branches:
            branch_class(cfg)  # an unknown type is an error here, not a branch that no layer can take
        if self.mode == 'B' and len(self.branches) < 2:
            raise ValueError(f"mode='B' weights the branches per sample and needs at least two branches, got "
                             f"branches={self.branches!r}; use mode='A' for a single branch")
        for name in ('branch_groups', 'reduction'):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f'{name} must be an int >= 1, got {value!r}')
        if not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
            raise ValueError(f'temperature must be a number > 0, got {self.temperature!r}')
        if self.forward_path not in FORWARD_PATHS:
            raise ValueError(f'forward_path must be one of {FORWARD_PATHS}, got {self.forward_path!r}')
        if not isinstance(self.deploy, bool):
            raise ValueError(f'deploy must be True or False, got {self.deploy!r}')

    @classmethod
    def create(cls, owner: str, kwargs: Dict[str, Any]) -> 'PDArgs':
        """The PDDR arguments among ``kwargs``, which names ``owner``'s unknown keywords if any."""
        unknown = sorted(set(kwargs) - set(PD_ARGS))
        if unknown:
            raise TypeError(f'{owner} got unexpected argument(s) {unknown}; the PDDR arguments are {PD_ARGS}')
        return cls(**kwargs)

    @classmethod
    def pop_from(cls, kwargs: Dict[str, Any]) -> 'PDArgs':
        """Take the PDDR arguments out of ``kwargs`` in place (what is left is the plain module's)."""
        return cls(**{name: kwargs.pop(name) for name in PD_ARGS if name in kwargs})

    def to_dict(self) -> Dict[str, Any]:
        return {name: getattr(self, name) for name in PD_ARGS}


# their names: without them (and with 'PD' dropped from the type) a PDDR config becomes its plain one
PD_ARGS = tuple(f.name for f in fields(PDArgs))
