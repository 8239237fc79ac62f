"""torch.distributed for statistics: the exact merge across ranks, and the command line's set-up
under ``torchrun``.

The merge is two sum all-reduces. The first gives the total count and mean c. Each rank then
re-centres its co-moment on c, C_r + n_r (μ_r − c)(μ_r − c)ᵀ, which sums to the co-moment about c;
with s = Σ n_r (μ_r − c) (≈ 0), μ = c + s/n and C = Σ(...) − s sᵀ/n. This is Chan's merge of all
ranks at once: exact up to rounding, and nothing is accumulated as raw sums of squares.
"""

from __future__ import annotations

import os


def _dist():
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("torch.distributed is not initialised: call torch.distributed.init_process_group first "
                           "(torchrun sets up its environment)")
    return dist


def communication_device(group=None):
    """Where tensors must live for this group's backend: the current CUDA device for NCCL, else the CPU."""
    import torch

    if _dist().get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_agree(ok: bool, group=None) -> bool:
    """True on every rank if ``ok`` is true on every rank. Ranks call it before a collective that a failed
    rank would never reach, so that a failure anywhere ends every rank instead of hanging the others."""
    return max_across_ranks(0 if ok else 1, group) == 0


def max_across_ranks(value: int, group=None) -> int:
    import torch

    tensor = torch.tensor([int(value)], dtype=torch.int64, device=communication_device(group))
    _dist().all_reduce(tensor, op=_dist().ReduceOp.MAX, group=group)
    return int(tensor.item())


def all_reduce_stats(stats, group=None) -> None:
    """Replace ``stats`` on every rank by the exact merge of all ranks' statistics (see the module doc)."""
    import torch

    dist = _dist()
    if dist.get_world_size(group) == 1:
        return
    device = communication_device(group)
    problem = None
    try:
        stats._require_exact("all-reduce")
        count = stats.count  # reports NaN/Inf batches left out on a device
    except ValueError as error:
        problem = error
    # Dims must agree before d × d buffers are exchanged: a mismatch would hang or corrupt the collective.
    check = torch.tensor([1 if problem else 0, stats.dim, -stats.dim], dtype=torch.int64, device=device)
    dist.all_reduce(check, op=dist.ReduceOp.MAX, group=group)
    if problem is not None:
        raise problem
    if int(check[0]):
        raise RuntimeError("another rank's statistics could not be all-reduced (see its error)")
    if int(check[1]) != -int(check[2]):
        raise ValueError(f"the ranks' statistics have different dims ({-int(check[2])} to {int(check[1])})")

    dim = stats.dim
    if count:
        mean = torch.as_tensor(stats.mean, dtype=torch.float64).to(device)
        comoment = torch.as_tensor(stats.comoment, dtype=torch.float64).to(device)
    else:
        mean = torch.zeros(dim, dtype=torch.float64, device=device)
        comoment = torch.zeros(dim, dim, dtype=torch.float64, device=device)

    head = torch.cat([torch.tensor([float(count)], dtype=torch.float64, device=device), mean * count])
    dist.all_reduce(head, group=group)
    total = int(round(head[0].item()))
    if total == 0:
        raise ValueError("no rank has any samples")
    centre = head[1:] / total
    offset = (mean - centre) if count else torch.zeros_like(mean)
    comoment += torch.outer(offset, offset) * count
    body = torch.cat([comoment.reshape(-1), offset * count])
    dist.all_reduce(body, group=group)
    shift = body[dim * dim:]
    merged_mean = centre + shift / total
    merged_comoment = body[:dim * dim].reshape(dim, dim) - torch.outer(shift, shift) / total
    merged_comoment = (merged_comoment + merged_comoment.T) / 2  # summation order can break exact symmetry
    if stats._device_state is None:
        stats._set_exact_state(total, merged_mean.cpu().numpy(), merged_comoment.cpu().numpy())
    else:
        stats._set_exact_state(total, merged_mean.to(stats.device), merged_comoment.to(stats.device))


def rank_and_world(group=None) -> tuple[int, int]:
    dist = _dist()
    return dist.get_rank(group), dist.get_world_size(group)


def sum_across_ranks(array, group=None):
    """The element-wise float64 sum of a numpy array over all ranks (every rank gets it)."""
    import numpy as np
    import torch

    tensor = torch.as_tensor(np.asarray(array, dtype=np.float64)).to(communication_device(group))
    _dist().all_reduce(tensor, group=group)
    return tensor.cpu().numpy()


def concatenate_lists(items: list, group=None) -> list:
    """Every rank's list, joined in rank order (every rank gets it)."""
    gathered: list = [None] * _dist().get_world_size(group)
    _dist().all_gather_object(gathered, items, group=group)
    return [item for part in gathered for item in part]


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup_from_environment(device=None):
    """Under torchrun: pick this rank's device (``cuda:LOCAL_RANK`` when CUDA is there and no device is
    given), initialise the default process group (NCCL for CUDA, gloo otherwise); returns the device."""
    import torch
    import torch.distributed as dist

    if device is None:
        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def shard_range(total: int, index: int, count: int) -> tuple[int, int]:
    """Items [start, stop) of shard ``index`` of ``count``: contiguous, sizes differ by at most one."""
    if not (0 <= index < count):
        raise ValueError(f"shard {index}/{count}: the index must be in 0 … {count - 1}")
    return total * index // count, total * (index + 1) // count
