#!/usr/bin/env bash
# The device path's one command. On a machine with a CUDA GPU: build fastfid for that GPU, run the
# device tests, compute-sanitizer (memcheck, racecheck, synccheck) at small sizes, and
# `fastfid selftest --benchmark` (each kernel variant validated, the accuracy study, the FD routes
# measured, the benchmarks beside their torch references): its report into $OUT (default
# ./gpu-results) as selftest.md and selftest.json. Without a GPU it runs its emulation half (the
# device tests, and the selftest on an emulated sm_89 at small sizes, checked but not timed), which
# is how CI tests this script.
# Meant to fit in 8 minutes on an H100.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-results}
mkdir -p "$OUT"
failed=()
step() { printf '\n== %s\n' "$*"; }
python=${PYTHON:-python}

if "$python" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    gpu=1
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/device.txt"
    # A lent GPU machine may have no package registry: what it lacks comes from ./.wheels
    # (git-ignored) when that folder is there.
    source_args=()
    [ -d .wheels ] && source_args=(--no-index --find-links .wheels)
    step "build for the local GPU"
    "$python" -m pip install -q "${source_args[@]}" scikit-build-core pybind11 scipy-openblas32 tqdm pillow pytest \
        || failed+=("dependencies")
    start=$(date +%s)
    "$python" -m pip install -q --no-deps --no-build-isolation -e . \
        -Ccmake.define.FASTFID_CUDA=ON -Ccmake.define.CMAKE_CUDA_ARCHITECTURES=native || { echo "build failed"; exit 1; }
    echo "built in $(( $(date +%s) - start )) s" | tee "$OUT/build.txt"
    "$python" -c "import fastfid; assert fastfid.cuda_compiled, 'built without the kernel image'" || exit 1
else
    gpu=0
    echo "no CUDA GPU visible: the emulation half" | tee "$OUT/device.txt"
fi

step "device tests"
# DEVICE_TESTS narrows them (tests/test_gpu_script.py does: the suite around it runs them all already).
read -ra device_tests <<< "${DEVICE_TESTS:-tests/test_gpu.py tests/test_device.py tests/test_device_failures.py tests/test_kernels_simt.py}"
"$python" -m pytest -q -p no:cacheprovider "${device_tests[@]}" 2>&1 | tee "$OUT/device_tests.txt" | tail -n 15
[ "${PIPESTATUS[0]}" = 0 ] || failed+=("device tests")

if [ "$gpu" = 1 ]; then
    if command -v compute-sanitizer >/dev/null; then
        for tool in memcheck racecheck synccheck; do
            step "compute-sanitizer --tool $tool"
            # Bounded: torch's own start-up runs under the tool too, and the whole script has 8 minutes.
            timeout 150 compute-sanitizer --tool "$tool" --error-exitcode 3 "$python" benchmarks/gpu/sanitized_run.py \
                > "$OUT/sanitizer_$tool.txt" 2>&1
            status=$?
            tail -n 5 "$OUT/sanitizer_$tool.txt"
            [ "$status" = 0 ] || failed+=("compute-sanitizer $tool")
        done
    else
        echo "compute-sanitizer is not on PATH" | tee "$OUT/sanitizer.txt"
        failed+=("compute-sanitizer missing")
    fi
    step "fastfid selftest --benchmark"
    "$python" -m fastfid selftest --benchmark --out "$OUT" || failed+=("selftest")
else
    step "fastfid selftest on the emulated driver (correctness only)"
    "$python" -m fastfid selftest --emulated sm_89 --benchmark --out "$OUT" > /dev/null || failed+=("selftest")
    sed -n 1p "$OUT/selftest.md"
fi

if [ "${#failed[@]}" != 0 ]; then
    printf '\nfailed: %s\n' "${failed[*]}"
    exit 1
fi
printf '\nall steps passed; tables in %s\n' "$OUT"
