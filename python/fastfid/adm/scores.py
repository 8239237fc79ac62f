"""ADM's Inception Score, exactly as its evaluator computes it, which differs from fastfid's usual
one (``fastfid.inception_score``: float64, N split into ``splits`` near-equal parts, mean and std):

* the class probabilities are a float32 softmax of the logits without the bias;
* the splits are contiguous chunks of 5,000 rows, the last one shorter, unshuffled (50,000 images:
  10 splits of 5,000; 12,000: 5,000, 5,000 and 2,000);
* each split's score is exp(mean over rows of Σ_c p (log p − log p̄)), in float32;
* the result is the mean over splits, without a spread.
"""

from __future__ import annotations

import numpy as np

SPLIT_SIZE = 5000


def inception_score(logits, split_size: int = SPLIT_SIZE) -> float:
    """ADM's Inception Score of (N, classes) logits (see the module)."""
    import torch

    logits = np.asarray(logits)
    if logits.ndim != 2 or logits.shape[0] == 0 or logits.shape[1] < 2:
        raise ValueError(f"logits must be (N, classes) with N ≥ 1 and at least 2 classes, got shape {logits.shape}")
    if not np.isfinite(logits).all():
        raise ValueError("the logits contain NaN or Inf")
    if not (isinstance(split_size, int) and split_size >= 1):
        raise ValueError(f"split_size must be a positive integer, got {split_size!r}")
    probabilities = torch.softmax(torch.from_numpy(logits.astype(np.float32)), dim=1)
    scores = []
    for start in range(0, probabilities.shape[0], split_size):
        part = probabilities[start:start + split_size]
        divergence = part * (torch.log(part) - torch.log(part.mean(dim=0, keepdim=True)))
        scores.append(torch.exp(divergence.sum(dim=1).mean()))
    return float(torch.stack(scores).mean())
