"""The CUDA twins of the program passes (`kernels.passes`): the same
per-element formulas, one launch per pass over a whole dtype group.

Every kernel is built per (pass, dtype, block size) by a factory, lazily
(importing needs no GPU), and compiles with ``numba.cuda.compile_ptx``
with no GPU (`kernel_function`). Arithmetic is in the kernel's dtype: the
host hands scalars already cast (`fastopt._facts.scalars`), the per-tensor
scalars of ``env`` as an array of the dtype, and sums accumulate in the
dtype, as torch's CUDA reductions do (float32 accumulates float32); no
float literal appears in a formula. Under Numba's simulator (which runs no
intrinsic) the same bodies run as Python with NumPy scalars of the dtype,
helpers (`_helpers`) that keep them so (``math.sqrt`` of a NumPy float32
is a Python float), and an exactly rounded fused multiply-add.

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
import math
from fractions import Fraction

import numba
import numpy as np
from numba import cuda

from . import cuda as _cuda
from . import passes as _host

CHUNK = _host.CHUNK    # elements per chunk of an elementwise pass (the CPU's)
THREADS = 256          # elementwise passes
FACTOR_THREADS = 128   # factored passes
TILE_ROWS = 16         # rows of a factored pass's tile
# the simulator pays per simulated thread and per shared-memory entry
SIM_THREADS, SIM_TILE_ROWS = 4, 4

_kernels = {}


# -- helpers: the device's and the simulator's --------------------------------
def _fma_py(a, b, c):
    """``a·b + c`` rounded once, to float32 if any of them is a NumPy
    float32 (else float64: the host passes float64 scalars as Python
    floats): the simulator's twin of the GPU's ``fma.rn``."""
    single = any(type(x) is np.float32 for x in (a, b, c))
    kind = np.float32 if single else np.float64
    if not (math.isfinite(a) and math.isfinite(b) and math.isfinite(c)):
        return kind(a) * kind(b) + kind(c)
    exact = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
    if not single:
        return np.float64(float(exact))     # int / int: correctly rounded
    x = np.float32(float(exact))            # within one float32 ulp of the exact value
    up, down = np.float32(np.inf), np.float32(-np.inf)
    best = None
    for y in (x, np.nextafter(x, up), np.nextafter(x, down)):
        if not math.isfinite(y):
            continue
        key = (abs(Fraction(float(y)) - exact), int(np.array(y).view(np.int32)) & 1)
        if best is None or key < best[0]:
            best = (key, y)
    return best[1] if best is not None else x


class _Helpers:
    """The scalar helpers of one dtype, on the device (``python=False``:
    inlined Numba functions) or in the simulator (Python on NumPy scalars)."""

    def __init__(self, dtype, python):
        dtype = np.dtype(dtype)
        if python:
            self.cast = dtype.type
            self.sqrt = lambda x: type(x)(math.sqrt(x))
            self.fma = _fma_py
            self.grad_in = _host.grad_in.py_func
            self.lerp = _host._lerp.py_func
            self.view = lambda table, t, k, start, n, like: table[t][k][start:start + n]
            self.shared = np.float32 if dtype == np.float32 else np.float64
        else:
            self.cast = numba.float32 if dtype == np.float32 else numba.float64
            self.sqrt = numba.njit(inline="always")(lambda x: math.sqrt(x))
            self.fma = numba.njit(inline="always")(lambda a, b, c: cuda.fma(a, b, c))
            self.grad_in = _host.grad_in
            self.lerp = _host._lerp

            @numba.njit(inline="always")
            def view(table, t, k, start, n, like):
                return _cuda.view(table[t, k], start, n, like)

            self.view = view
            self.shared = self.cast
        self.python = python

    def jit(self, fn):
        return fn if self.python else numba.njit(inline="always")(fn)


# -- elementwise passes: the per-element functions ----------------------------
# ``elem(i, v0, v1, v2, v3, pre, hyper, k0, k1, a, b) -> (a, b)``: element i
# of the chunk's column views v0..v3 (a pass of fewer columns repeats its
# last), the tensor's env scalars k0, k1 and the running sums a, b.

def _elements(h):
    cast, sqrt, fma, grad_in, lerp = h.cast, h.sqrt, h.fma, h.grad_in, h.lerp

    @h.jit
    def lamb_update(m, v, hyper):
        lr, beta1, omb1, beta2, omb2, c1, c2, eps = hyper
        return (m / c1) / (sqrt(v / c2) + eps)

    @h.jit
    def lamb_moments(i, param, grad, mom, vel, pre, hyper, k0, k1, a, b):
        lr, beta1, omb1, beta2, omb2, c1, c2, eps = hyper
        p = param[i] * pre[3]
        g = grad_in(grad[i], p, pre)
        m = mom[i]
        m = m + (g - m) * omb1
        v = vel[i]
        v = v + (g * g - v) * omb2
        mom[i] = m
        vel[i] = v
        u = lamb_update(m, v, hyper)
        return a + p * p, b + u * u

    @h.jit
    def lamb_apply(i, param, mom, vel, unused, pre, hyper, k0, k1, a, b):
        param[i] = param[i] * pre[3] - k0 * lamb_update(mom[i], vel[i], hyper)
        return a, b

    # Apex FusedLAMB's form (convention "torch"): hyper (lr, β₁, β₃, β₂,
    # 1 − β₂, c₁, c₂, ε, decoupled wd); no decay factor (wd·p is in u)
    @h.jit
    def lamb_update_torch(m, v, p, hyper):
        lr, beta1, beta3, beta2, omb2, c1, c2, eps, wd = hyper
        return (m / c1) / (sqrt(v / c2) + eps) + wd * p

    @h.jit
    def lamb_moments_torch(i, param, grad, mom, vel, pre, hyper, k0, k1, a, b):
        lr, beta1, beta3, beta2, omb2, c1, c2, eps, wd = hyper
        p = param[i]
        g = grad_in(grad[i], p, pre)
        m = mom[i] * beta1 + beta3 * g
        v = vel[i] * beta2 + omb2 * g * g
        mom[i] = m
        vel[i] = v
        u = lamb_update_torch(m, v, p, hyper)
        return a + p * p, b + u * u

    @h.jit
    def lamb_apply_torch(i, param, mom, vel, unused, pre, hyper, k0, k1, a, b):
        p = param[i]
        param[i] = p - k0 * lamb_update_torch(mom[i], vel[i], p, hyper)
        return a, b

    @h.jit
    def vector(i, param, grad, vel, pre, hyper, a, b, keras):
        rho, beta, omb, eps1, eps1_sq = hyper
        p = param[i] * pre[3]
        g = grad_in(grad[i], p, pre)
        if keras:
            v = beta * vel[i] + omb * (g * g + eps1)
            u = g / sqrt(v)
        else:
            v = lerp(vel[i], g * g, omb, beta)
            x = v
            if x < eps1_sq:
                x = eps1_sq
            u = (cast(1) / sqrt(x)) * g
        vel[i] = v
        if not keras:   # torch's alpha reads the param before its decay
            p = param[i]
        return a + p * p, b + u * u

    @h.jit
    def vector_keras(i, param, grad, vel, unused, pre, hyper, k0, k1, a, b):
        return vector(i, param, grad, vel, pre, hyper, a, b, True)

    @h.jit
    def vector_torch(i, param, grad, vel, unused, pre, hyper, k0, k1, a, b):
        return vector(i, param, grad, vel, pre, hyper, a, b, False)

    @h.jit
    def apply_vector_torch(i, param, grad, vel, unused, pre, hyper, k0, k1, a, b):
        rho, beta, omb, eps1, eps1_sq = hyper
        p = param[i] * pre[3]
        g = grad_in(grad[i], p, pre)
        x = vel[i]
        if x < eps1_sq:
            x = eps1_sq
        param[i] = p + k0 * ((cast(1) / sqrt(x)) * g)
        return a, b

    @h.jit
    def apply_keras(i, param, grad, vel, unused, pre, hyper, k0, k1, a, b):
        p = param[i] * pre[3]
        g = grad_in(grad[i], p, pre)
        param[i] = p - k0 * ((g / sqrt(vel[i])) / k1)
        return a, b

    @h.jit
    def lerp_fma(x, y, w, w_minus_one, half):
        if abs(w) < half:
            return fma(w, y - x, x)
        return fma(w_minus_one, y - x, y)

    @h.jit
    def muon_momentum(i, param, grad, buf, out, pre, hyper, k0, k1, a, b):
        w, w_minus_one, mu, mu_minus_one, nesterov, half = hyper
        g = grad_in(grad[i], param[i] * pre[3], pre)
        m = lerp_fma(buf[i], g, w, w_minus_one, half)
        buf[i] = m
        if nesterov:
            out[i] = lerp_fma(g, m, mu, mu_minus_one, half)
        else:
            out[i] = m
        return a, b

    @h.jit
    def scaled_add(i, param, upd, unused0, unused1, pre, hyper, k0, k1, a, b):
        param[i] = fma(k0, upd[i], param[i] * pre[3])
        return a, b

    # Keras's Muon: hyper (μ, μ − 1, nesterov, lr, rms_rate, β₁, 1 − β₁, β₂,
    # 1 − β₂, α, ε, AdamW's decay 1 − lr·adam_wd); Keras's ops, no fma
    @h.jit
    def muon_momentum_keras(i, param, grad, buf, out, pre, hyper, k0, k1, a, b):
        mu, mu_minus_one, nesterov = hyper[0], hyper[1], hyper[2]
        g = grad_in(grad[i], param[i] * pre[3], pre)
        m = buf[i]
        m = m + (g + m * mu_minus_one)
        buf[i] = m
        if nesterov:
            out[i] = g + mu * m
        else:
            out[i] = m
        return a, b

    @h.jit
    def muon_apply_keras(i, param, upd, unused0, unused1, pre, hyper, k0, k1, a, b):
        lr, rms_rate = hyper[3], hyper[4]
        param[i] = param[i] * pre[3] - ((lr * upd[i]) * k0) * rms_rate
        return a, b

    @h.jit
    def muon_adamw_keras(i, param, grad, mom, vel, pre, hyper, k0, k1, a, b):
        omb1, omb2 = hyper[6], hyper[8]
        alpha, eps, decay = hyper[9], hyper[10], hyper[11]
        p = param[i] * decay
        g = grad_in(grad[i], p, pre)
        m = mom[i]
        m = m + (g - m) * omb1
        v = vel[i]
        v = v + (g * g - v) * omb2
        mom[i] = m
        vel[i] = v
        param[i] = p - (m * alpha) / (sqrt(v) + eps)
        return a, b

    # name: (element function, columns, sums, env columns read)
    return {"lamb_moments": (lamb_moments, 4, 2, 0),
            "lamb_apply": (lamb_apply, 3, 0, 1),
            "lamb_moments_torch": (lamb_moments_torch, 4, 2, 0),
            "lamb_apply_torch": (lamb_apply_torch, 3, 0, 1),
            "adafactor_vector_keras": (vector_keras, 3, 2, 0),
            "adafactor_vector_torch": (vector_torch, 3, 2, 0),
            "adafactor_apply_vector_torch": (apply_vector_torch, 3, 0, 1),
            "adafactor_apply_keras": (apply_keras, 3, 0, 2),
            "muon_momentum": (muon_momentum, 4, 0, 0),
            "scaled_add": (scaled_add, 2, 0, 1),
            "muon_momentum_keras": (muon_momentum_keras, 4, 0, 0),
            "muon_apply_keras": (muon_apply_keras, 2, 0, 1),
            "muon_adamw_keras": (muon_adamw_keras, 4, 0, 0)}


ELEMENTWISE = ("lamb_moments", "lamb_apply", "lamb_moments_torch", "lamb_apply_torch",
               "adafactor_vector_keras", "adafactor_vector_torch",
               "adafactor_apply_vector_torch", "adafactor_apply_keras", "muon_momentum",
               "scaled_add", "muon_momentum_keras", "muon_apply_keras", "muon_adamw_keras")


def _elementwise_function(name, dtype, threads, python):
    h = _Helpers(dtype, python)
    elem, ncols, nsums, nreads = _elements(h)[name]
    view, cast, sh_type = h.view, h.cast, h.shared
    c0, c1, c2, c3 = (min(k, ncols - 1) for k in range(4))
    half0 = threads // 2

    shape = (2, threads)

    def kern(table, chunks, env, pre, hyper, partial):
        sh = cuda.shared.array(shape, sh_type)
        tid = cuda.threadIdx.x
        like = pre[0]
        zero = cast(0)
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
FACTORED = ("adafactor_factor_keras", "adafactor_factor_torch", "adafactor_velocity_keras",
            "adafactor_rms_torch", "adafactor_apply_torch")
# a factored pass's launches, in order
LAUNCHES = {"adafactor_factor_keras": ("factor_rows_keras", "factor_cols_keras"),
            "adafactor_factor_torch": ("factor_rows_torch", "factor_cols_torch"),
            "adafactor_velocity_keras": ("velocity_keras",),
            "adafactor_rms_torch": ("rms_torch",),
            "adafactor_apply_torch": ("apply_torch",)}


def _factor_rows_function(keras, dtype, threads, python):
    """Pass 1, a block per tile: the tile's row factors, its column partials
    (``colpart``) and its sum of p² (``partial[q, 0]``)."""
    h = _Helpers(dtype, python)
    view, cast, sqrt, grad_in, lerp, sh_type = (h.view, h.cast, h.sqrt, h.grad_in, h.lerp,
                                                h.shared)
    rows, half0 = (SIM_TILE_ROWS if python else TILE_ROWS), threads // 2
    shape = (rows + 1, threads)

    def kern(table, mats, tiles, env, means, pre, hyper, partial, colpart):
        sh = cuda.shared.array(shape, sh_type)
        tid = cuda.threadIdx.x
        like = pre[0]
        rho, beta, omb, eps1, eps1_sq = hyper
        decay = pre[3]
        for q in range(cuda.blockIdx.x, tiles.shape[0], cuda.gridDim.x):
            k, i0, nr = tiles[q, 0], tiles[q, 1], tiles[q, 2]
            t, b, r, c = mats[k, 0], mats[k, 1], mats[k, 2], mats[k, 3]
            base = mats[k, 4] + (i0 // rows) * c
            param = view(table, t, 0, b * r * c + i0 * c, nr * c, like)
            grad = view(table, t, 1, b * r * c + i0 * c, nr * c, like)
            row = view(table, t, 2, b * r + i0, nr, like)
            for z in range(rows + 1):
                sh[z, tid] = cast(0)
            w = cast(0)
            for j in range(tid, c, threads):
                s = cast(0)
                for i in range(nr):
                    e = i * c + j
                    p = param[e] * decay
                    g = grad_in(grad[e], p, pre)
                    if keras:
                        x = g * g + eps1
                    else:
                        x = g * g
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
                total = sh[tid, 0]
                if keras:   # mean, then β·r + (1 − β)·mean
                    row[tid] = beta * row[tid] + omb * (total / cast(c))
                else:       # ‖g_i‖² / C, lerp'd in
                    norm = sqrt(total)
                    row[tid] = lerp(row[tid], norm * norm / cast(c), omb, beta)
            if tid == 0:
                partial[q, 0] = sh[rows, 0]
            cuda.syncthreads()

    return kern


def _factor_cols_function(keras, dtype, threads, python):
    """Pass 1's finish, a block per matrix: its column factors from the
    tiles' partials (in tile order), and the mean of its new row factor."""
    h = _Helpers(dtype, python)
    view, cast, sqrt, lerp, sh_type = h.view, h.cast, h.sqrt, h.lerp, h.shared
    half0 = threads // 2

    def kern(table, mats, tiles, env, means, pre, hyper, partial, colpart):
        sh = cuda.shared.array(threads, sh_type)
        tid = cuda.threadIdx.x
        like = pre[0]
        rho, beta, omb, eps1, eps1_sq = hyper
        for k in range(cuda.blockIdx.x, mats.shape[0], cuda.gridDim.x):
            t, b, r, c, base, ntiles = (mats[k, 0], mats[k, 1], mats[k, 2], mats[k, 3],
                                        mats[k, 4], mats[k, 5])
            col = view(table, t, 3, b * c, c, like)
            row = view(table, t, 2, b * r, r, like)
            for j in range(tid, c, threads):
                s = cast(0)
                for q in range(ntiles):
                    s += colpart[base + q * c + j]
                if keras:
                    col[j] = beta * col[j] + omb * (s / cast(r))
                else:
                    norm = sqrt(s)
                    col[j] = lerp(col[j], norm * norm / cast(r), omb, beta)
            m = cast(0)
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
                means[k] = sh[0] / cast(r)
            cuda.syncthreads()

    return kern


def _tile_elements(h):
    """The per-element factored passes: ``elem(e, i, j, param, grad, row, col,
    vel, mean_r, pre, hyper, k0, s) -> s`` for element e (row i, column j)
    of a tile."""
    cast, sqrt, grad_in = h.cast, h.sqrt, h.grad_in

    @h.jit
    def estimate(ri, cj, mean_r, eps1_sq, g):
        v = (ri * cj) / mean_r
        if v < eps1_sq:
            v = eps1_sq
        return (cast(1) / sqrt(v)) * g

    @h.jit
    def velocity_keras(e, i, j, param, grad, row, col, vel, mean_r, pre, hyper, k0, s):
        v = (row[i] / mean_r) * col[j]
        vel[e] = v
        g = grad_in(grad[e], param[e] * pre[3], pre)
        u = g / sqrt(v)
        return s + u * u

    @h.jit
    def rms_torch(e, i, j, param, grad, row, col, vel, mean_r, pre, hyper, k0, s):
        g = grad_in(grad[e], param[e] * pre[3], pre)
        u = estimate(row[i], col[j], mean_r, hyper[4], g)
        return s + u * u

    @h.jit
    def apply_torch(e, i, j, param, grad, row, col, vel, mean_r, pre, hyper, k0, s):
        p = param[e] * pre[3]
        g = grad_in(grad[e], p, pre)
        param[e] = p + k0 * estimate(row[i], col[j], mean_r, hyper[4], g)
        return s

    # name: (element function, the tensor's velocity column or -1, sums, torch's mean)
    return {"velocity_keras": (velocity_keras, 4, 1, False),
            "rms_torch": (rms_torch, -1, 1, True),
            "apply_torch": (apply_torch, -1, 0, True)}


def _tile_function(name, dtype, threads, python):
    h = _Helpers(dtype, python)
    elem, vcol, nsums, torch_mean = _tile_elements(h)[name]
    view, cast, sh_type = h.view, h.cast, h.shared
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
            s = cast(0)
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
