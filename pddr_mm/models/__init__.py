"""PDDR backbones, necks and heads (registered in mmengine's root MODELS registry)."""
