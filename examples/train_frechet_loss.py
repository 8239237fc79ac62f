"""Train a tiny generator with fastfid's FrechetLoss and watch the Fréchet distance fall.

The "real" data is a mixture of four Gaussians in 8 dimensions and the features are the samples
themselves (in practice they would come from a frozen network such as Inception or DINOv2). The
loss is the FD between a population of 4096 generated features (the current batch of 256 plus the
newest earlier ones, kept detached in a queue) and the real data's statistics; only the batch
carries gradient.

    python examples/train_frechet_loss.py [--steps 600]
"""

from __future__ import annotations

import argparse

import torch

import fastfid
from fastfid.loss import FrechetLoss

DIM, NOISE_DIM, BATCH, POPULATION = 8, 16, 256, 4096


def real_samples(n: int, generator: torch.Generator) -> torch.Tensor:
    """A mixture of four Gaussians with different means and scales."""
    centres = torch.tensor([[2.0] * DIM, [-2.0] * DIM, [2.0, -2.0] * (DIM // 2), [-1.0, 3.0] * (DIM // 2)])
    scales = torch.tensor([0.5, 0.8, 0.3, 1.0])
    component = torch.randint(0, 4, (n,), generator=generator)
    return centres[component] + scales[component, None] * torch.randn(n, DIM, generator=generator)


def fresh_fd(model: torch.nn.Module, reference: fastfid.FeatureStats, generator: torch.Generator) -> float:
    """FD of 20,000 new samples against the reference: an independent check of the training loss."""
    with torch.no_grad():
        samples = model(torch.randn(20_000, NOISE_DIM, generator=generator))
    return fastfid.fid(fastfid.FeatureStats.from_features(samples), reference)


def main(steps: int = 600, seed: int = 0, log_every: int = 50) -> tuple[float, float]:
    """Trains; returns the fresh FD before and after."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    reference = fastfid.FeatureStats.from_features(real_samples(50_000, generator))
    model = torch.nn.Sequential(torch.nn.Linear(NOISE_DIM, 128), torch.nn.ReLU(), torch.nn.Linear(128, 128),
                                torch.nn.ReLU(), torch.nn.Linear(128, DIM))
    criterion = FrechetLoss(reference, population=POPULATION)
    with torch.no_grad():  # start with a full population
        criterion.fill(model(torch.randn(POPULATION, NOISE_DIM, generator=generator)))
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)

    before = fresh_fd(model, reference, generator)
    print(f"step     0: FD of fresh samples {before:.4f}")
    for step in range(1, steps + 1):
        loss = criterion(model(torch.randn(BATCH, NOISE_DIM, generator=generator)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % log_every == 0:
            print(f"step {step:5d}: population FD {criterion.last_distances[0]:.4f}")
    after = fresh_fd(model, reference, generator)
    print(f"step {steps:5d}: FD of fresh samples {after:.4f} (was {before:.4f})")
    return before, after


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    main(arguments.steps, arguments.seed)
