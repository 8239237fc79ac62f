"""``fastfid selftest``: one report a user can paste into an issue, as ``python -m
torch.utils.collect_env`` is for torch. It names the build and the machine, validates every kernel
variant the device uses against the CPU core (fastfid._device.validation, run afresh whatever was
recorded), runs the accuracy study's cases there (route, iterations, bound and true error against
the CPU), measures which FD route is fastest there, and with ``benchmark=True`` times the GPU
benchmark's tables beside their torch references.

On the CPU it runs under the emulated driver (``emulated="sm_89"``), where everything is some 10⁴
times slower: the accuracy study then runs at d = 40 instead of 256, the benchmark at its emulated
sizes (statistics of 600 × 40, FD at 24 and 40, see ``bench.EMULATED_SIZES``) and untimed; the
validation keeps its sizes (d = 130, n = 700). CI runs it so.
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
import warnings
from dataclasses import asdict, dataclass, field
from importlib import metadata

GPU_ACCURACY_DIM, EMULATED_ACCURACY_DIM = 256, 40


@dataclass
class Report:
    environment: dict
    device: dict
    validation: list[dict] = field(default_factory=list)
    validation_seconds: float = 0.0
    accuracy_dim: int = 0
    accuracy: list[dict] = field(default_factory=list)
    routes: list[dict] = field(default_factory=list)
    benchmark: list[dict] | None = None
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    checked: bool = True
    """False when there was no device to check (no GPU visible)."""

    @property
    def passed(self) -> bool:
        return not self.problems

    def to_json(self) -> str:
        return json.dumps(asdict(self) | {"passed": self.passed}, indent=1, default=str)

    def text(self) -> str:
        from fastfid.selftest import accuracy, bench

        env, device = self.environment, self.device
        verdict = "PASSED" if self.passed else "FAILED"
        lines = [f"fastfid selftest, {env['date']}: {verdict} in {self.seconds:.1f} s", "",
                 "## Build and machine",
                 f"fastfid {env['fastfid']} (commit {env['commit'] or 'unknown'}); kernels built for "
                 f"{env['kernel_architectures'] or 'none (built without nvcc)'}, image {env['kernel_image']}",
                 f"python {env['python']} on {env['platform']}; numpy {env['numpy']}; torch {env['torch']} "
                 f"(CUDA runtime {env['torch_cuda'] or 'none'})",
                 f"device {device['device']}: {device.get('name') or 'unknown'}, {device.get('architecture') or '?'}, "
                 f"driver CUDA {device.get('driver') or 'unknown'}" + (" (emulated)" if device["emulated"] else ""),
                 f"kernels: {device['kernels']}", ""]
        if self.validation:
            failed = sum(not check["passed"] for check in self.validation)
            lines += [f"## Validation (d = 130, n = 700, against the CPU core): "
                      f"{len(self.validation) - failed} of {len(self.validation)} passed in "
                      f"{self.validation_seconds * 1000:.0f} ms",
                      "| variant | result | error / tolerance | ms | detail |", "|---|---|---|---|---|"]
            lines += [f"| {c['name']} | {'pass' if c['passed'] else '**FAIL**'} | {c['error']:.3g} / "
                      f"{c['tolerance']:g} | {c['seconds'] * 1000:.1f} | {c['detail']} |" for c in self.validation]
            lines.append("")
        if self.accuracy:
            lines += [f"## Accuracy study on {device['device']}", accuracy.markdown(
                self.accuracy, self.accuracy_dim, device.get("architecture") or device["device"])]
        if self.routes:
            lines += ["## FD routes measured here", "| d | route | ms | certified | chosen |", "|---|---|---|---|---|"]
            lines += [f"| {r['dim']} | {r['route']} | {'—' if r['ms'] is None else format(r['ms'], '.2f')} | "
                      f"{'yes' if r['certified'] else 'no'} | {'**yes**' if r['chosen'] else ''} |"
                      for r in self.routes]
            lines.append("")
        if self.benchmark is not None:
            lines += [bench.markdown(self.benchmark, "## Benchmark (each beside its torch references, same run)")]
        if self.warnings:
            lines += ["## Warnings", *(f"- {w}" for w in self.warnings), ""]
        if self.problems:
            lines += ["## Problems", *(f"- {p}" for p in self.problems), "",
                      "Please send this whole report to fastfid's maintainers."]
        return "\n".join(lines).rstrip() + "\n"


def run(device: str | None = None, *, emulated: str | None = None, benchmark: bool = False,
        rounds: int = 10) -> Report:
    """The report for ``device`` ("cuda:N", default the current CUDA device), or for an emulated
    GPU of architecture ``emulated`` (e.g. "sm_89") on the CPU."""
    import torch

    from fastfid.testing import emulated_cuda

    started = time.perf_counter()
    if emulated is not None:
        if device is not None:
            raise ValueError("give either a device or an emulated architecture, not both")
        with emulated_cuda(architecture=emulated):
            report = _run_on(torch.device("cpu"), emulated=True, benchmark=benchmark, rounds=rounds)
    else:
        target = torch.device(device or "cuda")
        if target.type != "cuda":
            raise ValueError(f"selftest checks a CUDA device (cuda or cuda:N), got {device!r}; "
                             "without a GPU, --emulated sm_89 checks the kernels' logic on the CPU")
        if not torch.cuda.is_available():
            report = Report(environment(), {"device": str(target), "emulated": False, "kernels": "none"}, checked=False)
            report.problems.append(
                f"no CUDA GPU is visible to torch {torch.__version__} (built for CUDA {torch.version.cuda or 'none'}): "
                "fastfid's kernels cannot be checked here; `fastfid selftest --emulated sm_89` checks their logic on "
                "the CPU")
        else:
            if target.index is None:
                target = torch.device("cuda", torch.cuda.current_device())
            if target.index >= torch.cuda.device_count():
                raise ValueError(f"{target} does not exist: torch sees {torch.cuda.device_count()} CUDA device(s)")
            report = _run_on(target, emulated=False, benchmark=benchmark, rounds=rounds)
    report.seconds = time.perf_counter() - started
    return report


def _run_on(device, *, emulated: bool, benchmark: bool, rounds: int) -> Report:
    from fastfid import _device
    from fastfid._device import validation
    from fastfid.selftest import accuracy, bench

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kernels = _device.kernels_for(device)
        report = Report(environment(), _describe(device, kernels, emulated))
        if kernels is None:
            report.problems.append(f"fastfid's kernels do not run on {device}: see the warnings; its statistics and "
                                   "distances take torch's float64 ops there")
        else:
            outcome = validation.validate(kernels, device, complete=True)
            report.validation = [asdict(check) | {"passed": check.passed} for check in outcome.checks]
            report.validation_seconds = outcome.seconds
            report.problems += [f"the kernel variant '{check.name}' failed its validation ({check.detail})"
                                for check in outcome.failed]
            report.routes = [asdict(trial) for trial in _measure_routes(kernels, device, emulated)]
        report.accuracy_dim = EMULATED_ACCURACY_DIM if emulated else GPU_ACCURACY_DIM
        report.accuracy = accuracy.study(report.accuracy_dim, device)
        report.problems += [f"accuracy study: '{case}' is outside its bound or the tolerance"
                            for case in accuracy.wrong(report.accuracy)]
        if benchmark:
            report.benchmark = bench.run(device, emulated=emulated, rounds=rounds)
            report.problems += [f"benchmark: {row['group']}: {row['case']} gave a wrong result"
                                for row in report.benchmark if row["correct"] is False]
    report.warnings = list(dict.fromkeys(str(w.message) for w in caught))
    return report


def _measure_routes(kernels, device, emulated: bool) -> list:
    """The FD routes timed on the accuracy study's first case (Inception-like statistics) at its d,
    recorded for the device as a first need's trial is (fastfid._device.routes)."""
    import numpy as np
    import torch

    from fastfid._device import routes
    from fastfid._device.frechet import route_calls
    from fastfid.selftest.accuracy import cases

    d = EMULATED_ACCURACY_DIM if emulated else GPU_ACCURACY_DIM
    _, (mu1, s1, mu2, s2) = next(iter(cases(d)))
    t_mu1, t_s1, t_mu2, t_s2 = (torch.from_numpy(np.ascontiguousarray(v)).to(device) for v in (mu1, s1, mu2, s2))
    return routes.trial(kernels, device, d, route_calls(kernels, t_mu1, t_s1, t_mu2, t_s2))[0]


def _describe(device, kernels, emulated: bool) -> dict:
    from fastfid._native import cuda as _cuda

    backend = kernels.backend if kernels is not None else (
        _cuda.emulated_backend() if emulated else _cuda.system_backend())
    index = kernels.index if kernels is not None else (device.index or 0)
    described = backend.describe(index)
    driver = described["driver_version"]
    kind = "none (torch's float64 ops)" if kernels is None else (
        ("FP64 tensor cores (DMMA)" if kernels.tensor_cores else "FP64 FMAs") + " for float64 products, "
        + ("3xTF32" if kernels.tf32x3 else "float64") + " Newton-Schulz products")
    return {"device": str(device) if not emulated else f"emulated cuda:{index}", "emulated": emulated,
            "name": described["name"], "architecture": described["architecture"],
            "driver": f"{driver // 1000}.{driver % 1000 // 10}" if driver else "", "kernels": kind}


def environment() -> dict:
    import numpy
    import torch

    from fastfid._device import validation
    from fastfid._native import cuda as _cuda
    from fastfid._version import __version__

    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "fastfid": __version__, "commit": _commit(),
            "kernel_architectures": _cuda.kernel_architectures, "kernel_image": validation.build_id().split("/")[-1],
            "python": platform.python_version(), "platform": platform.platform(), "numpy": numpy.__version__,
            "torch": torch.__version__, "torch_cuda": torch.version.cuda}


def _commit() -> str | None:
    """The commit fastfid was installed from: pip's record of a VCS install, or the checkout of a
    local-directory install as it is now."""
    try:
        recorded = metadata.distribution("fastfid").read_text("direct_url.json")
        info = json.loads(recorded or "{}")
    except (metadata.PackageNotFoundError, ValueError):
        return None
    if "vcs_info" in info:
        return info["vcs_info"].get("commit_id")
    url = info.get("url", "")
    if not url.startswith("file://"):
        return None
    folder = url.removeprefix("file://")
    try:
        found = subprocess.run(["git", "-C", folder, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                               text=True, timeout=5, check=True)
        changed = subprocess.run(["git", "-C", folder, "status", "--porcelain", "--untracked-files=no"],
                                 capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = found.stdout.strip()
    return None if not commit else commit + (" with local changes" if changed.stdout.strip() else "")
