#!/usr/bin/env bash
# One lease on a GPU machine, run from the repository root there:
#   bash benchmarks/gpu_session.sh STAGE... (setup is always run first)
# Stages: tests, sanitize, sass, bench, lists, hostcost, launcher, capture, programs.
# (programs: the program optimizers' CUDA passes under compute-sanitizer
# against the CPU path, then their time per step against torch.optim and
# the copy floor, benchmarks/programs_gpu_bench.py.)
# After the packed launcher and the 128-bit loop (docs/design.md, CUDA kernels),
# the first GPU run should be: launcher capture hostcost sanitize sass bench lists tests
# (launcher: the driver launch equals Numba's bit for bit; sass: LDG.E.128 in
# the main loop; bench: 2^28 float32 against torch fused and the copy kernel, and
# STREAM copy and triad (kernels/stream.py) on >= 1 GiB buffers in the same run).
# Logs and results go to $OUT
# (default ./gpu-out). Each stage has its own time limit, so the lease ends
# with every log written even when a stage hangs.
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=python3

setup() {
    nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
    if ls .whl/*.whl > /dev/null 2>&1; then   # wheels the image lacks (keras)
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
    fi
    # The image may lack a recent setuptools: fall back to a source-tree import.
    if ! $PY -m pip install -q --no-deps --no-build-isolation -e . > "$OUT/install.log" 2>&1; then
        ln -sfn ../kernels fastopt/kernels
        export PYTHONPATH=$PWD:${PYTHONPATH:-}
    fi
    $PY - <<'EOF' 2>&1 | tee "$OUT/env.txt"
import numba, numpy, torch
from numba import cuda
print("numba", numba.__version__, "numba-cuda", getattr(cuda, "__version__", "?"),
      "implementation", getattr(cuda, "implementation", "?"))
print("numpy", numpy.__version__, "torch", torch.__version__)
print("cuda available:", cuda.is_available(), torch.cuda.is_available())
dev = cuda.get_current_device()
print("device", dev.name, "cc", dev.compute_capability, "SMs", dev.MULTIPROCESSOR_COUNT)
from numba.cuda.cudadrv.driver import driver
print("driver API", driver.get_version())
import fastopt, cupy, numpy as np
p = cupy.ones(1000, cupy.float32); g = cupy.full(1000, 0.5, cupy.float32)
fastopt.functional.sgd(p, g, step=1, lr=0.1)
print("smoke sgd on cupy:", float(p[0]), float(p[-1]))
EOF
}

tests() {
    # Two threads per worker: 16 workers x all cores would oversubscribe.
    FASTOPT_REAL_GPU=1 OMP_NUM_THREADS=2 NUMBA_NUM_THREADS=2 timeout "${TEST_LIMIT:-330}" \
        $PY -m pytest -q -n 16 -p no:cacheprovider -o addopts="" \
        --junitxml="$OUT/junit.xml" ${TEST_ARGS:-} > "$OUT/pytest.log" 2>&1
    echo "pytest exit $?"; tail -n 40 "$OUT/pytest.log"
}

sanitize() {
    timeout "${SANITIZE_LIMIT:-150}" compute-sanitizer --tool memcheck --report-api-errors no --error-exitcode 1 \
        $PY benchmarks/gpu_checks.py sanitize > "$OUT/sanitize.log" 2>&1
    echo "compute-sanitizer exit $?"; tail -n 8 "$OUT/sanitize.log"
}

sass() {
    mkdir -p /tmp/sass
    timeout 120 $PY benchmarks/gpu_checks.py sass /tmp/sass 2>&1 | tee "$OUT/sass-summary.txt"
    tar czf "$OUT/sass.tgz" -C /tmp sass
}

bench() {
    timeout "${BENCH_LIMIT:-300}" $PY -m fastopt.bench --device cuda --no-progress \
        --optimizers "${BENCH_OPTS:-adam,adamw,amsgrad,rmsprop,rmsprop_centered_momentum,adagrad,sgd_momentum,sgd}" \
        --sizes "${BENCH_SIZES:-65536,262144,1048576,4194304,16777216,67108864,268435456}" \
        --repeats 20 --out "$OUT" > "$OUT/bench.log" 2>&1
    echo "bench exit $?"; tail -n 80 "$OUT/bench.log"
    # the ceiling of the same run (kernels/stream.py, >= 1 GiB buffers)
    grep -E "^STREAM|of STREAM copy" "$OUT/bench.log" || true
}

lists() {
    timeout "${LISTS_LIMIT:-200}" $PY -m fastopt.bench --device cuda --no-progress \
        --lists gpt2-small,resnet50,200x1000 --optimizers "${LISTS_OPTS:-adam,sgd_momentum}" \
        --repeats 30 --out "$OUT" > "$OUT/lists.log" 2>&1
    echo "lists exit $?"; tail -n 40 "$OUT/lists.log"
}

hostcost() {
    # Host time per call: the packed driver launcher, Numba's launcher
    # (FASTOPT_LAUNCHER=numba), torch fused and CuPy's ElementwiseKernel, one
    # run each; then the recorder (no driver call) on the same machine.
    for launcher in driver numba; do
        FASTOPT_LAUNCHER=$launcher timeout "${HOSTCOST_LIMIT:-120}" $PY -m fastopt.bench \
            --host-cost --device cuda --repeats 9 > "$OUT/hostcost-$launcher.log" 2>&1
        echo "hostcost ($launcher launcher) exit $?"; cat "$OUT/hostcost-$launcher.log"
    done
    timeout 60 $PY -m fastopt.bench --host-cost --device cpu --repeats 9 \
        > "$OUT/hostcost-recorder.log" 2>&1
    echo "hostcost (recorder) exit $?"; cat "$OUT/hostcost-recorder.log"
}

launcher() {
    timeout "${LAUNCHER_LIMIT:-150}" $PY benchmarks/gpu_checks.py launcher > "$OUT/launcher.log" 2>&1
    echo "launcher check exit $?"; tail -n 4 "$OUT/launcher.log"
}

capture() {
    timeout 90 $PY benchmarks/gpu_checks.py capture > "$OUT/capture.log" 2>&1
    echo "capture check exit $?"; tail -n 8 "$OUT/capture.log"
}

programs() {
    timeout "${PROGRAMS_LIMIT:-240}" compute-sanitizer --tool memcheck --report-api-errors no \
        --error-exitcode 1 $PY benchmarks/gpu_checks.py programs > "$OUT/programs-check.log" 2>&1
    echo "programs check (compute-sanitizer) exit $?"; tail -n 8 "$OUT/programs-check.log"
    timeout "${PROGRAMS_BENCH_LIMIT:-180}" $PY benchmarks/programs_gpu_bench.py \
        --side 4096 --out "$OUT/programs-gpu.json" > "$OUT/programs-bench.log" 2>&1
    echo "programs bench exit $?"; cat "$OUT/programs-bench.log"
}

setup
for stage in "$@"; do
    echo "=== $stage"
    "$stage"
done
