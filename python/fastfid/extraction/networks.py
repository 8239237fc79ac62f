"""The feature networks of a job: :class:`FeatureExtractor` (one network with its input handling)
and :class:`SpaceExtractors` (several, fed from one decode of each image), and the checks of a
model and its preprocessing mode, made before any image is read."""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np

from fastfid.extraction.execution import Execution
from fastfid.models.label import FeatureSpace
from fastfid.stats import FeatureStats

__all__ = ["FeatureExtractor", "SpaceExtractors", "check_model", "default_device", "default_workers", "extractor_for",
           "is_detector", "mode_for", "model_dim", "space_name"]


def default_device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_workers() -> int:
    """pytorch-fid's default: one loader process per available core, at most 8."""
    return min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


class FeatureExtractor:
    """A feature network with its input handling: ``model`` is a dims (64, 192, 768, 2048: the FID
    Inception-v3), a representation space's name (``fastfid.models.space_names()``: ``"inception"``,
    ``"dinov2-vit-l14"``, ...) or :class:`~fastfid.models.Space`, or any ``torch.nn.Module`` mapping
    float NCHW images in [0, 1] to (N, d) features (4-D outputs are averaged over space).
    ``resize``: the preprocessing mode (None: ``"pytorch-fid"`` for Inception and other networks,
    ``"dgm-eval"`` for the spaces). ``image_size`` is what images are resized to (``"auto"``: 299 ×
    299 for the FID Inception, the space's size, the module's ``input_size`` attribute or none).
    ``execution``: how the network runs (``fastfid.extraction.execution``; None: ``$FASTFID_EXECUTION``,
    else ``"auto"``: eager, or for a planned job the fastest of channels-last, frozen and compiled that
    gives eager's features within 1e-6); ``tf32``: let CUDA convolutions use TF32 (None:
    ``$FASTFID_TF32``, else no)."""

    def __init__(self, model=2048, *, weights=None, device=None, resize: str | None = None, image_size="auto",
                 execution: str | None = None, tf32: bool | None = None):
        import torch

        from fastfid.models.spaces import INCEPTION, Space, check_space_resize, get_space
        from fastfid.resize_modes import check_resize, input_scaling

        self.device = torch.device(device) if device is not None else default_device()
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {self.device}: torch sees no CUDA GPU here (torch.cuda.is_available() is "
                               "False); use --device cpu / device='cpu'")
        if model == INCEPTION:
            model = 2048
        space = model if isinstance(model, Space) else get_space(model) if isinstance(model, str) else None
        if space is not None:
            from fastfid.models.networks import SpaceNetwork

            self.resize = check_space_resize(resize or space.default_resize)
            self.operation = space.resize_op(self.resize)  # the image operation of fastfid.data
            model = SpaceNetwork(space, weights)
        elif is_detector(model, weights):
            from fastfid.models.detector import TorchScriptDetector

            if resize is not None:
                raise ValueError(f"the TorchScript detector {weights} resizes images inside itself: give no resize")
            self.resize = self.operation = DETECTOR_RESIZE
            model = TorchScriptDetector(weights)
        else:
            self.resize = self.operation = check_resize(resize or "pytorch-fid")
        if isinstance(model, (int, np.integer)) and not isinstance(model, bool):
            from fastfid.models import FIDInceptionV3

            model = FIDInceptionV3(int(model), weights=weights, scaling=input_scaling(self.resize))
        elif not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a dims (64, 192, 768, 2048), a space name, or a torch.nn.Module, got "
                            f"{type(model).__name__}")
        self.model = model.to(self.device).eval()
        size: Any = getattr(model, "input_size", None) if image_size == "auto" else image_size
        self.image_size = None if size is None else (int(size), int(size)) if isinstance(size, (int, np.integer)) \
            else tuple(size)
        name = getattr(model, "feature_space", type(model).__qualname__)
        self.feature_space = str(FeatureSpace(name, self.resize, self.image_size))
        self.execution = Execution(self.model, self.device, execution, tf32)

    def plan(self, images: int, batch_size: int, logits: bool = False) -> None:
        """Tell the network the job ahead, so that it may pick a faster execution worth its trial."""
        self.execution.plan(images, batch_size, logits)

    @property
    def plans(self) -> tuple:
        """How fastfid.data resizes images for this network: ((size, operation),)."""
        return ((self.image_size, self.operation),)

    @property
    def has_logits(self) -> bool:
        return hasattr(self.model, "features_and_logits")

    def __call__(self, images, logits: bool = False):
        """Features (and the class logits if asked) of a batch already on the device and resized."""
        if logits and not self.has_logits:
            raise TypeError(f"{type(self.model).__name__} gives no class logits: the Inception Score needs the "
                            "FID Inception-v3")
        features, class_logits = self.execution(images, logits)
        return _as_feature_matrix(features), class_logits

    def batch_features(self, images):
        """Features of user images (numpy or torch, uint8 or [0, 1] floats, NHWC or NCHW): converted,
        moved to the device and resized here."""
        from fastfid.data import as_image_batch, resize_batch

        images = as_image_batch(images).to(self.device, non_blocking=True)
        return self(resize_batch(images, self.image_size, self.operation))[0]


class SpaceExtractors:
    """Several feature networks fed from one decode of each image: each gets its own resize (one
    plan per distinct (size, operation): DINOv2, SigLIP, ConvNeXt and MAE share theirs), and a batch
    gives one feature matrix per network."""

    def __init__(self, names, *, weights=None, device=None, resize: str | None = None):
        if isinstance(weights, (str, os.PathLike)):
            raise ValueError("with several spaces, weights maps space names to files: {'dinov2-vit-l14': PATH, ...}")
        weights = dict(weights or {})
        self.names = [space_name(name) for name in names]
        if not self.names:
            raise ValueError("model lists no spaces")
        duplicates = sorted({n for n in self.names if self.names.count(n) > 1})
        if duplicates:
            raise ValueError(f"space {duplicates[0]!r} is named twice")
        unknown = sorted(set(weights) - set(self.names))
        if unknown:
            raise ValueError(f"weights given for {', '.join(unknown)}, which is not among the spaces asked")
        if isinstance(resize, dict):  # one mode per space (a named reference's, fastfid.references)
            modes = [resize.get(name) for name in self.names]
        else:
            modes = [mode_for(name, resize) for name in self.names]
            if resize is not None and all(mode is None for mode in modes):
                raise ValueError(f"resize {resize!r} applies to none of {', '.join(self.names)}")
        self.extractors = [FeatureExtractor(space, weights=weights.get(name), device=device, resize=mode)
                           for name, space, mode in zip(self.names, names, modes)]
        self.device = self.extractors[0].device
        self.plans = tuple(dict.fromkeys(e.plans[0] for e in self.extractors))
        self._plan_of = [self.plans.index(e.plans[0]) for e in self.extractors]

    @property
    def feature_space(self) -> str:
        return "; ".join(f"{name}: {e.feature_space}" for name, e in zip(self.names, self.extractors))

    has_logits = False

    def plan(self, images: int, batch_size: int, logits: bool = False) -> None:
        for extractor in self.extractors:
            extractor.plan(images, batch_size)

    def __call__(self, views) -> list:
        """One feature matrix per network, from the batch resized by each plan."""
        return [extractor(views[plan])[0] for extractor, plan in zip(self.extractors, self._plan_of)]

    def new_stats(self):
        from fastfid.representations import SpaceStats

        device = None if self.device.type == "cpu" else self.device
        return SpaceStats({name: FeatureStats(model_dim(e.model), device=device, feature_space=e.feature_space)
                           for name, e in zip(self.names, self.extractors)})


DETECTOR_RESIZE = "detector"
"""The resize a TorchScript detector names: its own, inside it (images reach it at their size)."""


def is_detector(model, weights) -> bool:
    """Whether the FID Inception is asked with NVIDIA's detector (a TorchScript file, or its pickle,
    which TorchScriptDetector refuses by name) as its weights."""
    if not isinstance(weights, (str, os.PathLike)) or not str(weights).endswith((".pt", ".pkl", ".pth")):
        return False
    from fastfid.models.detector import is_torchscript

    detector = str(weights).endswith(".pkl") or is_torchscript(weights)
    if detector and model not in (2048, "inception"):
        raise ValueError(f"the TorchScript detector {weights} gives pool3 (2048 values): dims {model} is not its layer")
    return detector


def space_name(model) -> str:
    from fastfid.models.spaces import INCEPTION, Space, get_space

    if isinstance(model, Space):
        return model.name
    if model == INCEPTION:
        return INCEPTION
    if not isinstance(model, str):
        raise TypeError(f"a list of models names spaces (fastfid.models.space_names()), got {type(model).__name__}")
    return get_space(model).name


def mode_for(name: str, resize: str | None) -> str | None:
    """One preprocessing mode for a mix of Inception and spaces: an Inception mode (pytorch-fid, clean,
    ...) applies to Inception, a space mode (dgm-eval) to the spaces, "torch-fidelity" (both have
    it) to all; the others keep their defaults."""
    from fastfid.models.spaces import INCEPTION, SPACE_RESIZE_MODES
    from fastfid.resize_modes import RESIZE_MODES

    if resize is None:
        return None
    if resize not in RESIZE_MODES + SPACE_RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES} (Inception) or {SPACE_RESIZE_MODES} (the spaces), "
                         f"got {resize!r}")
    return resize if resize in (RESIZE_MODES if name == INCEPTION else SPACE_RESIZE_MODES) else None


def model_dim(model) -> int:
    """The width a network declares (``dims`` or ``num_features``; 0: learnt from the first batch)."""
    for attribute in ("dims", "num_features"):
        if hasattr(model, attribute):
            return int(getattr(model, attribute))
    return 0  # learnt from the first batch


def _as_feature_matrix(features):
    if features.dim() == 4:
        features = features.mean(dim=(2, 3))  # spatial maps, as pytorch-fid pools them
    if features.dim() != 2:
        raise ValueError(f"the feature network returned shape {tuple(features.shape)}; expected (N, d) or (N, C, H, W)")
    return features




def check_comparable(extractor, stats, what: str) -> None:
    """Refuse, before any image is read, statistics that this network's features of the images could
    not be compared with: another dim, or another feature space (network, weights, resize, size), as
    the statistics name it (files of pytorch-fid or clean-fid name none: only their dim is checked)."""
    if isinstance(extractor, SpaceExtractors):
        for name, single in zip(extractor.names, extractor.extractors):
            if name in stats:
                check_comparable(single, stats[name], f"{what} [{name}]")
        return
    dim = model_dim(extractor.model)
    if dim and stats.dim != dim:
        raise ValueError(f"cannot compare {what}, of dim {stats.dim}, with this network's features of dim {dim} "
                         f"({extractor.feature_space}): refused before reading any image")
    if stats.feature_space and stats.feature_space != extractor.feature_space:
        raise ValueError(f"{what} hold features of {stats.feature_space!r}, but the images would give "
                         f"{extractor.feature_space!r}: compute both with the same network, weights and resize "
                         "(--dims, --weights, --resize, --image-size) to compare them; refused before reading any "
                         "image")


def check_model(model, resize) -> None:
    """The model's name (or each name of a list) and its preprocessing mode, checked before any image
    is read."""
    from fastfid.models.spaces import INCEPTION, Space, check_space_resize
    from fastfid.resize_modes import check_resize

    if isinstance(model, (FeatureExtractor, SpaceExtractors)):
        return
    if isinstance(model, (list, tuple)):
        for name in model:
            space_name(name)  # an unknown name fails before anything is read
        return
    named = space_name(model) if isinstance(model, (str, Space)) else None  # an unknown name fails here
    if resize is not None:
        (check_resize if named in (None, INCEPTION) else check_space_resize)(resize)


def extractor_for(model, weights, device, resize, image_size, *, progress: bool = False):
    """The feature network(s) ``model`` names (a ready extractor is taken as it is; the callers ran
    check_model before opening any source)."""
    if isinstance(model, (FeatureExtractor, SpaceExtractors)):
        return model
    several = isinstance(model, (list, tuple))
    if progress:  # reading the weights (or downloading them) takes seconds before the first image
        name = f"the FID Inception-v3 (dims {model})" if isinstance(model, (int, np.integer)) else \
            ", ".join(map(space_name, model)) if several else model if isinstance(model, str) else "the feature network"
        print(f"fastfid: loading {name}", file=sys.stderr, flush=True)
    if several:
        return SpaceExtractors(model, weights=weights, device=device, resize=resize)
    return FeatureExtractor(model, weights=weights, device=device, resize=resize, image_size=image_size)
