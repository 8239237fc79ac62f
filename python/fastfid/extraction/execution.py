"""How a feature network runs over a job's batches: eager, channels-last, or a frozen or compiled
graph, picked per job by measurement, each checked against eager on a real batch before it is used.

Why it is built this way:

- The fast modes reorder floating-point sums (about 5e-7 relative on the FID Inception), so a mode
  serves only if its features of the job's first batch are within ``TOLERANCE`` of eager's
  (relative, Frobenius norm), logits too where the job takes them.
- A graph costs seconds (frozen) to a minute or more (compiled) to build, so it is tried only when the
  job's remaining batches would repay the trial several times over; a job without a plan (one call
  of ``batch_features``, the drop-ins' per-batch updates) runs eager unless a mode is asked for.
- Speed differs between machines (channels-last float32 convolutions can be slower on a GPU without
  TF32), so the mode kept is the fastest measured here, on the job's own batches, not a table.
- A graph serves the batch shape it was built for; other shapes (a job's shorter last batch) run in
  the best verified shape-free mode (channels-last or eager).
- On CUDA the network runs with cuDNN and without TF32 (torch lets cuDNN's convolutions use TF32 by
  default, 1e-3 off float32), unless ``tf32=True`` / ``FASTFID_TF32=1`` asks for it.

``FASTFID_EXECUTION`` (or ``FeatureExtractor(execution=...)``) forces one of ``MODES``; a forced mode
that fails its check falls back to eager with one warning.
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
import warnings
from dataclasses import dataclass

__all__ = ["MODES", "TOLERANCE", "Execution", "Trial"]

MODES = ("auto", "eager", "channels-last", "frozen", "compiled")
TOLERANCE = 1e-6
GRAPH_MODES = ("frozen", "compiled")
# What trying a mode is expected to cost beyond its verification batch, in eager batch-times (frozen:
# one trace and the optimiser's passes, about one batch of the FID Inception on this CPU) or seconds
# (compiled: inductor built the FID Inception in about 60 s on 2 cores).
_BUILD_BATCHES = {"channels-last": 0.1, "frozen": 1.5, "compiled": 0.0}
_BUILD_SECONDS = {"channels-last": 0.0, "frozen": 0.0, "compiled": 90.0}
# A mode is tried when the time it might save (this share of the remaining eager time) is at least
# twice what trying it costs: in a job the FID Inception ran 1.3-2.2x eager's pace (a saving of 23-55 %),
# so a quarter is a cautious floor.
_EXPECTED_SAVING = 0.25


@dataclass
class Trial:
    """What became of one mode in a job: its relative error against eager on the first batch, its
    warm seconds per batch, and why it is not used (empty when it is)."""

    mode: str
    error: float | None = None
    seconds: float | None = None
    note: str = ""


class Execution:
    """Runs ``model`` (features, or features and logits) in the mode chosen for the job at hand.

    Its life: ``plan`` (the job's size) → the first batch runs eager and each mode worth trying is
    built and checked on it → the next batches time eager and the verified modes, ``TIMED_BATCHES``
    each, interleaved, every result used → the fastest is kept and the others are freed."""

    TIMED_BATCHES = 2  # each mode's time is the better of two batches: one batch alone is too noisy here

    def __init__(self, model, device, mode: str | None = None, tf32: bool | None = None):
        mode = mode if mode is not None else os.environ.get("FASTFID_EXECUTION", "auto")
        if mode not in MODES:
            raise ValueError(f"execution must be one of {MODES}, got {mode!r} (FASTFID_EXECUTION?)")
        self.model, self.device, self.requested = model, device, mode
        self.tf32 = os.environ.get("FASTFID_TF32", "0") not in ("", "0") if tf32 is None else bool(tf32)
        self.trials: dict[str, Trial] = {}
        self._phase = "planless"  # → "first" (planned) → "timing" → "settled"
        self._batches_ahead = 0
        self._logits = False
        self._shape: tuple | None = None
        self._eager = self._free = _Runner("eager", model)  # _free: the shape-free runner in use
        self._graph: _Runner | None = None  # serves batches of self._shape only
        self._verified: list[_Runner] = []
        self._timing: list[_Runner] = []
        self._channels_last_copy = None

    @property
    def chosen(self) -> str | None:
        """The mode in use (None while it is being chosen)."""
        if self._phase in ("first", "timing"):
            return None
        return self._graph.mode if self._graph is not None else self._free.mode

    # --- the job's plan ------------------------------------------------------------------------------
    def plan(self, images: int, batch_size: int, logits: bool = False) -> None:
        """The job ahead: its image count and batch size decide which modes are worth trying. A mode
        settled, or being timed, by an earlier job on this network is kept."""
        if self._phase not in ("planless", "first"):
            return
        self._batches_ahead = -(-int(images) // max(int(batch_size), 1))
        self._logits = bool(logits)
        self._phase = "first" if self.requested != "eager" else "settled"

    # --- running a batch -------------------------------------------------------------------------------
    def __call__(self, images, logits: bool = False):
        import torch

        with torch.no_grad(), self._numerics():
            planned = logits == self._logits
            if self._phase == "planless" and self.requested not in ("auto", "eager"):
                self._phase, self._logits = "first", logits  # a forced mode needs no plan
                planned = True
            if self._phase == "first" and planned:
                return self._first_batch(images, logits)
            try:
                if self._phase == "timing" and planned and tuple(images.shape) == self._shape:
                    return self._time_next(images, logits)
                fits = self._graph is not None and planned and tuple(images.shape) == self._shape
                return (self._graph if fits else self._free)(images, logits)  # type: ignore[misc]
            except Exception as error:  # a faster mode that fails later costs its speed, never the job
                if self._free is self._eager and self._graph is None and self._phase == "settled":
                    raise  # eager's own failure is the network's: the caller's to see
                warnings.warn(f"execution {self.chosen or 'trials'} failed on {self.device} "
                              f"({type(error).__name__}: {_first_line(error)}); the network runs eager from now on",
                              RuntimeWarning, stacklevel=3)
                self._settle([])
                return self._eager(images, logits)

    def _first_batch(self, images, logits):
        self._shape = tuple(images.shape)
        started = self._clock()
        reference = self._eager(images, logits)
        for mode in self._candidates(self._clock() - started):
            runner = self._try(mode, images, logits, reference)
            if runner is not None:
                self._verified.append(runner)
        if self.requested == "auto" and self._verified:
            self._timing = [runner for _ in range(self.TIMED_BATCHES) for runner in (self._eager, *self._verified)]
            self._phase = "timing"
            return reference
        if self.requested not in ("auto", "eager") and not self._verified:
            trial = self.trials.get(self.requested)
            warnings.warn(f"execution {self.requested!r} was not used on {self.device}: "
                          f"{trial.note if trial else 'unavailable'}; the network runs eager", RuntimeWarning,
                          stacklevel=4)
        self._settle(self._verified)
        return reference

    def _time_next(self, images, logits):
        runner = self._timing.pop(0)
        started = self._clock()
        result = runner(images, logits)
        seconds = self._clock() - started
        trial = self.trials.setdefault(runner.mode, Trial(runner.mode, error=0.0))
        trial.seconds = seconds if trial.seconds is None else min(trial.seconds, seconds)
        if not self._timing:
            self._choose()
        return result

    def _choose(self) -> None:
        timed = [self._eager, *self._verified]
        seconds = {runner.mode: self.trials[runner.mode].seconds or 0.0 for runner in timed}  # all timed
        best = min(timed, key=lambda runner: seconds[runner.mode])
        for runner in timed:
            if runner is not best:
                self.trials[runner.mode].note = (f"slower than {best.mode} ({seconds[runner.mode]:.3g} s against "
                                                 f"{seconds[best.mode]:.3g} s a batch)")
        shape_free = [runner for runner in timed if runner.mode in ("eager", "channels-last")]
        keep = [best] + ([min(shape_free, key=lambda runner: seconds[runner.mode])] if best.mode in GRAPH_MODES
                         else [])
        self._settle(keep)

    def _settle(self, runners) -> None:
        """Keep these runners (a graph and a shape-free one at most), free the rest."""
        self._free = next((r for r in runners if r.mode == "channels-last"), self._eager)
        self._graph = next((r for r in runners if r.mode in GRAPH_MODES), None)
        self._verified, self._timing, self._channels_last_copy = [], [], None
        self._phase = "settled"

    # --- trying a mode -----------------------------------------------------------------------------
    def _candidates(self, eager_seconds: float) -> list[str]:
        if self.requested != "auto":
            return [] if self.requested == "eager" else [self.requested]
        ahead = self._batches_ahead - 1
        worth = []
        for mode in ("channels-last", "frozen", "compiled"):
            trying = eager_seconds * (1 + _BUILD_BATCHES[mode]) + _BUILD_SECONDS[mode]
            if _EXPECTED_SAVING * ahead * eager_seconds >= 2 * trying:
                worth.append(mode)
            else:
                self.trials[mode] = Trial(mode, note=f"not tried: {max(ahead, 0)} batches left would not repay "
                                                     "its trial")
        return worth

    def _try(self, mode, images, logits, reference):
        """The mode's runner if it builds and its features of this batch are eager's within TOLERANCE."""
        try:
            with warnings.catch_warnings():  # torch's own notes while tracing or compiling are not the user's
                warnings.simplefilter("ignore")
                runner = _Runner(mode, self._channels_last_model(), example=images, logits=logits)
                result = runner(images, logits)  # a compiled graph is built here, at its first call
                deviation = _relative_error(result, reference)
        except Exception as error:  # a mode this torch or machine cannot build is skipped, never fatal
            self.trials[mode] = Trial(mode, note=f"failed to build: {type(error).__name__}: {_first_line(error)}")
            return None
        self.trials[mode] = Trial(mode, error=deviation)
        if not deviation <= TOLERANCE:
            self.trials[mode].note = f"features {deviation:.2g} relative from eager's, above {TOLERANCE:g}"
            return None
        return runner

    def _channels_last_model(self):
        """One channels-last copy of the network, shared by the modes on trial (eager keeps the original)."""
        import torch

        if self._channels_last_copy is None:
            self._channels_last_copy = copy.deepcopy(self.model).to(memory_format=torch.channels_last)
        return self._channels_last_copy

    # --- the device's numerics ---------------------------------------------------------------------
    def _numerics(self):
        import torch

        if self.device.type != "cuda":
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        # cuDNN autotunes a planned job's fixed batch shape; TF32 only when asked.
        stack.enter_context(torch.backends.cudnn.flags(enabled=True, benchmark=self._phase != "planless",
                                                       deterministic=False, allow_tf32=self.tf32))
        stack.enter_context(_matmul_tf32(self.tf32))
        return stack

    def _clock(self) -> float:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def report(self) -> str:
        """One line: the mode in use and what became of the others."""
        others = "; ".join(f"{t.mode}: {t.note or 'verified'}" + ("" if t.error is None else f" (error {t.error:.2g})")
                           for t in self.trials.values() if t.mode != self.chosen)
        return f"network execution: {self.chosen or 'being chosen'}" + (f" ({others})" if others else "")


class _Runner:
    """One way to run the network: the module as given (eager), or a channels-last copy of it run
    directly, or as a graph traced and frozen, or compiled, for one input shape."""

    def __init__(self, mode, module, *, example=None, logits=False):
        import torch

        self.mode, self.module, self.logits = mode, module, logits
        self.channels_last = mode != "eager"
        if mode == "frozen":
            entry = _Entry(module, logits).eval()
            # Input checks are traced at this shape, the only one the graph serves.
            traced = torch.jit.trace(entry, example.contiguous(memory_format=torch.channels_last), check_trace=False)
            self.graph = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
        elif mode == "compiled":
            self.graph = torch.compile(_Entry(module, logits).eval(), dynamic=False)

    def __call__(self, images, logits: bool):
        import torch

        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.mode in GRAPH_MODES:
            out = self.graph(images)
            return (out[0], out[1]) if self.logits else (out, None)
        if logits:
            return self.module.features_and_logits(images)
        return self.module(images), None


def _entry_module():
    import torch

    class Entry(torch.nn.Module):
        """The network's features (or features and logits) as one forward, for tracing and compiling."""

        def __init__(self, model, logits: bool):
            super().__init__()
            self.model, self.logits = model, logits

        def forward(self, images):
            return self.model.features_and_logits(images) if self.logits else self.model(images)

    return Entry


def _Entry(model, logits):  # noqa: N802 - builds the nn.Module subclass lazily (torch is imported late)
    return _entry_module()(model, logits)


def _relative_error(result, reference) -> float:
    worst = 0.0
    for mine, theirs in zip(result, reference):
        if theirs is None:
            continue
        if mine is None or mine.shape != theirs.shape:
            raise ValueError(f"output of shape {None if mine is None else tuple(mine.shape)}, eager's "
                             f"{tuple(theirs.shape)}")
        mine, theirs = mine.double(), theirs.double()
        scale = float(theirs.norm())
        difference = float((mine - theirs).norm())
        worst = max(worst, difference / scale if scale > 0 else difference)
    return worst if worst == worst else float("inf")  # NaN is never within tolerance


@contextlib.contextmanager
def _matmul_tf32(allowed: bool):
    import torch

    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0][:200]
