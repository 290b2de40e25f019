"""How the kernels' helpers (rules, conversions, formulas) are inlined.

On the CPU, LLVM inlines them: each is compiled once per signature and its
callers call it, which LLVM's inliner turns into straight-line code before
it vectorizes the loop (`tests/test_cpu_vectorized.py` reads the assembly).
Numba's own inlining (``inline="always"``) copies the callee's IR into every
call site and types it again there: most of a kernel's compile time
(measured: an Adam kernel with two serial loops compiled in 0.74 s that
way, 0.35 s this way).

On a GPU, Numba inlines them: a call from a kernel to a device function
makes numba-cuda ask the current device for its compute capability, which
``numba.cuda.compile_ptx`` on a machine with no GPU does not have, and an
inlined body keeps every value in registers (the PTX tests check for
``.local``).
"""
import numba


def on_device(expr, caller, callee):
    """Numba's inlining cost model (``inline=``): inline where the caller's
    IR is numba-cuda's, that is, in a CUDA kernel or device function."""
    return type(caller).__module__.startswith("numba.cuda")


helper = numba.njit(inline=on_device)   # the decorator of every such helper
