"""The Fréchet distance as a training loss.

* :func:`frechet_distance` — FD between two Gaussians, differentiable in torch. Its backward is the
  closed form ∂FD/∂μ₁ = 2(μ₁ − μ₂), ∂FD/∂Σ₁ = I − T, ∂FD/∂Σ₂ = I − T⁻¹, with T the optimal-transport
  map from N(0, Σ₁) to N(0, Σ₂) (T Σ₁ T = Σ₂), computed by the native routines: the pivoted factor and
  an eigen decomposition on the CPU, Newton–Schulz's M^−½ (M = Σ₁Σ₂, T = Σ₂ M^−½) on CUDA. Nothing
  is differentiated through an eigen decomposition, so near-degenerate spectra do no harm.
* :class:`FrechetLoss` — FD of a large population of generated features (e.g. 50,000) against
  reference statistics, where only the current batch carries gradient: a circular queue of
  detached features with float64 running statistics (exact add and evict).
* :class:`SpaceFrechetLoss` — the same from images, through the networks of named representation
  spaces (DINOv2, CLIP, ...; gradients pass through each network and its resize).

torch is required by this module (``pip install torch``).
"""

from __future__ import annotations

import warnings
from typing import Any
from dataclasses import dataclass

import numpy as np
import torch

from fastfid import _device
from fastfid._native import core as _core

__all__ = ["FrechetLoss", "SpaceFrechetLoss", "frechet_distance"]


# --- a differentiable FD -------------------------------------------------------------------------
def _symmetric(x: torch.Tensor) -> torch.Tensor:
    """The symmetric part: FD is a function of symmetric Σ, so its gradient is too."""
    return 0.5 * (x + x.T)


def _maps_on_cpu(sigma1, sigma2, forward: bool, inverse: bool):
    """(tr √(Σ₁Σ₂), T or None, T⁻¹ or None) by the native exact route (float64 CPU tensors)."""
    s1, s2 = sigma1.numpy(), sigma2.numpy()
    _core.validate_covariance(s1, "sigma1")
    _core.validate_covariance(s2, "sigma2")
    factor = _core.PsdFactor(s1, "sigma1")
    if not (forward or inverse):
        return _core.trace_sqrt_product(factor, s2)["trace_sqrt"], None, None
    trace, t, t_inverse = _core.transport_maps(factor, s2, forward=forward, inverse=inverse)
    return trace, *(None if a is None else torch.from_numpy(a) for a in (t, t_inverse))


def _maps_by_newton_schulz(sigma1, sigma2, kernels, forward: bool, inverse: bool):
    """The same from Newton–Schulz on M = Σ₁Σ₂ on the tensors' device (kernels, or torch ops if None):
    T = Σ₂ M^−½ and T⁻¹ = Σ₁ (M^−½)ᵀ."""
    roots = _device.frechet(None, sigma1, None, sigma2, kernels, return_roots=forward or inverse)
    if not roots.converged:
        warnings.warn(f"Newton–Schulz stopped after {roots.iterations} iterations with a relative step of "
                      f"{roots.step:.2e}: the loss and its gradient may be inaccurate", RuntimeWarning, stacklevel=4)
    t = _symmetric(sigma2 @ roots.inverse_sqrt) if forward else None
    t_inverse = _symmetric(sigma1 @ roots.inverse_sqrt.T) if inverse else None
    return roots.trace_sqrt, t, t_inverse


class _FrechetDistance(torch.autograd.Function):
    @staticmethod
    def forward(ctx, route, mu1, sigma1, mu2, sigma2):
        m1, m2 = mu1.detach().to(torch.float64), mu2.detach().to(torch.float64)
        s1 = _symmetric(sigma1.detach().to(torch.float64)).contiguous()
        s2 = _symmetric(sigma2.detach().to(torch.float64)).contiguous()
        forward, inverse = ctx.needs_input_grad[2], ctx.needs_input_grad[4]
        if route == "exact":
            trace, t, t_inverse = _maps_on_cpu(s1, s2, forward, inverse)
        else:
            trace, t, t_inverse = _maps_by_newton_schulz(s1, s2, route, forward, inverse)
        diff = m1 - m2
        value = diff @ diff + s1.trace() + s2.trace() - 2.0 * trace
        ctx.save_for_backward(diff, t, t_inverse)
        ctx.dtypes = (mu1.dtype, sigma1.dtype, mu2.dtype, sigma2.dtype)
        out_dtype = torch.promote_types(torch.promote_types(mu1.dtype, sigma1.dtype),
                                        torch.promote_types(mu2.dtype, sigma2.dtype))
        return value.to(out_dtype)

    @staticmethod
    def backward(ctx, grad):
        diff, t, t_inverse = ctx.saved_tensors
        g = grad.to(torch.float64)
        grads = [None] * 4
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[3]:
            grads[0], grads[2] = 2.0 * g * diff, -2.0 * g * diff
        if t is not None:
            grads[1] = g * (torch.eye(len(diff), dtype=torch.float64, device=diff.device) - t)
        if t_inverse is not None:
            grads[3] = g * (torch.eye(len(diff), dtype=torch.float64, device=diff.device) - t_inverse)
        grads = [None if value is None or not needed else value.to(dtype)
                 for value, needed, dtype in zip(grads, ctx.needs_input_grad[1:], ctx.dtypes)]
        return (None, *grads)


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> torch.Tensor:
    """FD = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr √(Σ₁Σ₂) as a differentiable 0-d tensor.

    Float32 or float64 tensors on the CPU or a CUDA device (computed in float64, returned in the
    inputs' promoted dtype). A covariance that needs a gradient must be nonsingular (its population
    needs more samples than dimensions): the gradient I − T is undefined otherwise.
    """
    mu1, sigma1, mu2, sigma2 = _checked(mu1, sigma1, mu2, sigma2)
    return _FrechetDistance.apply(_route_for(sigma1.device), mu1, sigma1, mu2, sigma2)


def _route_for(device):
    return _device.kernels_for(device) if _device.takes_device_path(device) else "exact"


def _checked(mu1, sigma1, mu2, sigma2):
    for name, x in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch tensor, got {type(x).__name__}")
        if not x.is_floating_point() or x.is_complex():
            raise TypeError(f"{name} must be real floating point, got {x.dtype}")
    d = mu1.shape[0] if mu1.dim() == 1 else -1
    if mu1.dim() != 1 or mu2.shape != mu1.shape:
        raise ValueError(f"mu1 and mu2 must be vectors of one length, got {tuple(mu1.shape)} and {tuple(mu2.shape)}")
    for name, sigma in (("sigma1", sigma1), ("sigma2", sigma2)):
        if sigma.shape != (d, d):
            raise ValueError(f"{name} has shape {tuple(sigma.shape)}, expected ({d}, {d}) to match the means")
    devices = {x.device for x in (mu1, sigma1, mu2, sigma2)}
    if len(devices) != 1:
        raise ValueError(f"the inputs are on different devices: {sorted(map(str, devices))}")
    for name, x in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not bool(torch.isfinite(x.detach()).all()):
            raise ValueError(f"{name} contains NaN or Inf values")
    return mu1, sigma1, mu2, sigma2


# --- the population queue ------------------------------------------------------------------------
@dataclass
class _Moments:
    """(n, μ, C = Σ (x − μ)(x − μ)ᵀ), float64 tensors."""

    count: int
    mean: torch.Tensor
    comoment: torch.Tensor

    @staticmethod
    def of(x: torch.Tensor) -> "_Moments":
        x = x.to(torch.float64)
        mean = x.mean(dim=0)
        centred = x - mean
        return _Moments(x.shape[0], mean, centred.T @ centred)

    def plus(self, other: "_Moments") -> "_Moments":
        """Chan, Golub & LeVeque's merge (differentiable when `other` is)."""
        if self.count == 0:
            return other
        total = self.count + other.count
        delta = other.mean - self.mean
        return _Moments(total, self.mean + delta * (other.count / total),
                        self.comoment + other.comoment + torch.outer(delta, delta) * (self.count * other.count / total))

    def minus(self, part: "_Moments") -> "_Moments":
        """The merge inverted: the moments of the rest once `part`, a subset, is taken out."""
        rest = self.count - part.count
        if rest == 0:
            return _Moments(0, torch.zeros_like(self.mean), torch.zeros_like(self.comoment))
        mean = (self.mean * self.count - part.mean * part.count) / rest
        delta = part.mean - mean
        shift = torch.outer(delta, delta) * (rest * part.count / self.count)
        return _Moments(rest, mean, self.comoment - part.comoment - shift)


class _PopulationQueue:
    """The last `capacity` detached features of one representation, first in first out, with their
    running float64 moments. Every `refresh_every` additions the moments are recomputed from the
    queue's contents, so the rounding of many evictions cannot accumulate."""

    def __init__(self, capacity: int, refresh_every: int):
        self.capacity = capacity
        self.refresh_every = refresh_every
        self.features: Any = None  # a (capacity, d) tensor, allocated on the first batch
        self.count = 0
        self.head = 0  # where the next row goes
        self.moments: Any = None  # _Moments once the first batch is in
        self._additions = 0

    def oldest(self, k: int) -> torch.Tensor:
        """The k oldest rows, in order."""
        start = (self.head - self.count) % self.capacity
        index = (torch.arange(k, device=self.features.device) + start) % self.capacity
        return self.features[index]

    def contents(self) -> torch.Tensor:
        return self.oldest(self.count)

    def without_oldest(self, k: int) -> _Moments:
        """The moments of the queue with its k oldest rows taken out (the queue is unchanged)."""
        if k == 0:
            return self.moments
        if k >= self.count:
            return _Moments(0, torch.zeros_like(self.moments.mean), torch.zeros_like(self.moments.comoment))
        return self.moments.minus(_Moments.of(self.oldest(k)))

    def add(self, batch: torch.Tensor, after: _Moments | None = None) -> None:
        """Append a batch, evicting the oldest rows. `after`, when the caller has it (FrechetLoss'
        forward computed the population's moments already), are the moments once the batch is in."""
        batch = batch.detach()[-self.capacity:]
        b, d = batch.shape
        if self.features is None:
            self.features = torch.empty(self.capacity, d, dtype=batch.dtype, device=batch.device)
            self.moments = _Moments(0, torch.zeros(d, dtype=torch.float64, device=batch.device),
                                    torch.zeros(d, d, dtype=torch.float64, device=batch.device))
        evicted = max(0, self.count + b - self.capacity)
        if after is None:
            after = self.without_oldest(evicted).plus(_Moments.of(batch))
        self.count -= evicted
        index = (torch.arange(b, device=batch.device) + self.head) % self.capacity
        self.features[index] = batch.to(self.features.dtype)
        self.head = (self.head + b) % self.capacity
        self.count += b
        self.moments = after
        self._additions += 1
        if self._additions % self.refresh_every == 0:
            self.moments = _Moments.of(self.contents())

    def state(self) -> dict:
        """Everything needed to resume: the features in queue order and the exact moments."""
        if self.features is None:
            return {}
        return {"features": self.contents().clone(), "count": self.moments.count, "mean": self.moments.mean.clone(),
                "comoment": self.moments.comoment.clone(), "additions": self._additions}

    def restore(self, state: dict) -> None:
        type(self).__init__(self, self.capacity, self.refresh_every)  # empty, then filled from the state
        if not state:
            return
        features = state["features"]
        if features.shape[0] > self.capacity:
            raise ValueError(f"the saved population holds {features.shape[0]} features, more than {self.capacity}")
        self.features = torch.empty(self.capacity, features.shape[1], dtype=features.dtype, device=features.device)
        self.features[:features.shape[0]] = features
        self.count = features.shape[0]
        self.head = self.count % self.capacity
        self.moments = _Moments(int(state["count"]), state["mean"].to(torch.float64),
                                state["comoment"].to(torch.float64))
        self._additions = int(state["additions"])


# --- the loss module -----------------------------------------------------------------------------
class FrechetLoss(torch.nn.Module):
    """FD between a population of generated features and reference statistics, as a loss.

    ``reference`` is one set of reference statistics (FeatureStats, a ``.npz`` path or a
    ``(mu, sigma)`` pair) or a sequence of them, one per representation space; ``forward`` then
    takes one feature batch per space, in that order, and returns Σ weightᵢ · FDᵢ. Each FD is
    computed on a population of ``population`` features: the current batch, which carries the
    gradient, plus the newest detached features of earlier batches, kept in a circular queue with
    float64 running statistics (memory: population × d features plus O(d²)). In training mode each
    batch then enters its queue, evicting the oldest; ``fill`` primes the queues without a loss.

    The queues are part of ``state_dict()``, so a checkpoint resumes with its populations.

    ``normalize=True`` makes each term FD / FD.detach() (value 1, gradient of log FD), as in the
    Representation Fréchet Loss reference code. Under torch.distributed the batches of all ranks are
    gathered into the population (every rank must pass batches of the same size); the gradient
    reaches only the local batch, so DDP's averaging yields the full gradient divided by the world
    size. ``last_distances`` holds the FDs of the last call, detached, for logging.
    """

    def __init__(self, reference, population: int = 50_000, *, weights=None, normalize: bool = False,
                 refresh_every: int = 1000):
        super().__init__()
        several = isinstance(reference, (list, tuple)) and not _is_pair(reference)
        references = list(reference) if several else [reference]
        if not references:
            raise ValueError("reference must name at least one set of statistics")
        if not isinstance(population, int) or population < 2:
            raise ValueError(f"population must be an integer ≥ 2, got {population!r}")
        if not isinstance(refresh_every, int) or refresh_every < 1:
            raise ValueError(f"refresh_every must be a positive integer, got {refresh_every!r}")
        weights = [1.0] * len(references) if weights is None else [float(w) for w in weights]
        if len(weights) != len(references):
            raise ValueError(f"{len(weights)} weights for {len(references)} representations")
        self.population = population
        self.normalize = normalize
        self.weights = weights
        self.last_distances: list[float] = []
        for i, ref in enumerate(references):
            mean, cov = _reference_moments(ref)
            self.register_buffer(f"reference_mean_{i}", mean)
            self.register_buffer(f"reference_cov_{i}", cov)
        self._queues = [_PopulationQueue(population, refresh_every) for _ in references]

    def get_extra_state(self):
        """The populations travel with ``state_dict()``: a resumed run continues with its queues."""
        return {"queues": [queue.state() for queue in self._queues]}

    def set_extra_state(self, state) -> None:
        queues = state["queues"]
        if len(queues) != len(self._queues):
            raise ValueError(f"the saved loss has {len(queues)} representations, this one {len(self._queues)}")
        for queue, saved in zip(self._queues, queues):
            queue.restore(saved)

    def _reference(self, i: int):
        return getattr(self, f"reference_mean_{i}"), getattr(self, f"reference_cov_{i}")

    @torch.no_grad()
    def fill(self, *features: torch.Tensor) -> None:
        """Add detached features to the populations (one batch per representation), e.g. to start
        training with a full population."""
        for queue, batch in zip(self._queues, self._batches(features), strict=True):
            queue.add(_gather(batch))

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        batches = self._batches(features)
        total: Any = None
        distances = []
        for i, (queue, batch, weight) in enumerate(zip(self._queues, batches, self.weights)):
            batch = _gather(batch)
            if batch.shape[0] > self.population:
                raise ValueError(f"a batch of {batch.shape[0]} features (all ranks) exceeds the population of "
                                 f"{self.population}")
            moments = _Moments.of(batch)
            if queue.moments is not None:
                evicted = max(0, queue.count + batch.shape[0] - self.population)
                moments = queue.without_oldest(evicted).plus(moments)
            d = batch.shape[1]
            if moments.count <= d:
                raise ValueError(f"representation {i}: the population holds {moments.count} features of dim {d}; "
                                 "its covariance is singular until it holds more than d: call fill() first or "
                                 "raise population")
            mean_ref, cov_ref = self._reference(i)
            fd = frechet_distance(moments.mean, moments.comoment / (moments.count - 1), mean_ref.to(batch.device),
                                  cov_ref.to(batch.device))
            distances.append(float(fd.detach()))
            term = fd / fd.detach().clamp_min(1e-12) if self.normalize else fd
            total = weight * term if total is None else total + weight * term
            if self.training:  # the population's moments are the queue's once the batch is in
                queue.add(batch, after=_Moments(moments.count, moments.mean.detach(), moments.comoment.detach()))
        self.last_distances = distances
        return total

    def _batches(self, features):
        if len(features) != len(self._queues):
            raise ValueError(f"expected {len(self._queues)} feature batch(es), one per representation, "
                             f"got {len(features)}")
        for i, batch in enumerate(features):
            if not isinstance(batch, torch.Tensor) or batch.dim() != 2:
                raise ValueError(f"features for representation {i} must be a 2-D tensor (batch, dim)")
            mean_ref, _ = self._reference(i)
            if batch.shape[1] != mean_ref.shape[0]:
                raise ValueError(f"features for representation {i} have dim {batch.shape[1]}, "
                                 f"the reference has dim {mean_ref.shape[0]}")
            if batch.shape[0] == 0:
                raise ValueError(f"features for representation {i} are an empty batch")
        return features


def _is_pair(x) -> bool:
    """A (mu, sigma) pair rather than a sequence of references."""
    return len(x) == 2 and not isinstance(x[0], (str, tuple, list)) and np.ndim(x[0]) == 1


def _reference_moments(reference):
    from fastfid.distance import _as_stats

    stats = _as_stats(reference, "reference")
    mean, cov = stats.mean, stats.cov
    return tuple(a.detach().to(torch.float64) if isinstance(a, torch.Tensor)
                 else torch.from_numpy(np.asarray(a, dtype=np.float64)) for a in (mean, cov))


def _gather(batch: torch.Tensor) -> torch.Tensor:
    """This rank's batch, or the batches of all ranks with this rank's (the one with gradient) in its place."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return batch
    parts = [torch.empty_like(batch) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, batch.detach().contiguous())
    parts[dist.get_rank()] = batch
    return torch.cat(parts)



# --- from images, through the networks of named spaces ---------------------------------------------
# The resizes whose torch code is differentiable (clean-fid's runs through PIL on the host).
_DIFFERENTIABLE = ("pytorch-fid", "torch-fidelity", "torchmetrics", "legacy_tensorflow", "pil-bicubic-squash",
                   "pil-bicubic-crop")


class SpaceFrechetLoss(torch.nn.Module):
    """FD of generated images in named representation spaces, as a loss: each space's network
    (frozen, in eval mode) maps the batch to features with the gradient passing through it and
    through its resize, then a :class:`FrechetLoss` per space (its population, its reference).

    ``reference``: statistics of those spaces (:class:`~fastfid.representations.SpaceStats` or a
    file of them, e.g. from ``fastfid stats real/ -o ref.npz --spaces ...``); ``spaces``: names
    (default: every space of the reference); ``network_weights``: name → weights file where not
    the published one; ``weights``, ``population``, ``normalize``, ``refresh_every``: as for
    :class:`FrechetLoss` (``normalize=True`` with equal weights is the Representation Fréchet Loss,
    Σ log FD up to a constant). ``forward(images)`` takes float NCHW images in [0, 1] of any size.
    """

    def __init__(self, reference, spaces=None, population: int = 50_000, *, weights=None, network_weights=None,
                 normalize: bool = False, resize: str | None = None, refresh_every: int = 1000):
        super().__init__()
        from fastfid.extraction import SpaceExtractors
        from fastfid.models.spaces import SPACE_RESIZE_MODES
        from fastfid.representations import SpaceStats

        reference = reference if isinstance(reference, SpaceStats) else SpaceStats.load(reference)
        names = list(spaces) if spaces is not None else list(reference)
        missing = [name for name in names if name not in reference]
        if missing:
            raise ValueError(f"the reference holds no statistics of {', '.join(missing)}; it has "
                             f"{', '.join(reference)}")
        if resize is not None and resize not in _DIFFERENTIABLE + SPACE_RESIZE_MODES:
            raise ValueError(f"resize {resize!r} runs through PIL on the host: no gradient passes; use one of "
                             f"{_DIFFERENTIABLE[:4]} for Inception")
        extractors = SpaceExtractors(names, weights=network_weights, device="cpu", resize=resize)
        self.names = extractors.names
        self.networks = torch.nn.ModuleList(e.model.requires_grad_(False) for e in extractors.extractors)
        self.plans = [e.plans[0] for e in extractors.extractors]
        self.distance = FrechetLoss([reference[name] for name in self.names], population, weights=weights,
                                    normalize=normalize, refresh_every=refresh_every)
        # A checkpoint holds the populations, not the frozen networks (named by their weights, GBs).
        self._register_state_dict_hook(_without_networks)
        self.register_load_state_dict_pre_hook(_with_current_networks)

    def train(self, mode: bool = True) -> "SpaceFrechetLoss":
        """Only the populations follow training mode; the networks stay in eval mode (fixed norms, no dropout)."""
        self.training = mode
        self.distance.train(mode)
        return self

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """One (N, d) feature batch per space, differentiable in ``images``."""
        from fastfid.data import resize_batch

        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be a float tensor (N, 3, H, W) in [0, 1], got "
                             f"{getattr(images, 'shape', type(images).__name__)}")
        out = []
        for network, (size, operation) in zip(self.networks, self.plans):
            features = network(resize_batch(images, size, operation))
            out.append(features.mean(dim=(2, 3)) if features.dim() == 4 else features)
        return out

    @torch.no_grad()
    def fill(self, images: torch.Tensor) -> None:
        """Add the features of these images to the populations, without a loss."""
        self.distance.fill(*self.features(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.distance(*self.features(images))

    @property
    def last_distances(self) -> dict[str, float]:
        """The FD of each space at the last call, for logging."""
        return dict(zip(self.names, self.distance.last_distances))


def _without_networks(module, state, prefix, metadata):
    for key in [k for k in state if k.startswith(f"{prefix}networks.")]:
        del state[key]


def _with_current_networks(module, state, prefix, *_):
    for key, value in module.networks.state_dict(prefix=f"{prefix}networks.").items():
        state.setdefault(key, value)
