"""fastfid.tracking against the real trackers in their local modes: MLflow's file store, W&B
offline, a TensorBoard event file read back; and `--log` on the command line."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

import fastfid
from fastfid import tracking
from fastfid.uncertainty import fid_with_error
from support.service import features, saved, stats_of

D = 12


@pytest.fixture
def result(rng):
    return fastfid.compute_fid(stats_of(rng, 200, D, shift=0.2), stats_of(rng, 300, D), progress=False)


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps its file store behind this switch
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    mlflow.set_tracking_uri((tmp_path / "mlruns").as_uri())
    yield mlflow
    mlflow.set_tracking_uri(None)


def test_mlflow_metrics_params_and_artifact(mlflow_store, result):
    mlflow = mlflow_store
    with mlflow.start_run() as run:
        tracking.log(result, run, step=3)
    client = mlflow.MlflowClient()
    data = client.get_run(run.info.run_id).data
    assert data.metrics["fid"] == result.value
    assert data.metrics["fid_count_generated"] == 200 and data.metrics["fid_count_reference"] == 300
    assert data.params["feature_space"] == "test-space" and data.params["method"] == "eigh"
    assert data.params["reference_sha256"] == result.statistics[1].state_sha256()
    assert [m.step for m in client.get_metric_history(run.info.run_id, "fid")] == [3]
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "fastfid")]
    assert artifacts == ["fastfid/generated_stats.npz"]
    local = client.download_artifacts(run.info.run_id, artifacts[0])
    assert fastfid.FeatureStats.load(local).state_sha256() == result.statistics[0].state_sha256()


def test_error_bars_are_logged_too(mlflow_store, rng):
    x = features(rng, 400, D)
    reference = stats_of(rng, 300, D)
    with_error = fid_with_error(x, reference, groups=10)
    with mlflow_store.start_run() as run:
        logged = tracking.log(with_error, run, feature_space="test-space")
    data = mlflow_store.MlflowClient().get_run(run.info.run_id).data
    assert data.metrics["fid_standard_error"] == with_error.standard_error == logged.standard_error
    assert (data.metrics["fid_interval_low"], data.metrics["fid_interval_high"]) == with_error.interval


def test_wandb_offline_summary_and_config(tmp_path, monkeypatch, result):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = wandb.init(project="fastfid-test", dir=str(tmp_path))
    try:
        tracking.log(result, run, step=1)
        assert run.summary["fid"] == result.value
        assert run.config["fastfid/feature_space"] == "test-space"
    finally:
        run.finish()
    # Read back what the offline run wrote: its transaction log holds each item's key and JSON value
    # (wandb ships no reader of it any more; the file is small enough to sit in one block). wandb's
    # service process may still be writing it when finish() returns (seen on a loaded CI machine:
    # 7 bytes), so it is read until complete, for at most 30 s.
    texts = ("fid_count_generated", json.dumps(result.value), "fastfid/reference_sha256",
             json.dumps(result.statistics[1].state_sha256()))
    deadline = time.monotonic() + 30
    while True:
        logs = list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
        written = logs[0].read_bytes() if logs else b""
        missing = [text for text in texts if text.encode() not in written]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not missing, missing


def test_tensorboard_scalars_read_back(tmp_path, result):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path))
    tracking.log(result, writer, step=5)
    writer.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    (scalar,) = events.Scalars("fid")
    assert scalar.step == 5 and scalar.value == pytest.approx(result.value, rel=1e-7)  # stored as float32
    assert {"fid_count_generated", "fid_count_reference"} <= set(events.Tags()["scalars"])


def test_unknown_run_is_refused(result):
    with pytest.raises(TypeError, match="cannot log to a dict"):
        tracking.log(result, {})


def test_log_flag_on_the_command_line(mlflow_store, tmp_path, rng):
    generated, reference = saved(stats_of(rng, 100, D), tmp_path / "g.npz"), saved(stats_of(rng, 100, D),
                                                                                   tmp_path / "r.npz")
    done = subprocess.run([sys.executable, "-m", "fastfid", "fid", str(generated), str(reference), "--log", "mlflow",
                           "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    value = json.loads(done.stdout)["fid"]
    (run,) = mlflow_store.search_runs(output_format="list", search_all_experiments=True)
    assert run.data.metrics["fid"] == value and "logged to mlflow" in done.stderr
    assert np.isfinite(value)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Lightning's advice on workers, GPUs and loggers
@pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")  # Lightning 2.6 on torch 2.13's pytree
def test_lightning_logs_fid_as_it_logs_torchmetrics_metrics(tmp_path, rng):
    """``self.log("val_fid", self.fid)`` in a LightningModule: Lightning computes the FID of the
    whole epoch and resets it, as it does for torchmetrics' metrics."""
    torch = pytest.importorskip("torch")
    lightning = pytest.importorskip("pytorch_lightning")
    real, fake = features(rng, 120, D), features(rng, 90, D, shift=0.3)

    class Identity(torch.nn.Module):  # a feature "network" of our own: FID takes (N, d) batches as given
        def forward(self, x):
            return x

    class Model(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.fid = fastfid.FID(feature=Identity(), reset_real_features=False)
            self.layer = torch.nn.Linear(1, 1)

        def validation_step(self, batch, index):
            generated, reference = batch
            self.fid.update(reference, real=True)
            self.fid.update(generated, real=False)
            self.log("val_fid", self.fid)

    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.from_numpy(fake), torch.from_numpy(real[:90])), batch_size=30)
    model = Model()
    trainer = lightning.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                enable_model_summary=False, default_root_dir=str(tmp_path), accelerator="cpu")
    (logged,) = trainer.validate(model, loader)
    expected = fastfid.fid(fastfid.FeatureStats.from_features(real[:90]), fastfid.FeatureStats.from_features(fake))
    assert logged["val_fid"] == pytest.approx(expected, rel=1e-6)  # Lightning reports float32
    assert model.fid._fake is None and model.fid._real is not None  # reset at the epoch's end


def test_fid_falls_back_to_a_module_when_torchmetrics_fails_to_import():
    """A torchvision built for another torch breaks `import torchmetrics` with a RuntimeError; then
    fastfid.FID stays usable as a torch.nn.Module, and says so once."""
    pytest.importorskip("torch")
    script = """
import sys, warnings
class Broken:
    def find_spec(self, name, path=None, target=None):
        if name == "torchmetrics":
            raise RuntimeError("operator torchvision::nms does not exist")
sys.meta_path.insert(0, Broken())
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    from fastfid.fid_metric import FID
import torch
assert FID.__mro__[1] is torch.nn.Module, FID.__mro__
assert any("torchmetrics is installed but cannot load" in str(w.message) for w in caught), caught
print("fallback ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0 and "fallback ok" in done.stdout, done.stderr
