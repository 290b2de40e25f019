"""The passes of a program step (`fastopt.spec.Program`): kernels over a
list of same-dtype tensors, one parallel region per pass, that may also
reduce per tensor, per row and per column.

An optimizer whose step is not one elementwise pass (Lamb's trust ratio,
Adafactor's factored second moment, Muon's orthogonalized momentum) is a
short program of such passes, run by `fastopt._program`. Every kernel here
has one of two shapes:

* **elementwise** ``kern(addrs, chunks, env, like, pre, hyper) -> sums``:
  ``addrs[t]`` the addresses of tensor t's arrays (the pass's columns, in
  its order), ``chunks[c] = (t, start, n)`` (`CHUNK` elements each), ``env``
  a float64 (T, E) table of per-tensor scalars earlier passes produced,
  ``pre`` the shared gradient transforms (`kernels.variants.PRE`'s first
  four: scale, bound, wd, decay; clip and l2 as the 0/1 fifth and sixth) and
  ``hyper`` the step's scalars. It returns a float64 (T, R) table of
  per-tensor sums (R may be 0). One ``prange`` over the chunks; each chunk's
  partial sums go to a row of their own and are added up per tensor after
  the parallel region, in chunk order, so the result does not depend on the
  thread count.
* **factored** ``kern(addrs, mats, env, like, pre, hyper) -> sums``: the
  tensors seen as stacks of matrices (..., R, C) (a vector: one 1 x n
  matrix), ``mats[k] = (t, b, R, C)``: matrix b of tensor t. One
  ``prange`` over the matrices; a kernel reduces over rows and columns of
  its matrix into state arrays of the row and column shapes (Adafactor's).

Sums accumulate in float64, one running sum per chunk and quantity (no
fastmath, so LLVM keeps each chain in order). Every
per-element formula follows its oracle's operation order, as
`kernels.rules` does; no float literal appears in a formula (the host
passes every constant), so float32 arithmetic stays float32.
"""
import math

import numba
import numpy as np

from .cpu import SERIAL_BELOW, as_dtype_of, jit, view

CHUNK = 1 << 16   # elements per chunk of an elementwise pass (`fastopt._multi.CHUNK`)


@numba.njit(inline="always")
def grad_in(g, p, pre):
    """The shared gradient transforms (`kernels.variants.element_step`):
    scale (maximize, loss scale), value clipping, coupled decay."""
    scale, bound, wd, decay, clip, l2 = pre
    g = g * scale
    if clip:
        if g > bound:
            g = bound
        elif g < -bound:
            g = -bound
    if l2:
        g = g + wd * p
    return g


@numba.njit(inline="always")
def _per_tensor(partial, chunks, ntensors):
    """The chunks' partial sums added up per tensor, in chunk order."""
    out = np.zeros((ntensors, partial.shape[1]))
    for c in range(chunks.shape[0]):
        t = chunks[c, 0]
        for k in range(partial.shape[1]):
            out[t, k] += partial[c, k]
    return out


@numba.njit(inline="always")
def _total(chunks):
    n = 0
    for c in range(chunks.shape[0]):
        n += chunks[c, 2]
    return n


# -- Lamb (Keras's `Lamb`; Apex FusedLAMB's two passes) -----------------------

@numba.njit(inline="always")
def _lamb_update(m, v, hyper):
    """u = (m / c1) / (sqrt(v / c2) + eps), Keras's order."""
    lr, beta1, one_minus_beta1, beta2, one_minus_beta2, c1, c2, eps = hyper
    return (m / c1) / (math.sqrt(v / c2) + eps)


@numba.njit(inline="always")
def _lamb_moments_chunk(c, addrs, chunks, pre, hyper, partial):
    lr, beta1, one_minus_beta1, beta2, one_minus_beta2, c1, c2, eps = hyper
    t, start, n = chunks[c, 0], chunks[c, 1], chunks[c, 2]
    like = pre[0]
    param = view(addrs[t, 0], start, n, like)
    grad = view(addrs[t, 1], start, n, like)
    mom = view(addrs[t, 2], start, n, like)
    vel = view(addrs[t, 3], start, n, like)
    decay = pre[3]
    w = 0.0
    uu = 0.0
    for i in range(n):
        p = param[i] * decay
        g = grad_in(grad[i], p, pre)
        m = mom[i]
        m = m + (g - m) * one_minus_beta1
        v = vel[i]
        v = v + (g * g - v) * one_minus_beta2
        mom[i] = m
        vel[i] = v
        u = _lamb_update(m, v, hyper)
        w += p * p
        uu += u * u
    partial[c, 0] = w
    partial[c, 1] = uu


@jit()
def lamb_moments(addrs, chunks, env, like, pre, hyper):
    """Pass 1: ``p ← decay·p`` (read, not written), g transformed,
    ``m ← m + (g − m)·(1 − β₁)``, ``v ← v + (g² − v)·(1 − β₂)``; sums of p²
    and of u² per tensor (u as `_lamb_update`). Columns: param, grad, m, v."""
    pre, hyper = as_dtype_of(pre, like), as_dtype_of(hyper, like)
    partial = np.empty((chunks.shape[0], 2))
    if _total(chunks) < SERIAL_BELOW:
        for c in range(chunks.shape[0]):
            _lamb_moments_chunk(c, addrs, chunks, pre, hyper, partial)
    else:
        for c in numba.prange(chunks.shape[0]):
            _lamb_moments_chunk(c, addrs, chunks, pre, hyper, partial)
    return _per_tensor(partial, chunks, addrs.shape[0])


@numba.njit(inline="always")
def _lamb_apply_chunk(c, addrs, chunks, env, pre, hyper):
    t, start, n = chunks[c, 0], chunks[c, 1], chunks[c, 2]
    like = pre[0]
    param = view(addrs[t, 0], start, n, like)
    mom = view(addrs[t, 1], start, n, like)
    vel = view(addrs[t, 2], start, n, like)
    decay = pre[3]
    k = _cast(env[t, 0], like)
    for i in range(n):
        param[i] = param[i] * decay - k * _lamb_update(mom[i], vel[i], hyper)


@numba.njit(inline="always")
def _cast(x, like):
    return as_dtype_of((x,), like)[0]


@jit()
def lamb_apply(addrs, chunks, env, like, pre, hyper):
    """Pass 2: ``p ← decay·p − k·u`` with the tensor's ``k = ratio·lr``
    (``env[t, 0]``). Columns: param, m, v."""
    pre, hyper = as_dtype_of(pre, like), as_dtype_of(hyper, like)
    if _total(chunks) < SERIAL_BELOW:
        for c in range(chunks.shape[0]):
            _lamb_apply_chunk(c, addrs, chunks, env, pre, hyper)
    else:
        for c in numba.prange(chunks.shape[0]):
            _lamb_apply_chunk(c, addrs, chunks, env, pre, hyper)
    return np.zeros((addrs.shape[0], 0))


ELEMENTWISE = {"lamb_moments": lamb_moments, "lamb_apply": lamb_apply}
FACTORED = {}
