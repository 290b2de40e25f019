"""The CUDA skeletons of the program passes (`kernels.passes` holds the
CPU's): the same per-element formulas (`kernels.pass_rules`), one launch
per pass over a whole dtype group.

Every kernel is built per (pass, dtype, block size) by a factory, lazily
(importing needs no GPU), and compiles with ``numba.cuda.compile_ptx``
with no GPU (`kernel_function`). Arithmetic is in the kernel's dtype: the
host hands scalars already cast (`fastopt._facts.scalars`), the per-tensor
scalars of ``env`` as an array of the dtype, and sums accumulate in the
dtype, as torch's CUDA reductions do (float32 accumulates float32); no
float literal appears in a formula. Under Numba's simulator (which runs no
intrinsic) the same bodies run as Python with NumPy scalars of the dtype,
the formulas' plain-Python twins (`kernels.pass_rules.python`).

Two kernel shapes, the CPU's two (`kernels.passes`):

* **elementwise** ``kern(table, chunks, env, pre, hyper, partial)``:
  ``table[t]`` tensor t's array addresses (the pass's columns, in order;
  the simulator: per tensor, a tuple of its arrays), ``chunks[c] = (t,
  start, n)`` (`kernels.passes.CHUNK` elements, the many-tensor kernels'
  table, `kernels.multi_cuda`). A block per chunk (grid-stride), its
  threads striding over the chunk; a pass with sums reduces each of its
  (at most two) sums over the block in shared memory (a tree, no atomics:
  a run repeats bit for bit) into ``partial[c, q]``; the host adds a
  tensor's chunks up in float64, in chunk order (`tensor_sums`), the
  two-stage reduction.
* **factored** ``kern(table, mats, tiles, env, means, pre, hyper,
  partial, colpart)``: the tensors as stacks of matrices,
  ``mats[k] = (t, b, R, C, colbase, ntiles)`` (matrix b of tensor t;
  its column partials at ``colpart[colbase:]``) and ``tiles[q] = (k, i0,
  nr)``: `TILE_ROWS` rows of matrix k from row i0, a block per tile.

  Adafactor's factor pass is two launches reading g once: ``*_rows`` (a
  block per tile; each thread takes columns, and runs down the tile's rows
  for each: a column's partial over the tile in a register, written to
  ``colpart``; each row's in shared memory, reduced over the block, so the
  tile's row factors are finished in the block; the sum of p² per tile)
  then ``*_cols`` (a block per matrix: each column's partials over the
  tiles, in order, into its column factor; the mean of the new row factor
  into ``means[k]``, which the later passes of the step read). The
  per-element factored passes (Keras's velocity, torch's rms and apply)
  take a tile per block, its ``nr·C`` elements strided over the threads.
"""
import numba
import numpy as np
from numba import cuda

from . import cuda as _cuda
from . import pass_rules as _rules
from . import passes as _host

CHUNK = _host.CHUNK    # elements per chunk of an elementwise pass (the CPU's)
THREADS = 256          # elementwise passes
FACTOR_THREADS = 128   # factored passes
TILE_ROWS = 16         # rows of a factored pass's tile
# the simulator pays per simulated thread and per shared-memory entry
SIM_THREADS, SIM_TILE_ROWS = 4, 4

_kernels = {}


# -- the target: the device's or the simulator's --------------------------------
def _target(dtype, python):
    """(formulas, view, shared-memory type) for arrays of `dtype`: on the
    device (``python=False``: `kernels.pass_rules` inlined) or in the
    simulator (their plain-Python twins, on NumPy scalars of the dtype)."""
    single = np.dtype(dtype) == np.float32
    if python:
        def view(table, t, k, start, n, like):
            return table[t][k][start:start + n]

        return _rules.python(), view, (np.float32 if single else np.float64)

    @numba.njit(inline="always")
    def view(table, t, k, start, n, like):
        return _cuda.view(table[t, k], start, n, like)

    return _rules.jitted(), view, (numba.float32 if single else numba.float64)


# -- elementwise passes (`kernels.pass_rules.ELEMENTWISE`) ----------------------
ELEMENTWISE = tuple(_rules.ELEMENTWISE)


def _elementwise_function(name, dtype, threads, python):
    rules, view, sh_type = _target(dtype, python)
    elem, cast = getattr(rules, name), rules.cast
    ncols, nsums, nreads = _rules.ELEMENTWISE[name]
    c0, c1, c2, c3 = (min(k, ncols - 1) for k in range(4))
    half0 = threads // 2

    shape = (2, threads)

    def kern(table, chunks, env, pre, hyper, partial):
        sh = cuda.shared.array(shape, sh_type)
        tid = cuda.threadIdx.x
        like = pre[0]
        zero = cast(0, like)
        for c in range(cuda.blockIdx.x, chunks.shape[0], cuda.gridDim.x):
            t, start, n = chunks[c, 0], chunks[c, 1], chunks[c, 2]
            v0 = view(table, t, c0, start, n, like)
            v1 = view(table, t, c1, start, n, like)
            v2 = view(table, t, c2, start, n, like)
            v3 = view(table, t, c3, start, n, like)
            k0 = env[t, 0]
            k1 = env[t, nreads - 1] if nreads > 1 else k0
            a = zero
            b = zero
            for i in range(tid, n, threads):
                a, b = elem(i, v0, v1, v2, v3, pre, hyper, k0, k1, a, b)
            if nsums:
                sh[0, tid] = a
                sh[1, tid] = b
                cuda.syncthreads()
                half = half0
                while half > 0:
                    if tid < half:
                        sh[0, tid] = sh[0, tid] + sh[0, tid + half]
                        sh[1, tid] = sh[1, tid] + sh[1, tid + half]
                    cuda.syncthreads()
                    half //= 2
                if tid == 0:
                    partial[c, 0] = sh[0, 0]
                    partial[c, 1] = sh[1, 0]
                cuda.syncthreads()

    return kern


# -- factored passes (Adafactor's matrices) -----------------------------------
FACTORED = (*_rules.FACTOR, *_rules.TILED)
# a factored pass's launches, in order (a tiled pass: one, of its own name)
LAUNCHES = {"adafactor_factor_keras": ("factor_rows_keras", "factor_cols_keras"),
            "adafactor_factor_torch": ("factor_rows_torch", "factor_cols_torch"),
            **{name: (name,) for name in _rules.TILED}}


def _factor_rows_function(keras, dtype, threads, python):
    """Pass 1, a block per tile: the tile's row factors, its column partials
    (``colpart``) and its sum of p² (``partial[q, 0]``)."""
    rules, view, sh_type = _target(dtype, python)
    cast, grad_in, term, update = (rules.cast, rules.grad_in, rules.factor_term,
                                   rules.factor_update)
    rows, half0 = (SIM_TILE_ROWS if python else TILE_ROWS), threads // 2
    shape = (rows + 1, threads)

    def kern(table, mats, tiles, env, means, pre, hyper, partial, colpart):
        sh = cuda.shared.array(shape, sh_type)
        tid = cuda.threadIdx.x
        like = pre[0]
        eps1 = hyper[3]
        decay = pre[3]
        for q in range(cuda.blockIdx.x, tiles.shape[0], cuda.gridDim.x):
            k, i0, nr = tiles[q, 0], tiles[q, 1], tiles[q, 2]
            t, b, r, c = mats[k, 0], mats[k, 1], mats[k, 2], mats[k, 3]
            base = mats[k, 4] + (i0 // rows) * c
            param = view(table, t, 0, b * r * c + i0 * c, nr * c, like)
            grad = view(table, t, 1, b * r * c + i0 * c, nr * c, like)
            row = view(table, t, 2, b * r + i0, nr, like)
            for z in range(rows + 1):
                sh[z, tid] = cast(0, like)
            w = cast(0, like)
            for j in range(tid, c, threads):
                s = cast(0, like)
                for i in range(nr):
                    e = i * c + j
                    p = param[e] * decay
                    x = term(grad_in(grad[e], p, pre), eps1, keras)
                    s += x
                    sh[i, tid] = sh[i, tid] + x
                    if not keras:   # torch's alpha reads the param before its decay
                        p = param[e]
                    w += p * p
                colpart[base + j] = s
            sh[rows, tid] = w
            cuda.syncthreads()
            half = half0
            while half > 0:
                if tid < half:
                    for z in range(rows + 1):
                        sh[z, tid] = sh[z, tid] + sh[z, tid + half]
                cuda.syncthreads()
                half //= 2
            if tid < nr:
                row[tid] = update(row[tid], sh[tid, 0], cast(c, like), hyper, keras)
            if tid == 0:
                partial[q, 0] = sh[rows, 0]
            cuda.syncthreads()

    return kern


def _factor_cols_function(keras, dtype, threads, python):
    """Pass 1's finish, a block per matrix: its column factors from the
    tiles' partials (in tile order), and the mean of its new row factor."""
    rules, view, sh_type = _target(dtype, python)
    cast, update = rules.cast, rules.factor_update
    half0 = threads // 2

    def kern(table, mats, tiles, env, means, pre, hyper, partial, colpart):
        sh = cuda.shared.array(threads, sh_type)
        tid = cuda.threadIdx.x
        like = pre[0]
        for k in range(cuda.blockIdx.x, mats.shape[0], cuda.gridDim.x):
            t, b, r, c, base, ntiles = (mats[k, 0], mats[k, 1], mats[k, 2], mats[k, 3],
                                        mats[k, 4], mats[k, 5])
            col = view(table, t, 3, b * c, c, like)
            row = view(table, t, 2, b * r, r, like)
            for j in range(tid, c, threads):
                s = cast(0, like)
                for q in range(ntiles):
                    s += colpart[base + q * c + j]
                col[j] = update(col[j], s, cast(r, like), hyper, keras)
            m = cast(0, like)
            for i in range(tid, r, threads):
                m += row[i]
            sh[tid] = m
            cuda.syncthreads()
            half = half0
            while half > 0:
                if tid < half:
                    sh[tid] = sh[tid] + sh[tid + half]
                cuda.syncthreads()
                half //= 2
            if tid == 0:
                means[k] = sh[0] / cast(r, like)
            cuda.syncthreads()

    return kern


def _tile_function(name, dtype, threads, python):
    """A tiled pass (`kernels.pass_rules.TILED`), a block per tile: its
    ``nr·C`` elements strided over the threads, its sum reduced over the
    block into ``partial[q, 0]``."""
    rules, view, sh_type = _target(dtype, python)
    elem, cast = getattr(rules, name), rules.cast
    vcol, nsums, torch_mean = _rules.TILED[name]
    vc = vcol if vcol >= 0 else 0
    half0 = threads // 2

    def kern(table, mats, tiles, env, means, pre, hyper, partial, colpart):
        sh = cuda.shared.array(threads, sh_type)
        tid = cuda.threadIdx.x
        like = pre[0]
        eps1 = hyper[3]
        for q in range(cuda.blockIdx.x, tiles.shape[0], cuda.gridDim.x):
            k, i0, nr = tiles[q, 0], tiles[q, 1], tiles[q, 2]
            t, b, r, c = mats[k, 0], mats[k, 1], mats[k, 2], mats[k, 3]
            first = b * r * c + i0 * c
            param = view(table, t, 0, first, nr * c, like)
            grad = view(table, t, 1, first, nr * c, like)
            vel = view(table, t, vc, first, nr * c, like)
            row = view(table, t, 2, b * r + i0, nr, like)
            col = view(table, t, 3, b * c, c, like)
            mean_r = means[k]
            if torch_mean and mean_r < eps1:
                mean_r = eps1
            k0 = env[t, 0]
            s = cast(0, like)
            for e in range(tid, nr * c, threads):
                s = elem(e, e // c, e % c, param, grad, row, col, vel, mean_r, pre, hyper,
                         k0, s)
            if nsums:
                sh[tid] = s
                cuda.syncthreads()
                half = half0
                while half > 0:
                    if tid < half:
                        sh[tid] = sh[tid] + sh[tid + half]
                    cuda.syncthreads()
                    half //= 2
                if tid == 0:
                    partial[q, 0] = sh[0]
                cuda.syncthreads()

    return kern


def kernel_function(name, dtype, threads=None, python=False):
    """The Python function of launch `name` (an `ELEMENTWISE` pass or a
    launch of `LAUNCHES`) for arrays of `dtype`, before `cuda.jit` (for
    ``compile_ptx``); `threads` its block size (a power of two)."""
    if name in ELEMENTWISE:
        return _elementwise_function(name, dtype, threads or THREADS, python)
    threads = threads or FACTOR_THREADS
    if name.startswith("factor_rows_"):
        return _factor_rows_function(name.endswith("keras"), dtype, threads, python)
    if name.startswith("factor_cols_"):
        return _factor_cols_function(name.endswith("keras"), dtype, threads, python)
    return _tile_function(name, dtype, threads, python)


def threads_of(name):
    """The block size launch `name` runs with (the simulator: its own)."""
    if _cuda._simulated():
        return SIM_THREADS
    return THREADS if name in ELEMENTWISE else FACTOR_THREADS


def kernel(name, dtype):
    """The CUDA kernel of launch `name` for `dtype`, built on first use."""
    simulated = _cuda._simulated()
    key = (name, np.dtype(dtype), simulated)
    kern = _kernels.get(key)
    if kern is None:
        kern = _kernels[key] = cuda.jit(kernel_function(name, dtype, threads_of(name),
                                                        simulated))
    return kern


def launch_config(items, name, device=None):
    """(blocks, threads): a block per chunk, tile or matrix, up to what fills the GPU."""
    threads = threads_of(name)
    if _cuda._simulated():
        return min(_cuda.SIM_BLOCKS, max(items, 1)), threads
    blocks, _ = _cuda.launch_config(items * _cuda.THREADS, device)
    return blocks, threads


# -- the host's side of the tables ---------------------------------------------
def tiles_of(shapes):
    """``(mats, tiles, colpart size)`` of tensors of `shapes` (each a stack
    of matrices; a vector is not factored and has none)."""
    mats, tiles, base = [], [], 0
    rows = SIM_TILE_ROWS if _cuda._simulated() else TILE_ROWS
    for t, shape in enumerate(shapes):
        if len(shape) < 2:
            continue
        r, c = int(shape[-2]), int(shape[-1])
        count = int(np.prod(shape[:-2], dtype=np.int64))
        if r * c == 0:
            continue
        ntiles = -(-r // rows)
        for b in range(count):
            k = len(mats)
            mats.append((t, b, r, c, base, ntiles))
            tiles.extend((k, i0, min(rows, r - i0)) for i0 in range(0, r, rows))
            base += ntiles * c
    return (np.array(mats, np.int64).reshape(len(mats), 6),
            np.array(tiles, np.int64).reshape(len(tiles), 3), base)


def tensor_sums(partial, owner, ntensors):
    """Each tensor's sums (float64, (T, R)) from the blocks' partials (one
    row per chunk or tile, `owner` its tensor), added in block order."""
    partial = np.asarray(partial, np.float64)
    out = np.zeros((ntensors, partial.shape[1]))
    for q in range(partial.shape[1]):
        out[:, q] = np.bincount(owner, weights=partial[:, q], minlength=ntensors)
    return out
