"""Small cases of every kernel on the GPU, for compute-sanitizer (memcheck, racecheck, synccheck):
sizes that are not tile multiples, every input type, row slices, a NaN batch, a merge, the distance
with its roots. Exits non-zero on a wrong number."""

import sys

import numpy as np
import torch

import fastfid
from fastfid import _device

torch.manual_seed(0)
device = torch.device("cuda", 0)
x = torch.relu(torch.randn(301, 70, dtype=torch.float64, device=device) + 0.3)
host = fastfid.FeatureStats.from_features(x.cpu().numpy())
for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
    stats = fastfid.FeatureStats(70, device=device)
    for part in torch.split(x.to(dtype), 120):
        stats.update(part)
    poisoned = x[:9].to(dtype).clone()
    poisoned[2, 5] = float("inf")
    stats.update(poisoned)
    try:
        stats.count
    except ValueError:
        pass
    else:
        sys.exit("a NaN/Inf batch was not reported")
merged = fastfid.FeatureStats.from_features(x[:100]) + fastfid.FeatureStats.from_features(x[100:])
if not np.allclose(merged.cov.cpu().numpy(), host.cov, rtol=0, atol=1e-12 * np.abs(host.cov).max()):
    sys.exit("merged statistics differ from the CPU core's")
y = torch.relu(torch.randn(250, 70, dtype=torch.float64, device=device) + 0.5)
other = fastfid.FeatureStats.from_features(y)
value = fastfid.fid(merged, other)
expected = fastfid.fid(host, fastfid.FeatureStats.from_features(y.cpu().numpy()))
if abs(value - expected) > 1e-9 * expected:
    sys.exit(f"FD {value} differs from the CPU core's {expected}")
sigma1, sigma2 = merged.cov, other.cov
roots = _device.frechet(None, sigma1, None, sigma2, _device.kernels_for(device), return_roots=True)
product = (sigma1 @ sigma2).cpu().numpy()
root = roots.sqrt.cpu().numpy()
if not np.allclose(root @ root, product, rtol=0, atol=1e-9 * np.abs(product).max()):
    sys.exit("the square root does not square to Σ₁Σ₂")
torch.cuda.synchronize()
print("sanitized run: all numbers right")
