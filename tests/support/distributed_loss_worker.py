"""Run by test_loss.py under torch.distributed (gloo): one rank of FrechetLoss. Reads the inputs,
writes this rank's loss and gradient. Usage: python -m torch.distributed.run ... worker.py DIR"""

import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

import fastfid
from fastfid import loss

folder = Path(sys.argv[1])
dist.init_process_group("gloo")
rank = dist.get_rank()
inputs = np.load(folder / "inputs.npz")
reference = fastfid.FeatureStats.load(folder / "reference.npz")
criterion = loss.FrechetLoss(reference, population=int(inputs["population"]))
criterion.fill(torch.from_numpy(inputs[f"older_{rank}"]))
batch = torch.from_numpy(inputs[f"batch_{rank}"]).requires_grad_(True)
value = criterion(batch)
value.backward()
np.savez(folder / f"rank_{rank}.npz", value=value.item(), grad=batch.grad.numpy(),
         queue=criterion._queues[0].contents().numpy())
dist.destroy_process_group()
