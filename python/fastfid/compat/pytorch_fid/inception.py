"""pytorch-fid's ``InceptionV3`` module over fastfid's FID Inception-v3: the same constructor,
``BLOCK_INDEX_BY_DIM`` and list output (spatial maps of the requested blocks; the last block's
is pooled to N × 2048 × 1 × 1), the same weights file."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastfid.models import FIDInceptionV3
from fastfid.models.inception import FEATURE_DIMS


class InceptionV3(nn.Module):
    """Pretrained FID Inception-v3 returning feature maps, as ``pytorch_fid.inception.InceptionV3``."""

    DEFAULT_BLOCK_INDEX = 3
    BLOCK_INDEX_BY_DIM = {64: 0, 192: 1, 768: 2, 2048: 3}

    def __init__(self, output_blocks=(DEFAULT_BLOCK_INDEX,), resize_input: bool = True, normalize_input: bool = True,
                 requires_grad: bool = False, use_fid_inception: bool = True, *, weights=None):
        super().__init__()
        self.resize_input = resize_input
        self.normalize_input = normalize_input
        self.output_blocks = sorted(output_blocks)
        self.last_needed_block = max(output_blocks)
        if self.last_needed_block > 3:
            raise AssertionError("Last possible output block index is 3")
        if not use_fid_inception:
            raise ValueError("use_fid_inception=False asks for torchvision's ImageNet Inception weights, which are not "
                             "FID's network; fastfid provides the FID Inception only")
        self.network = FIDInceptionV3(FEATURE_DIMS[self.last_needed_block], weights=weights)
        self.network.requires_grad_(requires_grad)

    def train(self, mode: bool = True) -> "InceptionV3":
        self.training = mode  # the network itself stays in eval mode, as pytorch-fid's after .eval()
        return self

    def forward(self, inp: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of the selected blocks, in block order. ``inp``: (N, 3, H, W) in [0, 1]."""
        x = inp
        if self.resize_input:
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        if self.normalize_input:
            x = 2 * x - 1
        outputs = []
        for index, (width, block) in enumerate(self.network.block_maps(x, FEATURE_DIMS[self.last_needed_block])):
            if index in self.output_blocks:
                outputs.append(block.mean(dim=(2, 3), keepdim=True) if width == 2048 else block)
        return outputs
