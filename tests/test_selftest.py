"""`fastfid selftest`: the report a user pastes into an issue. Without a GPU it says so (exit 2);
under the emulation a kernel that gives wrong values fails the report (exit 1) naming the variant.
The passing run on an emulated sm_89 is tests/test_gpu_script.py's (benchmarks/gpu/run.sh calls it)."""

import json

import pytest

torch = pytest.importorskip("torch")
from fastfid import _cuda, cli  # noqa: E402


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTFID_HOME", str(tmp_path))


def test_without_a_gpu_the_report_names_the_build_and_says_what_to_run_instead(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    assert cli.main(["selftest", "--json"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert not report["passed"] and not report["checked"]
    assert report["environment"]["torch"] == torch.__version__
    assert report["environment"]["kernel_architectures"] == _cuda.kernel_architectures
    assert "no CUDA GPU is visible" in report["problems"][0] and "--emulated sm_89" in report["problems"][0]


def test_a_device_that_is_not_cuda_is_refused_in_one_line(capsys):
    assert cli.main(["selftest", "--device", "cpu"]) == 1
    assert capsys.readouterr().err.strip() == ("fastfid: error: selftest checks a CUDA device (cuda or cuda:N), got "
                                                "'cpu'; without a GPU, --emulated sm_89 checks the kernels' logic on "
                                                "the CPU")


@pytest.mark.slow
def test_a_kernel_giving_wrong_values_fails_the_report_naming_the_variant(capsys, monkeypatch, tmp_path):
    real_reset = _cuda.emulator.reset

    def reset_with_a_fault(devices=1, capability=90):
        real_reset(devices, capability)
        _cuda.emulator.inject_fault("fastfid_merge_apply", "flip_bit", where=3)

    monkeypatch.setattr(_cuda.emulator, "reset", reset_with_a_fault)
    assert cli.main(["selftest", "--emulated", "sm_90", "--out", str(tmp_path / "out")]) == 1
    text = capsys.readouterr().out
    assert text.splitlines()[0].startswith("fastfid selftest") and "FAILED" in text.splitlines()[0]
    assert "| merge of two states (Chan's update) | **FAIL** |" in text
    assert "the kernel variant 'merge of two states (Chan's update)' failed its validation" in text
    assert "FP64 tensor cores (DMMA) for float64 products" in text
    report = json.loads((tmp_path / "out" / "selftest.json").read_text())
    assert [check["guards"] for check in report["validation"] if not check["passed"]] == ["merge"]
    assert (tmp_path / "out" / "selftest.md").read_text() == text
