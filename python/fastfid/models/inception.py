"""The FID Inception-v3: the network behind pytorch-fid's numbers, in plain torch.

It is Inception-v3 with the blocks of the 2015 TensorFlow graph that FID was defined on: average
pools that leave the zero padding out of their count, a max pool in the last block, 1008 classes.
Module and parameter names follow torchvision's Inception3, so pytorch-fid's weight file
``pt_inception-2015-12-05-6726825d.pth`` loads into it unchanged. Input: float images in [0, 1],
NCHW; they are resized to 299 × 299 (bilinear, half-pixel centres, no antialiasing) unless they
already have that size, and scaled to [−1, 1]: as 2x − 1 (pytorch-fid) or, with
``scaling="tensorflow"``, as (255x − 128)/128 (the 2015 graph, torch-fidelity, torchmetrics, clean-fid).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FEATURE_DIMS = (64, 192, 768, 2048)
SCALINGS = ("pytorch-fid", "tensorflow")
INPUT_SIZE = (299, 299)
NUM_CLASSES = 1008


class ConvBatchNormReLU(nn.Module):
    """Convolution without bias, batch norm (TensorFlow's ε = 0.001), ReLU (torchvision's BasicConv2d)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def tf_average_pool() -> nn.Module:
    """TensorFlow's 3 × 3 average pool: border windows average only the pixels inside the image."""
    return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)


class GridBlock35(nn.Module):
    """Mixed_5b/c/d (InceptionA) at 35 × 35: 1×1, 5×5, double 3×3 and pooled branches."""

    def __init__(self, in_channels: int, pool_features: int):
        super().__init__()
        self.branch1x1 = ConvBatchNormReLU(in_channels, 64, 1)
        self.branch5x5_1 = ConvBatchNormReLU(in_channels, 48, 1)
        self.branch5x5_2 = ConvBatchNormReLU(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBatchNormReLU(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBatchNormReLU(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBatchNormReLU(96, 96, 3, padding=1)
        self.pool = tf_average_pool()
        self.branch_pool = ConvBatchNormReLU(in_channels, pool_features, 1)

    def forward(self, x):
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(self.pool(x)),
        ], 1)


class Reduction35To17(nn.Module):
    """Mixed_6a (InceptionB): strided 3×3 and double 3×3 branches beside a max pool."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = ConvBatchNormReLU(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBatchNormReLU(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBatchNormReLU(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBatchNormReLU(96, 96, 3, stride=2)

    def forward(self, x):
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, 3, stride=2),
        ], 1)


class GridBlock17(nn.Module):
    """Mixed_6b/c/d/e (InceptionC) at 17 × 17: factorised 7×7 branches."""

    def __init__(self, in_channels: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = ConvBatchNormReLU(in_channels, 192, 1)
        self.branch7x7_1 = ConvBatchNormReLU(in_channels, c7, 1)
        self.branch7x7_2 = ConvBatchNormReLU(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvBatchNormReLU(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvBatchNormReLU(in_channels, c7, 1)
        self.branch7x7dbl_2 = ConvBatchNormReLU(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvBatchNormReLU(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvBatchNormReLU(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvBatchNormReLU(c7, 192, (1, 7), padding=(0, 3))
        self.pool = tf_average_pool()
        self.branch_pool = ConvBatchNormReLU(in_channels, 192, 1)

    def forward(self, x):
        double = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            double = layer(double)
        return torch.cat([
            self.branch1x1(x),
            self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
            double,
            self.branch_pool(self.pool(x)),
        ], 1)


class Reduction17To8(nn.Module):
    """Mixed_7a (InceptionD): strided 3×3 and 7×7-then-3×3 branches beside a max pool."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = ConvBatchNormReLU(in_channels, 192, 1)
        self.branch3x3_2 = ConvBatchNormReLU(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBatchNormReLU(in_channels, 192, 1)
        self.branch7x7x3_2 = ConvBatchNormReLU(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBatchNormReLU(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBatchNormReLU(192, 192, 3, stride=2)

    def forward(self, x):
        seven = x
        for layer in (self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            seven = layer(seven)
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), seven, F.max_pool2d(x, 3, stride=2)], 1)


class GridBlock8(nn.Module):
    """Mixed_7b/c (InceptionE) at 8 × 8: split 1×3 / 3×1 branches. ``pool`` differs between the two
    blocks in the TensorFlow graph: an average pool in Mixed_7b, a max pool in Mixed_7c."""

    def __init__(self, in_channels: int, pool: nn.Module):
        super().__init__()
        self.branch1x1 = ConvBatchNormReLU(in_channels, 320, 1)
        self.branch3x3_1 = ConvBatchNormReLU(in_channels, 384, 1)
        self.branch3x3_2a = ConvBatchNormReLU(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBatchNormReLU(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBatchNormReLU(in_channels, 448, 1)
        self.branch3x3dbl_2 = ConvBatchNormReLU(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBatchNormReLU(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBatchNormReLU(384, 384, (3, 1), padding=(1, 0))
        self.pool = pool
        self.branch_pool = ConvBatchNormReLU(in_channels, 192, 1)

    def forward(self, x):
        single = self.branch3x3_1(x)
        double = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(single), self.branch3x3_2b(single),
            self.branch3x3dbl_3a(double), self.branch3x3dbl_3b(double),
            self.branch_pool(self.pool(x)),
        ], 1)


class FIDInceptionV3(nn.Module):
    """The FID feature network: ``model(images)`` → (N, dims) float32 features.

    ``dims`` picks the layer, as in pytorch-fid: 64 (first max pool), 192 (second max pool),
    768 (pre-auxiliary, Mixed_6e) or 2048 (pool3, the FID standard); the spatial maps of the first
    three are averaged. ``weights``: ``None`` finds pytorch-fid's file (``FASTFID_WEIGHTS``, the torch
    hub cache, else a download checked by SHA-256), a path loads that file, ``False`` leaves the
    network randomly initialised (tests, timing). ``scaling``: "pytorch-fid" or "tensorflow" (see the
    module). The network stays in eval mode and needs no gradients.
    """

    input_size = INPUT_SIZE

    def __init__(self, dims: int = 2048, weights=None, scaling: str = "pytorch-fid"):
        super().__init__()
        if dims not in FEATURE_DIMS:
            raise ValueError(f"dims must be one of {FEATURE_DIMS} (pytorch-fid's layers), got {dims!r}")
        if scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
        self.dims = dims
        self.scaling = scaling
        # Layers whose random start the weights replace leave torch's generator as it was, so that
        # building the network does not change what a seeded run draws next (clean-fid's generator
        # latents, a seeded KID's subsets); a random network (weights=False) draws from it.
        with torch.random.fork_rng(devices=[], enabled=weights is not False):
            self._build_layers()
        self.weights_name = "random"
        if weights is not False:
            from fastfid.models.weights import load_fid_weights

            self.weights_name = load_fid_weights(self, weights)
        self.requires_grad_(False)
        self.eval()

    def _build_layers(self) -> None:
        self.Conv2d_1a_3x3 = ConvBatchNormReLU(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBatchNormReLU(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBatchNormReLU(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBatchNormReLU(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBatchNormReLU(80, 192, 3)
        self.Mixed_5b = GridBlock35(192, pool_features=32)
        self.Mixed_5c = GridBlock35(256, pool_features=64)
        self.Mixed_5d = GridBlock35(288, pool_features=64)
        self.Mixed_6a = Reduction35To17(288)
        self.Mixed_6b = GridBlock17(768, channels_7x7=128)
        self.Mixed_6c = GridBlock17(768, channels_7x7=160)
        self.Mixed_6d = GridBlock17(768, channels_7x7=160)
        self.Mixed_6e = GridBlock17(768, channels_7x7=192)
        self.Mixed_7a = Reduction17To8(768)
        self.Mixed_7b = GridBlock8(1280, pool=tf_average_pool())
        self.Mixed_7c = GridBlock8(2048, pool=nn.MaxPool2d(3, stride=1, padding=1))
        self.fc = nn.Linear(2048, NUM_CLASSES)

    def train(self, mode: bool = True) -> "FIDInceptionV3":
        # A fixed feature network: batch norm must keep its running statistics whatever the caller does.
        return super().train(False)

    @property
    def feature_space(self) -> str:
        """What these features are, saved with statistics so that incompatible ones are not compared."""
        return f"FIDInceptionV3(dims={self.dims}, weights={self.weights_name})"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._run(images, logits=False)[0]

    def features_and_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features at ``dims`` and the 1008 class logits of the same pass. The logits are pool3 times the
        fc weights without its bias, as in the original Inception Score code (and torch-fidelity)."""
        return self._run(images, logits=True)

    def _run(self, images: torch.Tensor, logits: bool):
        features = None
        for width, x in self.block_maps(self._prepare(images)):
            if width == self.dims:
                features = x.mean(dim=(2, 3))  # pytorch-fid's adaptive average pool to 1 × 1
                if not logits:
                    return features, None
        pool3 = x.mean(dim=(2, 3))
        return features, pool3 @ self.fc.weight.t()

    def block_maps(self, x: torch.Tensor, last: int = 2048):
        """The spatial maps after each of pytorch-fid's four blocks (first max pool: 64 channels,
        second max pool: 192, Mixed_6e: 768, Mixed_7c: 2048), as (width, map), up to ``last``, from an
        input already at 299 × 299 and scaled to [−1, 1]."""
        stages = (
            (64, (self.Conv2d_1a_3x3, self.Conv2d_2a_3x3, self.Conv2d_2b_3x3, _max_pool_3x3_stride_2)),
            (192, (self.Conv2d_3b_1x1, self.Conv2d_4a_3x3, _max_pool_3x3_stride_2)),
            (768, (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a,
                   self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e)),
            (2048, (self.Mixed_7a, self.Mixed_7b, self.Mixed_7c)),
        )
        for width, layers in stages:
            for layer in layers:
                x = layer(x)
            yield width, x
            if width == last:
                return

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"FIDInceptionV3 takes RGB images (N, 3, H, W) in [0, 1], got {shape}")
        if not images.is_floating_point():
            raise TypeError(f"FIDInceptionV3 takes float images in [0, 1], got {images.dtype}")
        images = images.to(self.fc.weight.dtype)
        if tuple(images.shape[-2:]) != INPUT_SIZE:
            images = F.interpolate(images, size=INPUT_SIZE, mode="bilinear", align_corners=False)
        if self.scaling == "tensorflow":
            return (images * 255 - 128) / 128
        return 2 * images - 1


def _max_pool_3x3_stride_2(x):
    return F.max_pool2d(x, 3, stride=2)
