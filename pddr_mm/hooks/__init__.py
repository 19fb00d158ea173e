"""Runner hooks (registered in mmengine's root HOOKS registry)."""
from .deploy_hook import PDDRDeployHook
from .temperature_hook import PDDRTemperatureHook

__all__ = ['PDDRDeployHook', 'PDDRTemperatureHook']
