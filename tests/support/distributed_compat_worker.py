"""Run by test_compat_torchmetrics.py under torch.distributed (gloo): one rank of
fastfid.compat.torchmetrics.FrechetInceptionDistance. Usage: worker.py DIR; reads DIR/inputs.npz,
writes DIR/rank_<r>.npz."""

import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.peers import declare_torchvision_ops  # noqa: E402

declare_torchvision_ops()  # torchmetrics imports torchvision (see peers.py)
from fastfid.compat import _packed  # noqa: E402
from fastfid.compat.torchmetrics import FrechetInceptionDistance  # noqa: E402


class Features(torch.nn.Module):
    num_features = 6

    def forward(self, x):
        return x


folder = Path(sys.argv[1])
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
inputs = np.load(folder / "inputs.npz")
real, fake = (np.array_split(inputs[name], world)[rank] for name in ("real", "fake"))
metric = FrechetInceptionDistance(feature=Features())
for part in np.array_split(real, 3):
    metric.update(torch.from_numpy(part), real=True)
metric.update(torch.from_numpy(fake), real=False)
value = float(metric.compute())
metric.sync()
merged = _packed.to_stats(metric.real_stats)
np.savez(folder / f"rank_{rank}.npz", fid=value, count=merged.count, mean=merged.mean, cov=merged.cov)
dist.destroy_process_group()
