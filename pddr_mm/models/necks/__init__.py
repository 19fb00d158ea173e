"""PDDR necks."""
from .pd_fpn import PDFPN

__all__ = ['PDFPN']
