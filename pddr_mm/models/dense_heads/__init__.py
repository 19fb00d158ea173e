"""PDDR dense heads."""
from .pd_retina_head import PDRetinaHead

__all__ = ['PDRetinaHead']
