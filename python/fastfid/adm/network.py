"""The three tensors ADM's evaluator reads from the 2015 Inception graph, from pytorch-fid's weights
file (the same graph's weights, converted): ``pool_3`` (2048), ``mixed_6/conv`` (Mixed_6d's
1 × 1 branch after its batch norm and ReLU, 17 × 17 × 192, of which ADM keeps channels 0–6,
flattened in H, W, C order: 2023 values) and the class logits (pool3 times the softmax weights,
without the bias: 1008).

ADM feeds uint8 NHWC images, cast to float32, at the graph's ``ExpandDims:0``, so the graph's own
steps run: TensorFlow 1's ``ResizeBilinear`` to 299 × 299 (no half-pixel centres) and (x − 128)/128.
That is fastfid's ``"torch-fidelity"`` resize and TensorFlow scaling.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

SPATIAL_CHANNELS = 7
SPATIAL_WIDTH = 17 * 17 * SPATIAL_CHANNELS  # 2023


@dataclass(frozen=True)
class Activations:
    """ADM's activations of N images, float32: ``pool`` (N, 2048), ``spatial`` (N, 2023) and
    ``logits`` (N, 1008)."""

    pool: np.ndarray
    spatial: np.ndarray
    logits: np.ndarray

    def __len__(self) -> int:
        return self.pool.shape[0]


class ADMInception:
    """The FID Inception-v3 wired as ADM's graph: ``net(uint8 NHWC batch)`` → (pool, spatial, logits)
    as float32 tensors on the network's device. ``weights`` as FIDInceptionV3's (None: pytorch-fid's
    file, found or downloaded and checked; a path; False: random, for tests)."""

    def __init__(self, weights=None, device=None):
        import torch

        from fastfid.models.detector import is_torchscript
        from fastfid.models.inception import FIDInceptionV3

        if isinstance(weights, (str, os.PathLike)) and (str(weights).endswith(".pkl") or is_torchscript(weights)):
            raise ValueError(f"{weights} is NVIDIA's detector, which gives pool3 only: ADM's evaluator also reads "
                             "Mixed_6d (sFID) and the logits (IS); give pytorch-fid's weights file (or none)")
        self.device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = FIDInceptionV3(2048, weights=weights, scaling="tensorflow").to(self.device)
        self.weights_name = self.model.weights_name
        self._spatial = None
        self.model.Mixed_6d.branch1x1.register_forward_hook(self._keep_spatial)

    def _keep_spatial(self, module, inputs, output) -> None:
        self._spatial = output

    def __call__(self, images: np.ndarray):
        import torch

        from fastfid.data import resize_batch

        batch = torch.from_numpy(np.ascontiguousarray(images)).to(self.device)
        x = batch.permute(0, 3, 1, 2).to(torch.float32) / 255
        x = resize_batch(x, self.model.input_size, "torch-fidelity")
        with torch.inference_mode():
            pool, logits = self.model.features_and_logits(x)
            spatial = self._spatial[:, :SPATIAL_CHANNELS].permute(0, 2, 3, 1).reshape(len(batch), -1)
        self._spatial = None
        return pool, spatial, logits


def activations(images, *, weights=None, device=None, batch_size: int = 64, network: ADMInception | None = None,
                progress: bool = False) -> Activations:
    """ADM's activations of ``images``: an (N, H, W, 3) uint8 array, an ADM ``.npz`` (``arr_0``,
    streamed) or a batches.ImageBatch, ``batch_size`` images at a time."""
    from fastfid.adm.batches import ImageBatch

    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    source = images if isinstance(images, ImageBatch) else ImageBatch(images)
    net = network if network is not None else ADMInception(weights, device)
    n = len(source)
    pool = np.empty((n, 2048), dtype=np.float32)
    spatial = np.empty((n, SPATIAL_WIDTH), dtype=np.float32)
    logits = np.empty((n, 1008), dtype=np.float32)
    batches = source.batches(batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=-(-n // batch_size), desc=f"ADM activations of {source.name}", unit="batch")
    start = 0
    for batch in batches:
        outputs = net(batch)
        stop = start + len(batch)
        for target, values in zip((pool, spatial, logits), outputs):
            target[start:stop] = values.float().cpu().numpy()
        start = stop
    found = Activations(pool, spatial, logits)
    for name in ("pool", "spatial", "logits"):
        if not np.isfinite(getattr(found, name)).all():
            raise ValueError(f"the {name} activations of {source.name} contain NaN or Inf (a corrupt image or "
                             "weights file); ADM's TensorFlow graph would stop at CheckNumerics here")
    return found
