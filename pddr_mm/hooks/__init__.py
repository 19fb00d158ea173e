"""Runner hooks (registered in mmengine's root HOOKS registry)."""
from .deploy_hook import PDDRDeployHook

__all__ = ['PDDRDeployHook']
