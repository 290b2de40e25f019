"""fastopt's Numba kernels: per-element rules, and one skeleton per target.

Nothing here imports the public API: `fastopt` calls in, never the reverse.
"""
from .variants import NUM_ARRAYS, NUM_SLOTS, PRE, RULES, Variant, all_variants, variant

__all__ = ["NUM_ARRAYS", "NUM_SLOTS", "PRE", "RULES", "Variant", "all_variants", "variant"]
