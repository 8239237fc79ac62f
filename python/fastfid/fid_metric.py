"""``fastfid.FID``: torchmetrics' FrechetInceptionDistance interface over streaming statistics."""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import torch

try:  # With torchmetrics, FID is a Metric: Lightning's self.log(name, metric) computes and resets it.
    from torchmetrics import Metric as _Base

    _IS_METRIC = True
except ImportError:
    _Base = torch.nn.Module  # type: ignore[misc,assignment]
    _IS_METRIC = False
except RuntimeError as error:  # e.g. a torchvision built for another torch, which torchmetrics imports
    from fastfid._imports import torchvision_problem

    warnings.warn(f"torchmetrics is installed but cannot load: {torchvision_problem(error) or error}; fastfid.FID "
                  "works as a torch.nn.Module, not a torchmetrics.Metric", RuntimeWarning, stacklevel=2)
    _Base = torch.nn.Module  # type: ignore[misc,assignment]
    _IS_METRIC = False

from fastfid.distance import fid
from fastfid.extraction import FeatureExtractor
from fastfid.stats import FeatureStats


class FID(_Base):
    """FID accumulated over ``update(images, real=...)`` calls, like torchmetrics'
    ``FrechetInceptionDistance`` (switch by changing the import).

    ``feature``: 64, 192, 768 or 2048 (the FID Inception-v3's layers) or a ``torch.nn.Module``, which
    receives the batches exactly as given and returns (N, d) features. With the Inception, images are
    uint8 (0–255, NCHW or NHWC) or, with ``normalize=True``, float in [0, 1]; they are prepared by
    ``resize`` (fastfid.resize_modes: "pytorch-fid", "torch-fidelity", "torchmetrics" for torchmetrics'
    numbers, "clean", "legacy_tensorflow") at 299 × 299. Unlike torchmetrics, floats are not
    quantised to uint8 and the statistics are float64 (n, μ, C) merged exactly, never raw sums of
    squares nor stored features: memory is O(d²) however many images. For torchmetrics' exact
    interface (a real ``Metric``, float32 results, its 8-bit quantisation) use
    fastfid.compat.torchmetrics.

    Under torch.distributed every rank updates with its own batches and ``compute()`` merges all
    ranks exactly (every rank must call it; each gets the same value). ``.to(device)`` moves the network;
    the statistics follow it.

    With torchmetrics installed, FID is a ``torchmetrics.Metric`` (``kwargs`` are Metric's), so
    Lightning logs it as it logs torchmetrics' metrics: ``self.log("fid", self.fid)`` after
    ``self.fid.update(...)`` computes it at the epoch's end and resets it. Its statistics are
    fastfid's own (merged exactly by ``compute``), not Metric states: ``forward`` only updates,
    and Metric's ``sync``/``merge_state`` do not apply (fastfid.compat.torchmetrics has those).
    """

    higher_is_better = False
    is_differentiable = False
    full_state_update = False

    def __init__(self, feature=2048, reset_real_features: bool = True, normalize: bool = False, *, weights=None,
                 resize: str = "pytorch-fid", method: str = "auto", **kwargs: Any):
        super().__init__(**kwargs)
        self._takes_images = not isinstance(feature, torch.nn.Module)
        self._extractor = FeatureExtractor(feature, weights=weights, device="cpu", resize=resize)
        self.network = self._extractor.model  # a submodule, so that .to(device) and .cuda() move it
        self.reset_real_features = reset_real_features
        self.normalize = normalize
        self.method = method
        self._real: FeatureStats | None = None
        self._fake: FeatureStats | None = None

    @property
    def feature_space(self) -> str:
        return self._extractor.feature_space

    def _network_device(self) -> torch.device:
        first = next(itertools.chain(self.network.parameters(), self.network.buffers()), None)
        return torch.device("cpu") if first is None else first.device

    def update(self, images, real: bool) -> None:
        """Add a batch of real or generated images."""
        device = self._network_device()
        self._extractor.device = device
        if self._takes_images:
            if not self.normalize and isinstance(images, torch.Tensor) and images.is_floating_point():
                raise TypeError("float images need normalize=True (values in [0, 1]); with normalize=False "
                                "images are uint8 (0-255), as in torchmetrics")
            features = self._extractor.batch_features(images)
        else:
            features, _ = self._extractor(images.to(device) if isinstance(images, torch.Tensor) else images)
        name = "_real" if real else "_fake"
        stats = getattr(self, name)
        if stats is None:
            stats = FeatureStats(features.shape[1], device=None if device.type == "cpu" else device,
                                 feature_space=self.feature_space)
        elif stats.device != ("cpu" if device.type == "cpu" else device):
            stats = stats.to(device)  # the module moved since the last update
        setattr(self, name, stats.update(features))

    def _wrap_compute(self, compute):
        # Metric wraps compute with a sync of its states and a cache; FID has no Metric states (its
        # compute merges the ranks' statistics itself) and says itself when nothing was added.
        return compute

    def forward(self, images, real: bool) -> None:
        """The same as ``update`` (no per-batch FID: one batch's statistics say little)."""
        self.update(images, real)

    def compute(self) -> torch.Tensor:
        """FID of everything added so far (all ranks merged), as a float64 scalar tensor."""
        real, fake = self._across_ranks(self._real, "real"), self._across_ranks(self._fake, "generated")
        return torch.tensor(fid(real, fake, method=self.method), dtype=torch.float64)

    def _across_ranks(self, stats: FeatureStats | None, which: str) -> FeatureStats:
        import torch.distributed as dist

        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if not distributed:
            if stats is None:
                raise ValueError(f"no {which} images were added: call update(images, real={which == 'real'}) first")
            stats = stats.copy()
        else:
            from fastfid.distributed import max_across_ranks

            # A rank that saw no images learns the width from the others (0 everywhere: none were added).
            width = max_across_ranks(0 if stats is None else stats.dim)
            if width == 0:
                raise ValueError(f"no {which} images were added on any rank")
            stats = FeatureStats(width, feature_space=self.feature_space) if stats is None else stats.copy()
            stats.all_reduce()
        if stats.count is None or stats.count < 2:
            raise ValueError(f"FID needs at least 2 {which} images, got {stats.count}")
        return stats

    def reset(self) -> None:
        """Forget the generated images, and the real ones if ``reset_real_features``."""
        self._fake = None
        if self.reset_real_features:
            self._real = None
        if _IS_METRIC:
            super().reset()
