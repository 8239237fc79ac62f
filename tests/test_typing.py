"""The public API's annotations, checked by mypy over the package and tests/typing/public_api.py."""

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy")
pytest.importorskip("torch")  # the API's annotations name torch.Tensor


def test_mypy_accepts_the_package_and_its_public_api():
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary"], cwd=root, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
