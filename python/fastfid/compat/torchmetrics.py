"""torchmetrics' image metrics over fastfid's core: change

    from torchmetrics.image.fid import FrechetInceptionDistance

to

    from fastfid.compat.torchmetrics import FrechetInceptionDistance

and keep the arguments, defaults, dtypes, errors and distributed behaviour (these are real
``torchmetrics.Metric`` subclasses: ``MetricCollection``, Lightning's ``self.log``, ``merge_state``,
``sync``, ``plot``, ``compute_on_cpu`` all work). What changes:

- FID's state is fastfid's exact centred statistics (count, mean, co-moment in float64), merged
  exactly across ranks and by ``merge_state``, instead of raw sums of x and xxᵀ (whose covariance
  loses digits to cancellation); its trace term is fastfid's exact symmetric route instead of the
  eigenvalues of the non-symmetric Σ₁Σ₂.
- KID's and IS's kernels and sums run in float64 in fastfid's core; their random subsets and
  splits are drawn exactly as torchmetrics draws them (``torch.randperm``), so a seeded run gives
  the same subsets.
- ``set_dtype`` sets the network's dtype, as torchmetrics does, but FID's statistics stay float64.
- torchmetrics' raw-sum states (``real_features_sum``, ``real_features_cov_sum``,
  ``real_features_num_samples`` and the ``fake_`` ones) are read-only views computed from the exact
  statistics: n·μ, C + n·μμᵀ and n, in torchmetrics' dtypes (float64, float64, int64).

Needs torchmetrics (``pip install torchmetrics``); torch-fidelity is not needed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import Module

from fastfid._imports import borrowed
from fastfid.compat import _packed
from fastfid.distance import fid
from fastfid.metrics import Kernel, inception_score_from_logits, kid_of_subsets
from fastfid.models.inception import INPUT_SIZE
from fastfid.models.label import FeatureSpace

borrowed("torchmetrics", "fastfid.compat.torchmetrics subclasses torchmetrics.Metric",  # one line if it cannot load
         "pip install torchmetrics (or use fastfid.FID, which needs no torchmetrics)")
from torchmetrics import Metric  # noqa: E402
from torchmetrics.utilities import rank_zero_warn  # noqa: E402
from torchmetrics.utilities.data import dim_zero_cat  # noqa: E402

__all__ = ["FrechetInceptionDistance", "InceptionScore", "KernelInceptionDistance"]

_VALID_FEATURES = (64, 192, 768, 2048)


class _Network(Module):
    """The FID Inception-v3 as torchmetrics feeds it: uint8 NCHW images, resized to 299 × 299
    (antialiased bilinear, or TensorFlow 1's bilinear with ``antialias=False``), then (x − 128)/128."""

    num_features: int

    def __init__(self, output: int | str, weights_path: str | None, antialias: bool):
        super().__init__()
        from fastfid.models import FIDInceptionV3

        self.resize = "torchmetrics" if antialias else "torch-fidelity"
        self.logits = output == "logits_unbiased"
        dims = 2048 if self.logits else int(output)
        self.network = FIDInceptionV3(dims, weights=weights_path, scaling="tensorflow")
        self.num_features = 1008 if self.logits else dims

    @property
    def feature_space(self) -> str:
        return str(FeatureSpace(self.network.feature_space, self.resize, INPUT_SIZE))

    def train(self, mode: bool = True) -> "_Network":
        """Always in evaluation mode, as torchmetrics keeps its network whatever the parent's mode."""
        return super().train(False)

    def forward(self, images: Tensor) -> Tensor:
        from fastfid.data import resize_batch

        if not (torch.is_tensor(images) and images.dtype == torch.uint8):
            raise ValueError("Expecting image as torch.Tensor with dtype=torch.uint8")
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"Input is not Bx3xHxW: {tuple(images.shape)}")
        dtype = self.network.fc.weight.dtype
        pixels = resize_batch(images.to(dtype) / 255, self.network.input_size, self.resize)
        with torch.no_grad():
            if self.logits:
                return self.network.features_and_logits(pixels)[1]
            return self.network(pixels)


def _network_for(feature, weights_path=None, antialias: bool = True, valid: tuple = _VALID_FEATURES):
    named = isinstance(feature, str) and feature in valid  # IS also takes "logits_unbiased"
    if (isinstance(feature, int) and not isinstance(feature, bool)) or named:
        if feature not in valid:
            raise ValueError(f"Integer input to argument `feature` must be one of {valid}, but got {feature}.")
        return _Network(feature, weights_path, antialias), False
    if isinstance(feature, Module):
        return feature, True
    raise TypeError("Got unknown input to argument `feature`")


def _check_bool(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"Argument `{name}` expected to be a bool")
    return value


def _as_uint8(images: Tensor, normalize: bool, custom: bool) -> Tensor:
    # torchmetrics truncates [0, 1] floats to 8-bit values (not rounding): the same here.
    return (images * 255).byte() if normalize and not custom else images


def _torchmetrics_state(side: str, view) -> property:
    """A read-only attribute: ``view`` of the side's packed statistics (see _packed)."""
    return property(lambda metric: view(getattr(metric, f"{side}_stats")), doc=f"{side} side: {view.__doc__}")


class FrechetInceptionDistance(Metric):
    """torchmetrics' ``FrechetInceptionDistance``, with exact statistics and trace term.

    ``update(imgs, real)`` takes uint8 images (N, 3, H, W) in 0–255, or floats in [0, 1] with
    ``normalize=True`` (truncated to 8-bit values, as torchmetrics does); ``compute()`` returns the
    FID as a scalar tensor of the features' dtype (float32). ``feature`` is 64, 192, 768, 2048 or
    a module of your own; ``antialias=False`` resizes as torch-fidelity (TensorFlow 1's bilinear).
    """

    higher_is_better: bool = False
    is_differentiable: bool = False
    full_state_update: bool = False
    plot_lower_bound: float = 0.0
    inception: Module
    real_stats: Tensor
    fake_stats: Tensor

    def __init__(self, feature: int | Module = 2048, reset_real_features: bool = True, normalize: bool = False,
                 input_img_size: tuple[int, int, int] = (3, 299, 299),
                 feature_extractor_weights_path: str | None = None, antialias: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.normalize = _check_bool(normalize, "normalize")
        self.inception, self.used_custom_model = _network_for(feature, feature_extractor_weights_path, antialias)
        num_features = _feature_count(self.inception, normalize, input_img_size)
        self.reset_real_features = _check_bool(reset_real_features, "reset_real_features")
        self.num_features = num_features
        self.orig_dtype = torch.float32
        self.add_state("real_stats", _packed.empty(num_features), dist_reduce_fx=_packed.merge)
        self.add_state("fake_stats", _packed.empty(num_features), dist_reduce_fx=_packed.merge)

    def update(self, imgs: Tensor, real: bool) -> None:
        """Add a batch of real or generated images."""
        imgs = _as_uint8(imgs, self.normalize, self.used_custom_model)
        features = self.inception(imgs)
        self.orig_dtype = features.dtype
        if features.dim() == 1:
            features = features.unsqueeze(0)
        _packed.add(self.real_stats if real else self.fake_stats, features)

    def compute(self) -> Tensor:
        """FID of everything added (all ranks merged), as a scalar of the features' dtype."""
        if _packed.count(self.real_stats) < 2 or _packed.count(self.fake_stats) < 2:
            raise RuntimeError("More than one sample is required for both the real and fake distributed to compute FID")
        space = getattr(self.inception, "feature_space", None)
        real, fake = _packed.to_stats(self.real_stats, space), _packed.to_stats(self.fake_stats, space)
        assert real is not None and fake is not None  # both counts are at least 2
        return torch.tensor(fid(real, fake), dtype=self.orig_dtype, device=self.device)

    # torchmetrics' own states, for code (and torchmetrics' tests) that reads them: views computed
    # from the exact statistics, never accumulated as raw sums.
    real_features_sum = _torchmetrics_state("real", _packed.feature_sum)
    real_features_cov_sum = _torchmetrics_state("real", _packed.outer_product_sum)
    real_features_num_samples = _torchmetrics_state("real", _packed.count_tensor)
    fake_features_sum = _torchmetrics_state("fake", _packed.feature_sum)
    fake_features_cov_sum = _torchmetrics_state("fake", _packed.outer_product_sum)
    fake_features_num_samples = _torchmetrics_state("fake", _packed.count_tensor)

    def reset(self) -> None:
        """Forget the generated images, and the real ones if ``reset_real_features``."""
        if self.reset_real_features:
            super().reset()
            return
        kept = self.real_stats.clone()
        super().reset()
        self.real_stats = kept

    def set_dtype(self, dst_type: str | torch.dtype) -> Metric:
        """Run the network in ``dst_type``; the statistics stay float64 (they are the exact part)."""
        if isinstance(self.inception, _Network):
            self.inception.network.to(dst_type)
        elif self.used_custom_model:
            self.inception.to(dst_type)
        return self


class KernelInceptionDistance(Metric):
    """torchmetrics' ``KernelInceptionDistance``: ``compute()`` returns (mean, std) over ``subsets``
    subsets of ``subset_size`` drawn with ``torch.randperm`` as torchmetrics draws them; the kernel
    (γ xᵀy + coef)^degree and the MMD sums run in float64 in fastfid's core."""

    higher_is_better: bool = False
    is_differentiable: bool = False
    full_state_update: bool = False
    plot_lower_bound: float = 0.0
    inception: Module
    real_features: list[Tensor]
    fake_features: list[Tensor]

    def __init__(self, feature: int | Module = 2048, subsets: int = 100, subset_size: int = 1000, degree: int = 3,
                 gamma: float | None = None, coef: float = 1.0, reset_real_features: bool = True,
                 normalize: bool = False, feature_extractor_weights_path: str | None = None,
                 antialias: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        rank_zero_warn("Metric `Kernel Inception Distance` will save all extracted features in buffer."
                       " For large datasets this may lead to large memory footprint.", UserWarning)
        self.inception, self.used_custom_model = _network_for(feature, feature_extractor_weights_path, antialias)
        if not (isinstance(subsets, int) and subsets > 0):
            raise ValueError("Argument `subsets` expected to be integer larger than 0")
        self.subsets = subsets
        if not (isinstance(subset_size, int) and subset_size > 0):
            raise ValueError("Argument `subset_size` expected to be integer larger than 0")
        self.subset_size = subset_size
        if not (isinstance(degree, int) and degree > 0):
            raise ValueError("Argument `degree` expected to be integer larger than 0")
        self.degree = degree
        if gamma is not None and not (isinstance(gamma, float) and gamma > 0):
            raise ValueError("Argument `gamma` expected to be `None` or float larger than 0")
        self.gamma = gamma
        if not (isinstance(coef, float) and coef > 0):
            raise ValueError("Argument `coef` expected to be float larger than 0")
        self.coef = coef
        self.reset_real_features = _check_bool(reset_real_features, "reset_real_features")
        self.normalize = _check_bool(normalize, "normalize")
        self.add_state("real_features", [], dist_reduce_fx=None)
        self.add_state("fake_features", [], dist_reduce_fx=None)

    def update(self, imgs: Tensor, real: bool) -> None:
        imgs = _as_uint8(imgs, self.normalize, self.used_custom_model)
        features = self.inception(imgs)
        (self.real_features if real else self.fake_features).append(features)

    def compute(self) -> tuple[Tensor, Tensor]:
        real_features, fake_features = dim_zero_cat(self.real_features), dim_zero_cat(self.fake_features)
        n_real, n_fake = real_features.shape[0], fake_features.shape[0]
        if n_real < self.subset_size or n_fake < self.subset_size:
            raise ValueError("Argument `subset_size` should be smaller than the number of samples")
        draws = [(torch.randperm(n_real)[:self.subset_size].numpy(), torch.randperm(n_fake)[:self.subset_size].numpy())
                 for _ in range(self.subsets)]
        result = kid_of_subsets(real_features.detach().cpu().double().numpy(),
                                fake_features.detach().cpu().double().numpy(), draws,
                                kernel=Kernel(degree=self.degree, gamma=self.gamma, coef0=self.coef))
        dtype = real_features.dtype
        return (torch.tensor(result.mean, dtype=dtype, device=self.device),
                torch.tensor(result.std, dtype=dtype, device=self.device))

    def reset(self) -> None:
        if self.reset_real_features:
            super().reset()
            return
        kept = list(self.real_features)
        super().reset()
        self.real_features = kept


class InceptionScore(Metric):
    """torchmetrics' ``InceptionScore``: the features are shuffled with ``torch.randperm`` and cut
    by ``torch.chunk`` as torchmetrics does; each split's score is computed in float64; returns
    (mean, std with Bessel's correction) as torchmetrics."""

    is_differentiable: bool = False
    higher_is_better: bool = True
    full_state_update: bool = False
    plot_lower_bound: float = 0.0
    inception: Module
    features: list[Tensor]

    def __init__(self, feature: str | int | Module = "logits_unbiased", splits: int = 10, normalize: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        rank_zero_warn("Metric `InceptionScore` will save all extracted features in buffer."
                       " For large datasets this may lead to large memory footprint.", UserWarning)
        # torchmetrics builds this network without passing antialias, so its default (True) applies.
        self.inception, self.used_custom_model = _network_for(feature, valid=("logits_unbiased", *_VALID_FEATURES))
        self.normalize = _check_bool(normalize, "normalize")
        self.splits = splits
        self.add_state("features", [], dist_reduce_fx=None)

    def update(self, imgs: Tensor) -> None:
        imgs = _as_uint8(imgs, self.normalize, self.used_custom_model)
        self.features.append(self.inception(imgs))

    def compute(self) -> tuple[Tensor, Tensor]:
        features = dim_zero_cat(self.features)
        shuffled = features[torch.randperm(features.shape[0])]
        logits = shuffled.detach().cpu().double().numpy()
        scores = np.array([inception_score_from_logits(part.numpy(), splits=1).mean
                           for part in torch.from_numpy(logits).chunk(self.splits, dim=0)])
        std = scores.std(ddof=1) if len(scores) > 1 else float("nan")
        return (torch.tensor(scores.mean(), dtype=features.dtype, device=self.device),
                torch.tensor(std, dtype=features.dtype, device=self.device))


def _feature_count(network: Module, normalize: bool, input_img_size) -> int:
    if isinstance(network, _Network):
        return network.num_features
    count = getattr(network, "num_features", None)
    if isinstance(count, int):
        return count
    if isinstance(count, Tensor):
        return int(count.item())
    if count is not None:
        raise TypeError("Expected `self.inception.num_features` to be of type int or Tensor.")
    if normalize:
        dummy = torch.rand(1, *input_img_size, dtype=torch.float32)
    else:
        dummy = torch.randint(0, 255, (1, *input_img_size), dtype=torch.uint8)
    return network(dummy).shape[-1]
