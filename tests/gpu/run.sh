#!/usr/bin/env bash
# Build natten against the machine's torch, then run the GPU suite (and, with --bench, the GPU
# benchmark suites, fused then unfused). Usage on the GPU machine, from the repository root:
#   bash tests/gpu/run.sh [--bench] [pytest args...]
# Logs go to ${OUT:-gpu-logs}/ (build.log, gpu-tests.log, bench.log and the benchmark JSON rows).
# The tests (about 660 with 8 xdist workers, then about 100 of the Flex backend with 4) take about 3.5 + 3
# minutes on the H200 machine.
set -o pipefail
export PYTHONUNBUFFERED=1 CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-16}
LOGS=${OUT:-gpu-logs}
mkdir -p "$LOGS"
BENCH=0
if [ "${1:-}" = "--bench" ]; then BENCH=1; shift; fi
if ! python3 -m pip install --no-build-isolation --no-deps ./packages/natten-kernels >"$LOGS/build.log" 2>&1; then
    # the C++ CPU library failed to build: the Triton path runs from the sources with Python-defined
    # op schemas (natten_kernels/triton/standalone.py)
    grep -m5 "error" "$LOGS/build.log"; echo "natten-kernels build FAILED: running Triton from sources"
    export PYTHONPATH="$PWD/packages/natten-kernels/src${PYTHONPATH:+:$PYTHONPATH}"
fi
# the pure packages build with hatchling, which the GPU image may lack: use their sources then
python3 -m pip install --no-build-isolation --no-deps ./packages/natten ./packages/natten-legacy >>"$LOGS/build.log" 2>&1 \
    || export PYTHONPATH="$PWD/packages/natten/src:$PWD/packages/natten-legacy/src${PYTHONPATH:+:$PYTHONPATH}"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
status=0
# Triton compiles on the CPU: spread the suite over processes when pytest-xdist is there
WORKERS=()
if python3 -c "import xdist" 2>/dev/null; then WORKERS=(-n "${GPU_TEST_WORKERS:-8}"); fi
FLEX=(tests/gpu/test_flex_gpu.py tests/gpu/test_backends_gpu.py)
timeout ${GPU_TEST_TIMEOUT:-480} python3 -m pytest tests/gpu -q -p no:cacheprovider --maxfail=15 -rf "${WORKERS[@]}" \
    "${FLEX[@]/#/--ignore=}" "$@" 2>&1 | tee "$LOGS/gpu-tests.log" | grep -v "^tests/gpu.*PASSED" | tail -60 || status=1
# The other backends (Flex): a compile per shape and the at-scale problems' references in every
# worker: half the workers, so that their memory fits beside each other
[ ${#WORKERS[@]} -gt 0 ] && WORKERS=(-n "${GPU_FLEX_WORKERS:-4}")
timeout ${GPU_FLEX_TIMEOUT:-420} python3 -m pytest "${FLEX[@]}" -q -p no:cacheprovider --maxfail=15 -rf "${WORKERS[@]}" "$@" 2>&1 \
    | tee "$LOGS/gpu-tests-flex.log" | grep -v "^tests/gpu.*PASSED\|DEBUG" | tail -40 || status=1
if [ "$BENCH" = 1 ]; then
    timeout ${GPU_BENCH_TIMEOUT:-300} python3 benchmarks/run.py --suite gpu --out "$LOGS" ${BENCH_ARGS:-} 2>&1 \
        | tee "$LOGS/bench.log" || status=1
    timeout ${GPU_BENCH_TIMEOUT:-300} python3 benchmarks/run.py --suite gpu_unfused --out "$LOGS" 2>&1 \
        | tee "$LOGS/bench-unfused.log" || status=1
fi
exit $status
