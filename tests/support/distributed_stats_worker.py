"""Run by test_distributed.py under torch.distributed (gloo): one rank. Usage: worker.py DIR.
Reads DIR/inputs.npz, writes DIR/rank_<r>.npz with what this rank ended with."""

import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

import fastfid

folder = Path(sys.argv[1])
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
inputs = np.load(folder / "inputs.npz")
bounds = inputs["bounds"]
rows = inputs["features"][bounds[rank]:bounds[rank + 1]]
out = {}

# 1. The exact merge of every rank's statistics (this rank's share may be empty).
stats = fastfid.FeatureStats(rows.shape[1])
for first in range(0, len(rows), 7):
    stats.update(rows[first:first + 7])
out["count"], out["mean"], out["cov"] = stats.all_reduce().count, stats.mean, stats.cov

# 2. Refusals reach every rank instead of hanging the others: different dims, then a count-less summary.
try:
    fastfid.FeatureStats.from_features(np.ones((3, 2 + rank)) * np.arange(3)[:, None]).all_reduce()
except ValueError as error:
    out["dims_error"] = str(error)
summary = fastfid.FeatureStats.from_mean_cov(np.zeros(2), np.eye(2)) if rank == 1 else \
    fastfid.FeatureStats.from_features(np.arange(6.0).reshape(3, 2) ** 2)
try:
    summary.all_reduce()
except (ValueError, RuntimeError) as error:
    out["summary_error"] = f"{type(error).__name__}: {error}"

# 3. The torchmetrics-style class: each rank updates its share; compute() merges all ranks.
torch.manual_seed(0)
metric = fastfid.FID(feature=torch.nn.Linear(rows.shape[1], 5, dtype=torch.float64))
if len(rows):
    metric.update(torch.from_numpy(rows), real=True)
metric.update(torch.from_numpy(inputs["fake"][rank::world]), real=False)
out["fid"] = metric.compute().item()

# 4. Statistics held on a device (here the CUDA kernels under the CPU emulation, on CPU tensors).
from fastfid import _cuda, _device  # noqa: E402

kernels = _device.DeviceKernels(_cuda.emulated_backend(), 0)
on_device = fastfid.FeatureStats._from_device_state(_device.DeviceStats(rows.shape[1], torch.device("cpu"), kernels))
if len(rows):
    on_device.update(torch.from_numpy(rows))
on_device.all_reduce()
out["device_count"], out["device_cov"] = on_device.count, on_device.cov.numpy()

np.savez(folder / f"rank_{rank}.npz", **out)
dist.destroy_process_group()
