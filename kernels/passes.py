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
from numba.core import cgutils
from numba.core.extending import intrinsic

from .cpu import SERIAL_BELOW, as_dtype_of, jit, view

CHUNK = 1 << 16   # elements per chunk of an elementwise pass (`fastopt._multi.CHUNK`)


@intrinsic
def fma(typingctx, a, b, c):
    """``a·b + c`` rounded once (LLVM's fma), in the arguments' (one) float
    type. No kernel contracts on its own (`kernels.cpu`: no fastmath); where
    an oracle's CPU kernel computes with a fused multiply-add (torch's
    vectorized ``lerp`` and ``add(alpha=)``), a pass asks for one by name."""
    def codegen(context, builder, sig, args):
        ty = context.get_value_type(sig.return_type)
        fn = cgutils.get_or_insert_function(
            builder.module, __import__("llvmlite").ir.FunctionType(ty, [ty, ty, ty]),
            f"llvm.fma.{'f32' if sig.return_type.bitwidth == 32 else 'f64'}")
        return builder.call(fn, args)

    return a(a, b, c), codegen


@numba.njit(inline="always")
def lerp_fma(a, b, w, w_minus_one, half):
    """torch's vectorized CPU lerp: ``fma(w, b − a, a)`` if |w| < ½, else
    ``fma(w − 1, b − a, b)`` (ATen's ``lerp_vec``)."""
    if abs(w) < half:
        return fma(w, b - a, a)
    return fma(w_minus_one, b - a, b)


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


# Apex FusedLAMB's form (convention "torch"): hyper (lr, β₁, β₃, β₂, 1 − β₂,
# c₁, c₂, ε, decoupled wd); the shared decay factor is not applied (Apex adds
# wd·p to the update instead).

@numba.njit(inline="always")
def _lamb_update_torch(m, v, p, hyper):
    """Apex: ``(m / c₁) / (sqrt(v / c₂) + ε) + wd·p``."""
    lr, beta1, beta3, beta2, one_minus_beta2, c1, c2, eps, wd = hyper
    return (m / c1) / (math.sqrt(v / c2) + eps) + wd * p


@numba.njit(inline="always")
def _lamb_moments_torch_chunk(c, addrs, chunks, pre, hyper, partial):
    lr, beta1, beta3, beta2, one_minus_beta2, c1, c2, eps, wd = hyper
    t, start, n = chunks[c, 0], chunks[c, 1], chunks[c, 2]
    like = pre[0]
    param = view(addrs[t, 0], start, n, like)
    grad = view(addrs[t, 1], start, n, like)
    mom = view(addrs[t, 2], start, n, like)
    vel = view(addrs[t, 3], start, n, like)
    w = 0.0
    uu = 0.0
    for i in range(n):
        p = param[i]
        g = grad_in(grad[i], p, pre)
        m = mom[i] * beta1 + beta3 * g
        v = vel[i] * beta2 + one_minus_beta2 * g * g
        mom[i] = m
        vel[i] = v
        u = _lamb_update_torch(m, v, p, hyper)
        w += p * p
        uu += u * u
    partial[c, 0] = w
    partial[c, 1] = uu


@jit()
def lamb_moments_torch(addrs, chunks, env, like, pre, hyper):
    """Apex, pass 1: g transformed (grad_scale: the global clip; coupled
    decay), ``m ← β₁·m + β₃·g``, ``v ← β₂·v + (1 − β₂)·g·g``; sums of p² and
    u² per tensor (u as `_lamb_update_torch`). Columns: param, grad, m, v."""
    pre, hyper = as_dtype_of(pre, like), as_dtype_of(hyper, like)
    partial = np.empty((chunks.shape[0], 2))
    if _total(chunks) < SERIAL_BELOW:
        for c in range(chunks.shape[0]):
            _lamb_moments_torch_chunk(c, addrs, chunks, pre, hyper, partial)
    else:
        for c in numba.prange(chunks.shape[0]):
            _lamb_moments_torch_chunk(c, addrs, chunks, pre, hyper, partial)
    return _per_tensor(partial, chunks, addrs.shape[0])


@numba.njit(inline="always")
def _lamb_apply_torch_chunk(c, addrs, chunks, env, pre, hyper):
    t, start, n = chunks[c, 0], chunks[c, 1], chunks[c, 2]
    like = pre[0]
    param = view(addrs[t, 0], start, n, like)
    mom = view(addrs[t, 1], start, n, like)
    vel = view(addrs[t, 2], start, n, like)
    k = _cast(env[t, 0], like)
    for i in range(n):
        p = param[i]
        param[i] = p - k * _lamb_update_torch(mom[i], vel[i], p, hyper)


@jit()
def lamb_apply_torch(addrs, chunks, env, like, pre, hyper):
    """Apex, pass 2: ``p ← p − k·u`` with the tensor's k (``env[t, 0]``: lr,
    times the trust ratio). Columns: param, m, v."""
    pre, hyper = as_dtype_of(pre, like), as_dtype_of(hyper, like)
    if _total(chunks) < SERIAL_BELOW:
        for c in range(chunks.shape[0]):
            _lamb_apply_torch_chunk(c, addrs, chunks, env, pre, hyper)
    else:
        for c in numba.prange(chunks.shape[0]):
            _lamb_apply_torch_chunk(c, addrs, chunks, env, pre, hyper)
    return np.zeros((addrs.shape[0], 0))


ELEMENTWISE = {"lamb_moments": lamb_moments, "lamb_apply": lamb_apply,
               "lamb_moments_torch": lamb_moments_torch, "lamb_apply_torch": lamb_apply_torch}
FACTORED = {}


# -- Adafactor (Keras's `Adafactor`, torch.optim.Adafactor) --------------------
# hyper, both conventions: (rho, beta2_t, one_minus_beta2_t, eps1, eps1_sq)
# (Keras: v ← β·v + (1 − β)·x with β = beta2_t; torch: lerp(v, x, w) with
# w = one_minus_beta2_t, and 1 − w = beta2_t.)

@numba.njit(inline="always")
def _lerp(a, b, w, one_minus_w):
    """torch.lerp's formula (`kernels.rules.lerp`)."""
    if w < one_minus_w:
        return a + w * (b - a)
    return b - (b - a) * one_minus_w


@numba.njit(inline="always")
def _mat(addrs, mats, k, col, like, per_row):
    """The view of matrix k's part of column `col`: its R·C elements, or its
    R (per_row=1), C (per_row=2) entries of a row or column factor."""
    t, b, r, c = mats[k, 0], mats[k, 1], mats[k, 2], mats[k, 3]
    if per_row == 1:
        return view(addrs[t, col], b * r, r, like)
    if per_row == 2:
        return view(addrs[t, col], b * c, c, like)
    return view(addrs[t, col], b * r * c, r * c, like)


@numba.njit(inline="always")
def _blocks(mats):
    """Each matrix's rows in blocks of about `CHUNK` elements, so that one
    large matrix is spread over the threads as a list of small ones is:
    ``blocks[q] = (k, r0, nr)`` (rows r0 .. r0 + nr of matrix k), ``first[k]``
    its first block (blocks are in matrix order; ``first[M]`` = the count),
    ``offs[q]`` where block q's partial column sums start in a flat buffer.
    The partition depends on the shapes only (not on the thread count), and
    so do the sums."""
    m = mats.shape[0]
    first = np.empty(m + 1, dtype=np.int64)
    count = 0
    for k in range(m):
        r, c = mats[k, 2], mats[k, 3]
        nb = (r * c + CHUNK - 1) // CHUNK
        if nb > r:
            nb = r
        if nb < 1:
            nb = 1
        first[k] = count
        count += nb
    first[m] = count
    blocks = np.empty((count, 3), dtype=np.int64)
    offs = np.empty(count + 1, dtype=np.int64)
    off = 0
    for k in range(m):
        r, c = mats[k, 2], mats[k, 3]
        nb = first[k + 1] - first[k]
        rows = (r + nb - 1) // nb
        for q in range(first[k], first[k + 1]):
            r0 = (q - first[k]) * rows
            nr = r - r0
            if nr > rows:
                nr = rows
            if nr < 0:
                nr = 0
            blocks[q, 0], blocks[q, 1], blocks[q, 2] = k, r0, nr
            offs[q] = off
            off += c
    offs[count] = off
    return blocks, first, offs


@numba.njit(inline="always")
def _block_rows(addrs, mats, k, col, like, r0, nr):
    """Rows r0 .. r0 + nr of matrix k's part of column `col`, as a view of
    their nr·C elements (indexed from 0, as Numba's loops vectorize)."""
    t, b, r, c = mats[k, 0], mats[k, 1], mats[k, 2], mats[k, 3]
    return view(addrs[t, col], (b * r + r0) * c, nr * c, like)


@numba.njit(inline="always")
def _block_factor(addrs, mats, k, like, r0, nr):
    """Rows r0 .. r0 + nr of matrix k's row factor (column 2)."""
    t, b, r = mats[k, 0], mats[k, 1], mats[k, 2]
    return view(addrs[t, 2], b * r + r0, nr, like)


@numba.njit(inline="always")
def _factor_block(q, blocks, addrs, mats, pre, hyper, colpart, offs, wpart, keras):
    """Rows r0 .. r0 + nr of matrix k: their sums of g² (+ eps1, Keras) into
    the row factor; their column sums into the block's partials (added up
    per matrix by `_factor_columns`); the sum of p² (p after decoupled
    decay, Keras; before it, torch) into wpart[q]."""
    rho, beta, one_minus_beta, eps1, eps1_sq = hyper
    like = pre[0]
    k, r0, nr = blocks[q, 0], blocks[q, 1], blocks[q, 2]
    c = mats[k, 3]
    param = _block_rows(addrs, mats, k, 0, like, r0, nr)
    grad = _block_rows(addrs, mats, k, 1, like, r0, nr)
    row = _block_factor(addrs, mats, k, like, r0, nr)
    base = offs[q]
    decay = pre[3]
    w = 0.0
    for i in range(nr):
        s = 0.0
        for j in range(c):
            p = param[i * c + j] * decay
            g = grad_in(grad[i * c + j], p, pre)
            if keras:
                x = g * g + eps1
            else:
                x = g * g
            s += x
            colpart[base + j] += x
            if not keras:   # torch's alpha reads the param before its decay
                p = param[i * c + j]
            w += p * p
        if keras:   # mean, then β·r + (1 − β)·mean
            row[i] = beta * row[i] + one_minus_beta * (_cast(s, like) / _cast(c, like))
        else:       # ‖g_i‖² / C, lerp'd in
            norm = math.sqrt(_cast(s, like))
            row[i] = _lerp(row[i], norm * norm / _cast(c, like), one_minus_beta, beta)
    wpart[q] = w


@numba.njit(inline="always")
def _factor_columns(k, first, addrs, mats, pre, hyper, colpart, offs, wpart, partial, keras):
    """Matrix k's column sums (its blocks' partials, in block order) into
    its column factor, and its sum of p²."""
    rho, beta, one_minus_beta, eps1, eps1_sq = hyper
    like = pre[0]
    r, c = mats[k, 2], mats[k, 3]
    col = _mat(addrs, mats, k, 3, like, 2)
    for j in range(c):
        s = 0.0
        for q in range(first[k], first[k + 1]):
            s += colpart[offs[q] + j]
        if keras:
            col[j] = beta * col[j] + one_minus_beta * (_cast(s, like) / _cast(r, like))
        else:
            norm = math.sqrt(_cast(s, like))
            col[j] = _lerp(col[j], norm * norm / _cast(r, like), one_minus_beta, beta)
    w = 0.0
    for q in range(first[k], first[k + 1]):
        w += wpart[q]
    partial[k, 0] = w


@numba.njit(inline="always")
def _row_mean(row, r, like):
    s = 0.0
    for i in range(r):
        s += row[i]
    return _cast(s, like) / _cast(r, like)


@numba.njit(inline="always")
def _per_matrix(partial, mats, ntensors):
    out = np.zeros((ntensors, partial.shape[1]))
    for k in range(mats.shape[0]):
        for q in range(partial.shape[1]):
            out[mats[k, 0], q] += partial[k, q]
    return out


@numba.njit(inline="always")
def _block_sums(wpart, first, mats, ntensors):
    """Per-block sums added up per matrix (in block order), then per tensor."""
    partial = np.zeros((mats.shape[0], 1))
    for k in range(mats.shape[0]):
        w = 0.0
        for q in range(first[k], first[k + 1]):
            w += wpart[q]
        partial[k, 0] = w
    return _per_matrix(partial, mats, ntensors)


@jit()
def adafactor_factor_keras(addrs, mats, env, like, pre, hyper):
    """Keras, pass 1 of a matrix: ``r ← β·r + (1 − β)·mean_C(g² + ε₁)``,
    ``c ← β·c + (1 − β)·mean_R(g² + ε₁)``; sums p². Columns: param, grad,
    row, col. Parallel over row blocks of every matrix (`_blocks`), then
    over the matrices for the column factors."""
    pre, hyper = as_dtype_of(pre, like), as_dtype_of(hyper, like)
    blocks, first, offs = _blocks(mats)
    nb, m = first[mats.shape[0]], mats.shape[0]
    colpart = np.zeros(offs[nb])
    wpart = np.zeros(nb)
    partial = np.zeros((m, 1))
    for q in numba.prange(nb):
        _factor_block(q, blocks, addrs, mats, pre, hyper, colpart, offs, wpart, True)
    if offs[nb] < SERIAL_BELOW:    # the combine is small: no second parallel region
        for k in range(m):
            _factor_columns(k, first, addrs, mats, pre, hyper, colpart, offs, wpart, partial,
                            True)
    else:
        for k in numba.prange(m):
            _factor_columns(k, first, addrs, mats, pre, hyper, colpart, offs, wpart, partial,
                            True)
    return _per_matrix(partial, mats, addrs.shape[0])


@jit()
def adafactor_factor_torch(addrs, mats, env, like, pre, hyper):
    """torch, pass 1 of a matrix: ``r ← lerp(r, ‖g_i‖²/C, w)``,
    ``c ← lerp(c, ‖g_j‖²/R, w)``; sums p². Columns: param, grad, row_var,
    col_var. Parallel as `adafactor_factor_keras`."""
    pre, hyper = as_dtype_of(pre, like), as_dtype_of(hyper, like)
    blocks, first, offs = _blocks(mats)
    nb, m = first[mats.shape[0]], mats.shape[0]
    colpart = np.zeros(offs[nb])
    wpart = np.zeros(nb)
    partial = np.zeros((m, 1))
    for q in numba.prange(nb):
        _factor_block(q, blocks, addrs, mats, pre, hyper, colpart, offs, wpart, False)
    if offs[nb] < SERIAL_BELOW:    # the combine is small: no second parallel region
        for k in range(m):
            _factor_columns(k, first, addrs, mats, pre, hyper, colpart, offs, wpart, partial,
                            False)
    else:
        for k in numba.prange(m):
            _factor_columns(k, first, addrs, mats, pre, hyper, colpart, offs, wpart, partial,
                            False)
    return _per_matrix(partial, mats, addrs.shape[0])


@numba.njit(inline="always")
def _torch_estimate(ri, cj, mean_r, eps1_sq, g):
    """torch: ``rsqrt(max((r_i·c_j) / mean_r, ε₁²))·g``."""
    v = (ri * cj) / mean_r
    if v < eps1_sq:
        v = eps1_sq
    return (_cast(1, g) / math.sqrt(v)) * g


@numba.njit(inline="always")
def _torch_mean_r(row, r, like, eps1):
    m = _row_mean(row, r, like)
    if m < eps1:
        m = eps1
    return m


@numba.njit(inline="always")
def _row_mean_of(k, addrs, mats, like, eps1, torch_form):
    """Matrix k's mean of its row factor (torch: at least ε₁)."""
    row = _mat(addrs, mats, k, 2, like, 1)
    if torch_form:
        return _torch_mean_r(row, mats[k, 2], like, eps1)
    return _row_mean(row, mats[k, 2], like)


@jit()
def adafactor_rms_torch(addrs, mats, env, like, pre, hyper):
    """torch, pass 2 of a matrix: the sum of u² (u from the factors).
    Columns: param, grad, row_var, col_var. Parallel over row blocks."""
    pre, hyper = as_dtype_of(pre, like), as_dtype_of(hyper, like)
    rho, beta, one_minus_beta, eps1, eps1_sq = hyper
    m = mats.shape[0]
    means = np.empty(m)    # each matrix's, before its row blocks read it (O(rows): serial)
    for k in range(m):
        means[k] = _row_mean_of(k, addrs, mats, like, eps1, True)
    blocks, first, offs = _blocks(mats)
    nb = first[m]
    wpart = np.zeros(nb)
    for q in numba.prange(nb):
        k, r0, nr = blocks[q, 0], blocks[q, 1], blocks[q, 2]
        c = mats[k, 3]
        param = _block_rows(addrs, mats, k, 0, like, r0, nr)
        grad = _block_rows(addrs, mats, k, 1, like, r0, nr)
        row = _block_factor(addrs, mats, k, like, r0, nr)
        col = _mat(addrs, mats, k, 3, like, 2)
        mean_r = _cast(means[k], like)
        s = 0.0
        for i in range(nr):
            for j in range(c):
                g = grad_in(grad[i * c + j], param[i * c + j] * pre[3], pre)
                u = _torch_estimate(row[i], col[j], mean_r, eps1_sq, g)
                s += u * u
        wpart[q] = s
    return _block_sums(wpart, first, mats, addrs.shape[0])


@jit()
def adafactor_apply_torch(addrs, mats, env, like, pre, hyper):
    """torch, pass 3 of a matrix: ``p ← decay·p + k·u`` with the tensor's
    ``k = −α/denom`` (``env[t, 0]``). Columns: param, grad, row_var, col_var.
    Parallel over row blocks."""
    pre, hyper = as_dtype_of(pre, like), as_dtype_of(hyper, like)
    rho, beta, one_minus_beta, eps1, eps1_sq = hyper
    m = mats.shape[0]
    means = np.empty(m)    # each matrix's, before its row blocks read it (O(rows): serial)
    for k in range(m):
        means[k] = _row_mean_of(k, addrs, mats, like, eps1, True)
    blocks, first, offs = _blocks(mats)
    nb = first[m]
    for q in numba.prange(nb):
        _apply_torch_block(q, blocks, addrs, mats, env, means, like, pre, eps1_sq)
    return np.zeros((addrs.shape[0], 0))


@numba.njit(inline="always")
def _apply_torch_block(q, blocks, addrs, mats, env, means, like, pre, eps1_sq):
    k, r0, nr = blocks[q, 0], blocks[q, 1], blocks[q, 2]
    c = mats[k, 3]
    scale = _cast(env[mats[k, 0], 0], like)
    param = _block_rows(addrs, mats, k, 0, like, r0, nr)
    grad = _block_rows(addrs, mats, k, 1, like, r0, nr)
    row = _block_factor(addrs, mats, k, like, r0, nr)
    col = _mat(addrs, mats, k, 3, like, 2)
    mean_r = _cast(means[k], like)
    for i in range(nr):
        for j in range(c):
            p = param[i * c + j] * pre[3]
            g = grad_in(grad[i * c + j], p, pre)
            param[i * c + j] = p + scale * _torch_estimate(row[i], col[j], mean_r,
                                                           eps1_sq, g)


@jit()
def adafactor_velocity_keras(addrs, mats, env, like, pre, hyper):
    """Keras, pass 2 of a matrix: ``v ← (r_i / mean(r))·c_j`` (written, as
    Keras keeps it) and the sum of u² with ``u = g / sqrt(v)``. Columns:
    param, grad, row, col, velocity. Parallel over row blocks."""
    pre, hyper = as_dtype_of(pre, like), as_dtype_of(hyper, like)
    rho, beta, one_minus_beta, eps1, eps1_sq = hyper
    m = mats.shape[0]
    means = np.empty(m)    # each matrix's, before its row blocks read it (O(rows): serial)
    for k in range(m):
        means[k] = _row_mean_of(k, addrs, mats, like, eps1, False)
    blocks, first, offs = _blocks(mats)
    nb = first[m]
    wpart = np.zeros(nb)
    for q in numba.prange(nb):
        k, r0, nr = blocks[q, 0], blocks[q, 1], blocks[q, 2]
        c = mats[k, 3]
        param = _block_rows(addrs, mats, k, 0, like, r0, nr)
        grad = _block_rows(addrs, mats, k, 1, like, r0, nr)
        row = _block_factor(addrs, mats, k, like, r0, nr)
        col = _mat(addrs, mats, k, 3, like, 2)
        vel = _block_rows(addrs, mats, k, 4, like, r0, nr)
        mean_r = _cast(means[k], like)
        s = 0.0
        for i in range(nr):
            ri = row[i] / mean_r
            for j in range(c):
                v = ri * col[j]
                vel[i * c + j] = v
                g = grad_in(grad[i * c + j], param[i * c + j] * pre[3], pre)
                u = g / math.sqrt(v)
                s += u * u
        wpart[q] = s
    return _block_sums(wpart, first, mats, addrs.shape[0])


@numba.njit(inline="always")
def _vector_chunk(c, addrs, chunks, pre, hyper, partial, keras):
    rho, beta, one_minus_beta, eps1, eps1_sq = hyper
    t, start, n = chunks[c, 0], chunks[c, 1], chunks[c, 2]
    like = pre[0]
    param = view(addrs[t, 0], start, n, like)
    grad = view(addrs[t, 1], start, n, like)
    vel = view(addrs[t, 2], start, n, like)
    w = 0.0
    s = 0.0
    for i in range(n):
        p = param[i] * pre[3]
        g = grad_in(grad[i], p, pre)
        if keras:
            v = beta * vel[i] + one_minus_beta * (g * g + eps1)
            u = g / math.sqrt(v)
        else:
            v = _lerp(vel[i], g * g, one_minus_beta, beta)
            x = v
            if x < eps1_sq:
                x = eps1_sq
            u = (_cast(1, like) / math.sqrt(x)) * g
        vel[i] = v
        if not keras:   # torch's alpha reads the param before its decay
            p = param[i]
        w += p * p
        s += u * u
    partial[c, 0] = w
    partial[c, 1] = s


@jit()
def adafactor_vector_keras(addrs, chunks, env, like, pre, hyper):
    """Keras, pass 1 of a vector: ``v ← β·v + (1 − β)·(g² + ε₁)``; sums p²
    and u² (``u = g / sqrt(v)``). Columns: param, grad, velocity."""
    pre, hyper = as_dtype_of(pre, like), as_dtype_of(hyper, like)
    partial = np.empty((chunks.shape[0], 2))
    for c in numba.prange(chunks.shape[0]):
        _vector_chunk(c, addrs, chunks, pre, hyper, partial, True)
    return _per_tensor(partial, chunks, addrs.shape[0])


@jit()
def adafactor_vector_torch(addrs, chunks, env, like, pre, hyper):
    """torch, pass 1 of a vector: ``v ← lerp(v, g², w)``; sums p² and u²
    (``u = rsqrt(max(v, ε₁²))·g``). Columns: param, grad, variance."""
    pre, hyper = as_dtype_of(pre, like), as_dtype_of(hyper, like)
    partial = np.empty((chunks.shape[0], 2))
    for c in numba.prange(chunks.shape[0]):
        _vector_chunk(c, addrs, chunks, pre, hyper, partial, False)
    return _per_tensor(partial, chunks, addrs.shape[0])


@jit()
def adafactor_apply_vector_torch(addrs, chunks, env, like, pre, hyper):
    """torch, last pass of a vector: ``p ← decay·p + k·u`` (``env[t, 0]``).
    Columns: param, grad, variance."""
    pre, hyper = as_dtype_of(pre, like), as_dtype_of(hyper, like)
    rho, beta, one_minus_beta, eps1, eps1_sq = hyper
    for c in numba.prange(chunks.shape[0]):
        t, start, n = chunks[c, 0], chunks[c, 1], chunks[c, 2]
        param = view(addrs[t, 0], start, n, like)
        grad = view(addrs[t, 1], start, n, like)
        vel = view(addrs[t, 2], start, n, like)
        scale = _cast(env[t, 0], like)
        for i in range(n):
            p = param[i] * pre[3]
            g = grad_in(grad[i], p, pre)
            x = vel[i]
            if x < eps1_sq:
                x = eps1_sq
            param[i] = p + scale * ((_cast(1, like) / math.sqrt(x)) * g)
    return np.zeros((addrs.shape[0], 0))


@jit()
def adafactor_apply_keras(addrs, chunks, env, like, pre, hyper):
    """Keras, last pass (every tensor): ``p ← decay·p − α·((g / sqrt(v)) / denom)``
    with the tensor's α and denom (``env[t, 0:2]``). Columns: param, grad,
    velocity."""
    pre, hyper = as_dtype_of(pre, like), as_dtype_of(hyper, like)
    for c in numba.prange(chunks.shape[0]):
        t, start, n = chunks[c, 0], chunks[c, 1], chunks[c, 2]
        param = view(addrs[t, 0], start, n, like)
        grad = view(addrs[t, 1], start, n, like)
        vel = view(addrs[t, 2], start, n, like)
        alpha = _cast(env[t, 0], like)
        denom = _cast(env[t, 1], like)
        for i in range(n):
            p = param[i] * pre[3]
            g = grad_in(grad[i], p, pre)
            param[i] = p - alpha * ((g / math.sqrt(vel[i])) / denom)
    return np.zeros((addrs.shape[0], 0))


ELEMENTWISE.update(adafactor_vector_keras=adafactor_vector_keras,
                   adafactor_vector_torch=adafactor_vector_torch,
                   adafactor_apply_vector_torch=adafactor_apply_vector_torch,
                   adafactor_apply_keras=adafactor_apply_keras)
FACTORED.update(adafactor_factor_keras=adafactor_factor_keras,
                adafactor_factor_torch=adafactor_factor_torch,
                adafactor_rms_torch=adafactor_rms_torch,
                adafactor_apply_torch=adafactor_apply_torch,
                adafactor_velocity_keras=adafactor_velocity_keras)


# -- Muon (torch.optim.Muon): the elementwise parts around Newton-Schulz -------
# hyper: (w, w − 1, momentum, momentum − 1, nesterov, ½) with w = 1 − momentum
# (the buffer's lerp weight). torch's CPU lerp and add(alpha=) fuse their
# multiply-adds, and Newton-Schulz in bfloat16 turns a one-ulp difference in
# its input into a bfloat16 rounding of its own: these passes fuse them too.

@numba.njit(inline="always")
def _muon_chunk(c, addrs, chunks, pre, hyper):
    w, w_minus_one, mu, mu_minus_one, nesterov, half = hyper
    t, start, n = chunks[c, 0], chunks[c, 1], chunks[c, 2]
    like = pre[0]
    param = view(addrs[t, 0], start, n, like)
    grad = view(addrs[t, 1], start, n, like)
    buf = view(addrs[t, 2], start, n, like)
    out = view(addrs[t, 3], start, n, like)
    for i in range(n):
        g = grad_in(grad[i], param[i] * pre[3], pre)
        b = lerp_fma(buf[i], g, w, w_minus_one, half)
        buf[i] = b
        if nesterov:
            out[i] = lerp_fma(g, b, mu, mu_minus_one, half)
        else:
            out[i] = b


@jit()
def muon_momentum(addrs, chunks, env, like, pre, hyper):
    """Pass 1: ``B ← lerp(B, g, 1 − μ)`` and the matrix to orthogonalize,
    ``lerp(g, B, μ)`` (Nesterov) or B, into the scratch array. Columns:
    param, grad, momentum_buffer, scratch."""
    pre, hyper = as_dtype_of(pre, like), as_dtype_of(hyper, like)
    if _total(chunks) < SERIAL_BELOW:
        for c in range(chunks.shape[0]):
            _muon_chunk(c, addrs, chunks, pre, hyper)
    else:
        for c in numba.prange(chunks.shape[0]):
            _muon_chunk(c, addrs, chunks, pre, hyper)
    return np.zeros((addrs.shape[0], 0))


@numba.njit(inline="always")
def _scaled_add_chunk(c, addrs, chunks, env, pre):
    t, start, n = chunks[c, 0], chunks[c, 1], chunks[c, 2]
    like = pre[0]
    param = view(addrs[t, 0], start, n, like)
    upd = view(addrs[t, 1], start, n, like)
    k = _cast(env[t, 0], like)
    for i in range(n):
        param[i] = fma(k, upd[i], param[i] * pre[3])


@jit()
def scaled_add(addrs, chunks, env, like, pre, hyper):
    """The apply of a computed update: ``p ← fma(k, u, decay·p)`` with the
    tensor's k (``env[t, 0]``), torch's ``mul_(decay)`` then
    ``add_(u, alpha=k)``. Columns: param, update."""
    pre = as_dtype_of(pre, like)
    if _total(chunks) < SERIAL_BELOW:
        for c in range(chunks.shape[0]):
            _scaled_add_chunk(c, addrs, chunks, env, pre)
    else:
        for c in numba.prange(chunks.shape[0]):
            _scaled_add_chunk(c, addrs, chunks, env, pre)
    return np.zeros((addrs.shape[0], 0))


ELEMENTWISE.update(muon_momentum=muon_momentum, scaled_add=scaled_add)


# -- Muon (Keras's `Muon`): its Muon step and its AdamW step --------------------
# hyper: (mu, mu − 1, nesterov, lr, rms_rate, β₁, 1 − β₁, β₂, 1 − β₂, α, ε,
# adam_decay) (`fastopt.specs.muon`); Keras's ops, no fused multiply-adds.

@numba.njit(inline="always")
def _muon_keras_chunk(c, addrs, chunks, pre, hyper):
    mu, mu_minus_one = hyper[0], hyper[1]
    nesterov = hyper[2]
    t, start, n = chunks[c, 0], chunks[c, 1], chunks[c, 2]
    like = pre[0]
    param = view(addrs[t, 0], start, n, like)
    grad = view(addrs[t, 1], start, n, like)
    buf = view(addrs[t, 2], start, n, like)
    out = view(addrs[t, 3], start, n, like)
    for i in range(n):
        g = grad_in(grad[i], param[i] * pre[3], pre)
        m = buf[i]
        m = m + (g + m * mu_minus_one)
        buf[i] = m
        if nesterov:
            out[i] = g + mu * m
        else:
            out[i] = m


@jit()
def muon_momentum_keras(addrs, chunks, env, like, pre, hyper):
    """Keras, pass 1 of a Muon param: ``m ← m + (g + m·(μ − 1))`` and the
    matrix to orthogonalize, ``g + μ·m`` (Nesterov) or m, into the scratch
    array. Columns: param, grad, momentum, scratch."""
    pre, hyper = as_dtype_of(pre, like), as_dtype_of(hyper, like)
    if _total(chunks) < SERIAL_BELOW:
        for c in range(chunks.shape[0]):
            _muon_keras_chunk(c, addrs, chunks, pre, hyper)
    else:
        for c in numba.prange(chunks.shape[0]):
            _muon_keras_chunk(c, addrs, chunks, pre, hyper)
    return np.zeros((addrs.shape[0], 0))


@numba.njit(inline="always")
def _muon_apply_keras_chunk(c, addrs, chunks, env, pre, hyper):
    lr, rms_rate = hyper[3], hyper[4]
    t, start, n = chunks[c, 0], chunks[c, 1], chunks[c, 2]
    like = pre[0]
    param = view(addrs[t, 0], start, n, like)
    upd = view(addrs[t, 1], start, n, like)
    k = _cast(env[t, 0], like)
    for i in range(n):
        param[i] = param[i] * pre[3] - ((lr * upd[i]) * k) * rms_rate


@jit()
def muon_apply_keras(addrs, chunks, env, like, pre, hyper):
    """Keras, last pass of a Muon param: ``p ← decay·p − ((lr·O)·s)·rms_rate``
    with the tensor's ``s = sqrt(max(rows, cols))`` (``env[t, 0]``; s and
    rms_rate 1 without rms scaling). Columns: param, the orthogonalized O."""
    pre, hyper = as_dtype_of(pre, like), as_dtype_of(hyper, like)
    if _total(chunks) < SERIAL_BELOW:
        for c in range(chunks.shape[0]):
            _muon_apply_keras_chunk(c, addrs, chunks, env, pre, hyper)
    else:
        for c in numba.prange(chunks.shape[0]):
            _muon_apply_keras_chunk(c, addrs, chunks, env, pre, hyper)
    return np.zeros((addrs.shape[0], 0))


@numba.njit(inline="always")
def _muon_adamw_chunk(c, addrs, chunks, pre, hyper):
    one_minus_beta1, one_minus_beta2 = hyper[6], hyper[8]
    alpha, eps, decay = hyper[9], hyper[10], hyper[11]
    t, start, n = chunks[c, 0], chunks[c, 1], chunks[c, 2]
    like = pre[0]
    param = view(addrs[t, 0], start, n, like)
    grad = view(addrs[t, 1], start, n, like)
    mom = view(addrs[t, 2], start, n, like)
    vel = view(addrs[t, 3], start, n, like)
    for i in range(n):
        p = param[i] * decay
        g = grad_in(grad[i], p, pre)
        m = mom[i]
        m = m + (g - m) * one_minus_beta1
        v = vel[i]
        v = v + (g * g - v) * one_minus_beta2
        mom[i] = m
        vel[i] = v
        param[i] = p - (m * alpha) / (math.sqrt(v) + eps)


@jit()
def muon_adamw_keras(addrs, chunks, env, like, pre, hyper):
    """Keras, the AdamW step of the params Muon excludes:
    ``p ← (1 − lr·adam_wd)·p``, ``m ← m + (g − m)·(1 − β₁)``,
    ``v ← v + (g² − v)·(1 − β₂)``, ``p ← p − (m·α) / (sqrt(v) + ε)`` with
    ``α = lr·adam_lr_ratio·sqrt(1 − β₂ᵗ)/(1 − β₁ᵗ)``. Columns: param, grad,
    momentum, velocity."""
    pre, hyper = as_dtype_of(pre, like), as_dtype_of(hyper, like)
    if _total(chunks) < SERIAL_BELOW:
        for c in range(chunks.shape[0]):
            _muon_adamw_chunk(c, addrs, chunks, pre, hyper)
    else:
        for c in numba.prange(chunks.shape[0]):
            _muon_adamw_chunk(c, addrs, chunks, pre, hyper)
    return np.zeros((addrs.shape[0], 0))


ELEMENTWISE.update(muon_momentum_keras=muon_momentum_keras,
                   muon_apply_keras=muon_apply_keras, muon_adamw_keras=muon_adamw_keras)

