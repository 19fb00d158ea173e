"""Backbone surgery shared by every method of pddr_mm and owned by none: finding layers in any network from
one traced forward (:mod:`.layer_select`), building a config's inner backbone and converting it in place
(:mod:`.backbone`). PDDR (:mod:`pddr_mm.models`) and RPG (:mod:`pddr_mm.rpg`) both build on it."""
from .backbone import NothingConvertedError, build_inner_backbone, convert_backbone
from .layer_select import ConvTrace, check_selection, conv_kind, excluded_by_name, trace_conv_consumers

__all__ = ['NothingConvertedError', 'build_inner_backbone', 'convert_backbone', 'ConvTrace', 'check_selection',
           'conv_kind', 'excluded_by_name', 'trace_conv_consumers']
