"""Runner hooks (registered in mmengine's root HOOKS registry)."""
