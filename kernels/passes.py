"""The passes of a program step (`fastopt.spec.Program`) on the CPU: kernels
over a list of same-dtype tensors, one parallel region per pass, that may
also reduce per tensor, per row and per column.

An optimizer whose step is not one elementwise pass (Lamb's trust ratio,
Adafactor's factored second moment, Muon's orthogonalized momentum) is a
short program of such passes, run by `fastopt._program`. A pass is a
formula per element (`kernels.pass_rules`, shared with the CUDA kernels of
`kernels.passes_cuda`) in one of three skeletons, each written once here:

* **elementwise** ``kern(addrs, chunks, env, like, pre, hyper) -> sums``:
  ``addrs[t]`` the addresses of tensor t's arrays (the pass's columns, in
  its order), ``chunks[c] = (t, start, n)`` (`CHUNK` elements each), ``env``
  a float64 (T, E) table of per-tensor scalars earlier passes produced,
  ``pre`` the shared gradient transforms (`kernels.variants.PRE`'s first
  four: scale, bound, wd, decay; clip and l2 as the 0/1 fifth and sixth) and
  ``hyper`` the step's scalars. It returns a float64 (T, R) table of
  per-tensor sums (R may be 0). One ``prange`` over the chunks (a loop
  on the calling thread below `SERIAL_BELOW` elements: `kernel`); each
  chunk's partial sums go to a row of their own and are added up per tensor after the
  parallel region, in chunk order, so the result does not depend on the
  thread count.
* **tiled** ``kern(addrs, mats, env, like, pre, hyper) -> sums``: the
  tensors seen as stacks of matrices (..., R, C) (a vector: one 1 x n
  matrix), ``mats[k] = (t, b, R, C)``: matrix b of tensor t, in row blocks
  of about `CHUNK` elements (`_blocks`); a formula per element that also
  reads its row's and column's factors.
* **factor** (same arguments): Adafactor's reduction over the rows and the
  columns of each matrix into its row and column factors.

Sums accumulate in float64 (no fastmath, so LLVM keeps each chain in
order).

Each skeleton is a factory over its pass's name, bound the way
`kernels.cpu` binds its element steps: the compiled function closes over a
key string (which Numba's on-disk cache hashes), and an overload turns
that literal into the formula at compile time. Each pass has a serial and
a parallel kernel, compiled apart (`parallel` is in their closures, so the
cache keeps them apart too); the host picks one by the pass's size. The key carries
`kernels.pass_rules.FINGERPRINT`, as Numba's cache checks the caller's
source file alone.
"""
import numba
import numpy as np
from numba.core import types
from numba.core.extending import overload

from . import pass_rules as _rules
from .cpu import SERIAL_BELOW, as_dtype_of, jit, parallel_for, view
from .pass_rules import cast

CHUNK = 1 << 16   # elements per chunk of an elementwise pass (`fastopt._multi.CHUNK`)


def _key(name):
    return f"{name}@{_rules.FINGERPRINT}"


def _formula(key):
    return getattr(_rules, key.literal_value.partition("@")[0])


# -- binding a formula to a skeleton (see the module's docstring) -------------
def _element(key, i, v0, v1, v2, v3, pre, hyper, k0, k1, a, b):
    """Stand-in resolved by the overload below; never called from Python."""
    raise NotImplementedError


@overload(_element, prefer_literal=True, target="cpu")
def _element_impl(key, i, v0, v1, v2, v3, pre, hyper, k0, k1, a, b):
    if not isinstance(key, types.StringLiteral):
        return None
    elem = _formula(key)

    def impl(key, i, v0, v1, v2, v3, pre, hyper, k0, k1, a, b):
        return elem(i, v0, v1, v2, v3, pre, hyper, k0, k1, a, b)

    return impl


def _tile_element(key, e, i, j, param, grad, row, col, vel, mean_r, pre, hyper, k0, s):
    """Stand-in resolved by the overload below; never called from Python."""
    raise NotImplementedError


@overload(_tile_element, prefer_literal=True, target="cpu")
def _tile_element_impl(key, e, i, j, param, grad, row, col, vel, mean_r, pre, hyper, k0, s):
    if not isinstance(key, types.StringLiteral):
        return None
    elem = _formula(key)

    def impl(key, e, i, j, param, grad, row, col, vel, mean_r, pre, hyper, k0, s):
        return elem(e, i, j, param, grad, row, col, vel, mean_r, pre, hyper, k0, s)

    return impl


# -- shared pieces ----------------------------------------------------------------
@numba.njit(inline="always")
def _env_scalars(env, t, like):
    """Tensor t's first and last env column (the scalars a pass reads)."""
    last = env.shape[1] - 1
    if last < 0:
        return like, like
    return cast(env[t, 0], like), cast(env[t, last], like)


@numba.njit(inline="always")
def _per_tensor(partial, chunks, ntensors, nsums):
    """The chunks' partial sums added up per tensor, in chunk order."""
    out = np.zeros((ntensors, nsums))
    for c in range(chunks.shape[0]):
        t = chunks[c, 0]
        for k in range(nsums):
            out[t, k] += partial[c, k]
    return out


@numba.njit(inline="always")
def _lane_sum(x, n):
    """``Σ x[:n]`` in float64, as 8 interleaved partial sums (x[j] into sum
    j mod 8) added up pairwise at the end, then the tail: eight independent
    chains, each kept in order (no reassociation), so they overlap where one
    chain would wait on every addition; the order depends on n alone."""
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    m = n - n % 8
    for j in range(0, m, 8):
        s0 += x[j]
        s1 += x[j + 1]
        s2 += x[j + 2]
        s3 += x[j + 3]
        s4 += x[j + 4]
        s5 += x[j + 5]
        s6 += x[j + 6]
        s7 += x[j + 7]
    s = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
    for j in range(m, n):
        s += x[j]
    return s


# -- elementwise ------------------------------------------------------------------
@numba.njit(inline="always")
def _chunk(key, c, addrs, chunks, env, pre, hyper, partial):
    """Chunk c of the pass `key`: its formula per element, its sums into
    ``partial[c]``. A pass of fewer than 4 columns sees its last repeated."""
    t, start, n = chunks[c, 0], chunks[c, 1], chunks[c, 2]
    like = pre[0]
    last = addrs.shape[1] - 1
    v0 = view(addrs[t, 0], start, n, like)
    v1 = view(addrs[t, min(1, last)], start, n, like)
    v2 = view(addrs[t, min(2, last)], start, n, like)
    v3 = view(addrs[t, min(3, last)], start, n, like)
    k0, k1 = _env_scalars(env, t, like)
    a = 0.0
    b = 0.0
    for i in range(n):
        a, b = _element(key, i, v0, v1, v2, v3, pre, hyper, k0, k1, a, b)
    partial[c, 0] = a
    partial[c, 1] = b


def _elementwise(name, parallel):
    """The elementwise kernel of pass `name` (`kernels.pass_rules.ELEMENTWISE`)."""
    key, nsums = _key(name), _rules.ELEMENTWISE[name][1]

    @jit(parallel=parallel, key=f"{key}-{parallel}")
    def kern(addrs, chunks, env, like, pre, hyper):
        pre, hyper = as_dtype_of(pre, like), as_dtype_of(hyper, like)
        partial = np.empty((chunks.shape[0], 2))
        if not parallel:     # the host's choice, by the pass's size (`kernel`)
            for c in range(chunks.shape[0]):
                _chunk(key, c, addrs, chunks, env, pre, hyper, partial)
        else:
            for c in numba.prange(chunks.shape[0]):
                _chunk(key, c, addrs, chunks, env, pre, hyper, partial)
        return _per_tensor(partial, chunks, addrs.shape[0], nsums)

    return kern


# -- matrices -----------------------------------------------------------------------
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
def _block_sums(wpart, first, mats, ntensors, nsums):
    """Per-block sums added up per matrix (in block order), then per tensor."""
    out = np.zeros((ntensors, nsums))
    if nsums:
        for k in range(mats.shape[0]):
            w = 0.0
            for q in range(first[k], first[k + 1]):
                w += wpart[q]
            out[mats[k, 0], 0] += w
    return out


@numba.njit(inline="always")
def _row_mean_of(k, addrs, mats, like, eps1, torch_form):
    """Matrix k's mean of its row factor (torch: at least ε₁)."""
    r = mats[k, 2]
    row = _mat(addrs, mats, k, 2, like, 1)
    s = 0.0
    for i in range(r):
        s += row[i]
    m = cast(s, like) / cast(r, like)
    if torch_form and m < eps1:
        m = eps1
    return m


# -- tiled --------------------------------------------------------------------------
@numba.njit(inline="always")
def _tile(key, q, blocks, addrs, mats, env, means, pre, hyper, vcol, nsums):
    """Row block q of the pass `key`: its formula per element; its sum."""
    like = pre[0]
    k, r0, nr = blocks[q, 0], blocks[q, 1], blocks[q, 2]
    c = mats[k, 3]
    param = _block_rows(addrs, mats, k, 0, like, r0, nr)
    grad = _block_rows(addrs, mats, k, 1, like, r0, nr)
    vel = _block_rows(addrs, mats, k, max(vcol, 0), like, r0, nr)
    row = _block_factor(addrs, mats, k, like, r0, nr)
    col = _mat(addrs, mats, k, 3, like, 2)
    mean_r = cast(means[k], like)
    k0, k1 = _env_scalars(env, mats[k, 0], like)
    if not nsums:
        for i in range(nr):
            for j in range(c):
                _tile_element(key, i * c + j, i, j, param, grad, row, col, vel, mean_r, pre,
                              hyper, k0, 0.0)
        return 0.0
    # the sum per column, row by row (elementwise across the columns, so the
    # loop vectorizes), then over the columns
    acc = np.zeros(c)
    for i in range(nr):
        for j in range(c):
            acc[j] = _tile_element(key, i * c + j, i, j, param, grad, row, col, vel, mean_r,
                                   pre, hyper, k0, acc[j])
    return _lane_sum(acc, c)


def _tiled(name, parallel):
    """The tiled kernel of pass `name` (`kernels.pass_rules.TILED`),
    parallel over the row blocks of every matrix."""
    key = _key(name)
    vcol, nsums, torch_mean = _rules.TILED[name]

    @jit(parallel=parallel, key=f"{key}-{parallel}")
    def kern(addrs, mats, env, like, pre, hyper):
        pre, hyper = as_dtype_of(pre, like), as_dtype_of(hyper, like)
        m = mats.shape[0]
        means = np.empty(m)    # each matrix's, before its row blocks read it (O(rows): serial)
        for k in range(m):
            means[k] = _row_mean_of(k, addrs, mats, pre[0], hyper[3], torch_mean)
        blocks, first, offs = _blocks(mats)
        nb = first[m]
        part = np.empty(nb)
        if not parallel:     # the host's choice, by the pass's size (`kernel`)
            for q in range(nb):
                part[q] = _tile(key, q, blocks, addrs, mats, env, means, pre, hyper, vcol,
                                nsums)
        else:
            for q in numba.prange(nb):
                part[q] = _tile(key, q, blocks, addrs, mats, env, means, pre, hyper, vcol,
                                nsums)
        return _block_sums(part, first, mats, addrs.shape[0], nsums)

    return kern


# -- factor (Adafactor's row and column factors) -------------------------------------
@numba.njit(inline="always")
def _factor_block(q, blocks, addrs, mats, pre, hyper, colpart, offs, wpart, keras):
    """Rows r0 .. r0 + nr of matrix k: their sums of terms
    (`pass_rules.factor_term`) into the row factor; their column sums into
    the block's partials (added up per matrix by `_factor_columns`); the
    sum of p² (p after decoupled decay, Keras; before it, torch) into
    wpart[q]. All in float64 (the oracles: float32 for float32 arrays).

    Per row, one loop elementwise across the columns (the terms, the column
    sums, p² per column), which LLVM vectorizes, then the row's sum of its
    terms (`_lane_sum`): no single chain of dependent additions runs
    through the elements, and the order of every sum depends on the shape
    alone."""
    like = pre[0]
    k, r0, nr = blocks[q, 0], blocks[q, 1], blocks[q, 2]
    c = mats[k, 3]
    param = _block_rows(addrs, mats, k, 0, like, r0, nr)
    grad = _block_rows(addrs, mats, k, 1, like, r0, nr)
    row = _block_factor(addrs, mats, k, like, r0, nr)
    cols = colpart[offs[q]:offs[q] + c]
    squares = np.zeros(c)
    terms = np.empty(c, dtype=param.dtype)    # a row's
    decay, eps1 = pre[3], hyper[3]
    for i in range(nr):
        prow, grow = param[i * c:(i + 1) * c], grad[i * c:(i + 1) * c]
        for j in range(c):
            p = prow[j] * decay
            x = _rules.factor_term(_rules.grad_in(grow[j], p, pre), eps1, keras)
            terms[j] = x
            cols[j] += x
            if not keras:   # torch's alpha reads the param before its decay
                p = prow[j]
            squares[j] += p * p
        total = _lane_sum(terms, c)
        row[i] = _rules.factor_update(row[i], cast(total, like), cast(c, like), hyper, keras)
    wpart[q] = _lane_sum(squares, c)


@numba.njit(inline="always")
def _factor_columns(k, first, addrs, mats, pre, hyper, colpart, offs, keras):
    """Matrix k's column sums (its blocks' partials, in block order) into
    its column factor."""
    like = pre[0]
    r, c = mats[k, 2], mats[k, 3]
    col = _mat(addrs, mats, k, 3, like, 2)
    for j in range(c):
        s = 0.0
        for q in range(first[k], first[k + 1]):
            s += colpart[offs[q] + j]
        col[j] = _rules.factor_update(col[j], cast(s, like), cast(r, like), hyper, keras)


def _factor(keras, parallel):
    """Adafactor's factor pass (Keras's form or torch's): ``r ← β·r + (1 −
    β)·mean_C(g² + ε₁)``, ``c ← β·c + (1 − β)·mean_R(g² + ε₁)`` (Keras), or
    ``r ← lerp(r, ‖g_i‖²/C, w)``, ``c ← lerp(c, ‖g_j‖²/R, w)`` (torch); the
    sums of p². Columns: param, grad, row, col. Parallel over row blocks of
    every matrix (`_blocks`), then over the matrices for the column
    factors."""
    @jit(parallel=parallel, key=f"{keras}-{parallel}")
    def kern(addrs, mats, env, like, pre, hyper):
        pre, hyper = as_dtype_of(pre, like), as_dtype_of(hyper, like)
        blocks, first, offs = _blocks(mats)
        nb, m = first[mats.shape[0]], mats.shape[0]
        colpart = np.zeros(offs[nb])
        wpart = np.zeros(nb)
        for q in numba.prange(nb):
            _factor_block(q, blocks, addrs, mats, pre, hyper, colpart, offs, wpart, keras)
        if not parallel or offs[nb] < SERIAL_BELOW:   # a small combine: no second region
            for k in range(m):
                _factor_columns(k, first, addrs, mats, pre, hyper, colpart, offs, keras)
        else:
            for k in numba.prange(m):
                _factor_columns(k, first, addrs, mats, pre, hyper, colpart, offs, keras)
        return _block_sums(wpart, first, mats, addrs.shape[0], 1)

    return kern


# Each pass's kernels, (serial, parallel): the host picks one by the pass's
# element count (`kernels.cpu.parallel_for`), so that a program of small
# tensors never compiles a parallel region (Numba's parallel lowering was
# about half of these kernels' compile time).
ELEMENTWISE = {name: (_elementwise(name, False), _elementwise(name, True))
               for name in _rules.ELEMENTWISE}
FACTORED = {**{name: (_factor(keras, False), _factor(keras, True))
               for name, keras in _rules.FACTOR.items()},
            **{name: (_tiled(name, False), _tiled(name, True)) for name in _rules.TILED}}


def kernel(table, name, elements):
    """Pass `name`'s kernel in `table` (`ELEMENTWISE` or `FACTORED`) for a
    call over `elements` elements."""
    return table[name][parallel_for(elements)]
