"""benchmarks/gpu/run.sh, the device path's one command, runs here without a GPU: its emulation half
(device tests, then `fastfid selftest --emulated sm_89 --benchmark`: every kernel variant validated,
the accuracy study, the routes measured and every benchmark case, checked against float64)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu" / "run.sh"


@pytest.mark.slow
def test_the_gpu_script_runs_its_emulation_half(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: run the script itself (it rebuilds fastfid)")
    # The device tests the script starts are this suite's own (test_gpu, test_device, ...); one file
    # proves the step's wiring without running the 100 s of them twice.
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable, DEVICE_TESTS="tests/test_device_failures.py")
    run = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    table = (tmp_path / "selftest.md").read_text()
    assert table.startswith("fastfid selftest") and "PASSED" in table.splitlines()[0] and "**NO**" not in table
    report = json.loads((tmp_path / "selftest.json").read_text())
    assert report["passed"] and report["device"]["emulated"] and report["device"]["architecture"] == "sm_89"
    assert report["device"]["name"] == "fastfid emulated GPU (sm_89)" and report["device"]["driver"] == "12.8"
    assert len(report["validation"]) == 12 and all(check["passed"] for check in report["validation"])
    assert len(report["accuracy"]) == 8 and report["accuracy_dim"] == 40
    assert {trial["route"] for trial in report["routes"]} == {"newton_schulz", "eigvalsh", "host"}
    assert sum(trial["chosen"] for trial in report["routes"]) == 1
    for group in ("statistics 600 × 40 float32", "statistics 600 × 40 bfloat16", "FD at d = 24", "FD at d = 40",
                  "FrechetLoss, population 300"):
        assert f"| {group}" in table
    benchmark = table.split("## Benchmark", 1)[1]
    assert benchmark.count("| yes |") == 3 * 2 + 2 * 5 + 1  # fastfid's statistics (exact, fast) per dtype, 5 FD routes per size, the loss
    assert "passed" in (tmp_path / "device_tests.txt").read_text()
