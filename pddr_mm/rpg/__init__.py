"""RPG, Recurrent Parameter Generators (Wang, Chen, Yu, Cheung, LeCun; arXiv 2107.07110).

Every selected convolution kernel is generated from one shared vector, the model ring W of N parameters:
K_i = R_i W, where R_i gathers ring entries with fixed random signs and a fixed scale. A network then
trains N (+ its other parameters) degrees of freedom, whatever its depth, and deploys as the plain
network (:func:`pddr_mm.switch_to_deploy` materialises the kernels).

* :mod:`.generation`: the indices and signs (the authors' even sampling, and a cache-friendly block scheme);
* :mod:`.ring` / :mod:`.conv`: the ring and the generated convolution;
* :mod:`.convert`: any network's convolutions to RPG (layers found by the tracing PDDR uses);
* :mod:`.backbone`: ``RPGBackbone``, the config entry point (registered in mmengine's root MODELS).
"""
from .backbone import RPGBackbone
from .conv import RPGConv2d
from .convert import convert_to_rpg
from .generation import generate
from .ring import ModelRing

__all__ = ['RPGBackbone', 'RPGConv2d', 'ModelRing', 'convert_to_rpg', 'generate']
