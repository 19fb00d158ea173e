from .runtime import setup_runtime

__all__ = ['setup_runtime']
