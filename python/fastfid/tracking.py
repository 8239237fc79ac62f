"""Log an FID to the trackers people use, each in its own idiom:

* MLflow (an ``mlflow.ActiveRun``): metrics (``fid``, its standard error and interval, the sample
  counts), params (feature space, reference hash, method, fastfid version) and the generated
  statistics file as an artifact;
* Weights & Biases (a ``wandb`` run): the numbers in the summary (and as a logged step), the
  provenance in the config;
* TensorBoard (a ``SummaryWriter`` of torch or tensorboardX): scalars, and the provenance as text.

Each library is imported only by the code that uses it; fastfid depends on none of them.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastfid._version import __version__
from fastfid.stats import FeatureStats

TRACKERS = ("mlflow", "wandb", "tensorboard")


@dataclass
class Record:
    """What is logged: the numbers and where they came from."""

    fid: float
    standard_error: float | None = None
    interval: tuple[float, float] | None = None
    feature_space: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    reference_sha256: str | None = None
    method: str | None = None

    def metrics(self, name: str) -> dict[str, float]:
        values = {name: self.fid}
        if self.standard_error is not None:
            values[f"{name}_standard_error"] = self.standard_error
        if self.interval is not None:
            values[f"{name}_interval_low"], values[f"{name}_interval_high"] = self.interval
        values.update({f"{name}_count_{side}": float(count) for side, count in self.counts.items()})
        return values

    def params(self) -> dict[str, str]:
        params = {"feature_space": self.feature_space, "reference_sha256": self.reference_sha256,
                  "method": self.method, "fastfid_version": __version__}
        return {key: value for key, value in params.items() if value is not None}


def record_of(result: Any, *, feature_space: str | None = None, reference_sha256: str | None = None) -> Record:
    """A :class:`Record` from what fastfid returns: FIDResult, FIDWithError, FrechetResult, an
    evaluation of the service (a dict), or a number."""
    if isinstance(result, dict):  # the service's evaluation record
        interval = None if result.get("interval_low") is None else (result["interval_low"], result["interval_high"])
        return Record(result["fid"], result.get("standard_error"), interval,
                      feature_space or result.get("feature_space"),
                      {"generated": result["count"]} if result.get("count") else {},
                      reference_sha256 or result.get("reference_sha256"), result.get("input_kind"))
    values: dict[str, Any] = result.as_dict() if hasattr(result, "as_dict") else {"fid": float(result)}
    interval = values.get("interval")
    counts = dict(zip(("generated", "reference"), values.get("counts") or ()))
    error = values.get("standard_error")
    record = Record(float(values["fid"]), None if error is None else float(error),
                    None if interval is None else (float(interval[0]), float(interval[1])),
                    feature_space or values.get("feature_space"),
                    {side: count for side, count in counts.items() if count is not None}, reference_sha256,
                    values.get("method"))
    statistics = getattr(result, "statistics", None)
    if record.reference_sha256 is None and statistics is not None:
        record.reference_sha256 = statistics[1].state_sha256()
    return record


def log(result: Any, run: Any, *, name: str = "fid", step: int | None = None, statistics=None,
        feature_space: str | None = None, reference_sha256: str | None = None) -> Record:
    """Log ``result`` (see :func:`record_of`) to ``run``: an ``mlflow.ActiveRun``, a wandb run or a
    TensorBoard ``SummaryWriter``. ``statistics`` (FeatureStats or a .npz path; by default the
    generated side of an FIDResult) becomes an MLflow artifact. Returns what was logged."""
    record = record_of(result, feature_space=feature_space, reference_sha256=reference_sha256)
    if statistics is None and getattr(result, "statistics", None) is not None:
        statistics = result.statistics[0]
    module = type(run).__module__
    if module.startswith("mlflow"):
        _log_mlflow(record, run, name, step, statistics)
    elif module.startswith("wandb"):
        _log_wandb(record, run, name, step)
    elif "tensorboard" in module:
        _log_tensorboard(record, run, name, step)
    else:
        raise TypeError(f"cannot log to a {type(run).__qualname__}: give an mlflow.ActiveRun, a wandb run or a "
                        "TensorBoard SummaryWriter")
    return record


def _log_mlflow(record: Record, run, name: str, step: int | None, statistics) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    run_id = run.info.run_id
    for metric, number in record.metrics(name).items():
        client.log_metric(run_id, metric, number, step=step)
    existing = client.get_run(run_id).data.params
    for param, text in record.params().items():
        if existing.get(param) != text:  # MLflow's params are write-once: a changed one is an error
            client.log_param(run_id, param, text)
    if statistics is not None:
        _with_file(statistics, lambda path: client.log_artifact(run_id, str(path), artifact_path="fastfid"))


def _with_file(statistics, action) -> None:
    if isinstance(statistics, (str, os.PathLike)):
        action(Path(statistics))
        return
    if not isinstance(statistics, FeatureStats):
        raise TypeError(f"statistics must be FeatureStats or a .npz path, got {type(statistics).__name__}")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "generated_stats.npz"
        statistics.save(path)
        action(path)


def _log_wandb(record: Record, run, name: str, step: int | None) -> None:
    metrics = record.metrics(name)
    run.log(metrics, step=step)
    for key, value in metrics.items():
        run.summary[key] = value
    run.config.update({f"fastfid/{key}": value for key, value in record.params().items()}, allow_val_change=True)


def _log_tensorboard(record: Record, writer, name: str, step: int | None) -> None:
    for key, value in record.metrics(name).items():
        writer.add_scalar(key, value, global_step=step)
    lines = "\n".join(f"- {key}: `{value}`" for key, value in record.params().items())
    writer.add_text(f"{name}/provenance", lines, global_step=step)
    writer.flush()


def open_run(tracker: str, *, directory: str | os.PathLike | None = None) -> tuple[Any, Any]:
    """A run of ``tracker`` for the command line's ``--log``: MLflow's active (or a new) run under
    $MLFLOW_TRACKING_URI, a wandb run as $WANDB_* configure it, a SummaryWriter under ``directory``
    (default ./runs). Returns (run, close)."""
    if tracker == "mlflow":
        import mlflow

        active = mlflow.active_run()
        return (active, lambda: None) if active else (mlflow.start_run(), mlflow.end_run)
    if tracker == "wandb":
        import wandb

        wandb_run = wandb.init(job_type="fid")
        return wandb_run, wandb_run.finish
    if tracker == "tensorboard":
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise ImportError("--log tensorboard needs torch and tensorboard: pip install tensorboard") from error
        writer = SummaryWriter(log_dir=None if directory is None else str(directory))
        return writer, writer.close
    raise ValueError(f"unknown tracker {tracker!r}; choose one of {', '.join(TRACKERS)}")
