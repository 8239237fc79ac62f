"""The named representation spaces: what each network is, where its weights come from, how images
reach it and which layer its features are. Torch-free (statistics files name their space and are
read without torch); the networks themselves are built by :mod:`fastfid.models.networks`.

Every network but Inception is timm's definition, loaded from its publisher's checkpoint through
timm's own converters (the parity tests check each against an independent definition:
transformers or open_clip). Preprocessing modes of a space:

- ``"dgm-eval"`` (default): as dgm-eval and the Representation Fréchet Loss evaluate: the decoded
  8-bit image resized by PIL's bicubic filter (``squash``: to size × size; ``crop``: the shorter side
  to size, then the centre square), then the network's mean and std;
- ``"torch-fidelity"``: as torch-fidelity 0.4's DINOv2 and CLIP extractors: TensorFlow 1's bilinear
  resize of the 8-bit values straight to size × size (no crop), then the same mean and std;
- ``"edm2"``: as EDM2's FD_DINOv2 with its default ``resize_mode='torch'``: torch's antialiased bicubic
  of the 8-bit values straight to size × size (no crop), not rounded, then the same mean and std.
  EDM2's other mode, ``'pil'``, is dgm-eval's resize: ``"dgm-eval"`` here;
- ``"cmmd"``: as google-research's CMMD: the centre square of the image (side the shorter one, corner
  rounded down), PIL's bicubic of it to size × size (8-bit, rounded), then the mean and std;
- ``"cmmd-pytorch"``: cmmd-pytorch's resize of arrays: the same centre square, then torch's bicubic
  without antialiasing of the 8-bit values to size × size, not rounded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["SPACE_RESIZE_MODES", "Space", "Weights", "get_space", "space_names", "space_of"]

SPACE_RESIZE_MODES = ("dgm-eval", "torch-fidelity", "edm2", "cmmd", "cmmd-pytorch")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class Weights:
    """Where a space's published weights are: a URL (cached in torch hub's checkpoints folder, as
    torch.hub names them) or a file of a Hugging Face hub repository (in the HF cache, whose blobs are
    named by the SHA-256 the hub publishes, checked on load)."""

    url: str | None = None
    repo: str | None = None
    filename: str | None = None

    @property
    def name(self) -> str:
        """The file's name, which statistics carry as the weights' identity."""
        return self.url.rsplit("/", 1)[-1] if self.url else f"{self.repo}/{self.filename}"


@dataclass(frozen=True)
class Space:
    """One representation space: a network, its weights, its input and its feature layer."""

    name: str
    dims: int
    """Feature dimension."""
    timm_model: str
    """The timm architecture (created without pretrained weights, classifier removed)."""
    weights: Weights
    image_size: int
    geometry: str
    """``"squash"`` (resize to size × size), ``"crop"`` (shorter side to size, centre square) or
    ``"centre"`` (the centre square first, then to size × size)."""
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    layer: str
    """Where the features come from, in words."""
    converter: str = "timm"
    """How the publisher's checkpoint becomes timm's: ``"timm"`` (timm's checkpoint filter) or
    ``"dinov2"`` (the official positional-embedding interpolation first, see networks.py)."""
    timm_options: dict = field(default_factory=dict)
    """Architecture overrides (the tests build small networks of the same definition with them)."""
    projection: bool = False
    """The publisher's projection head is kept: the features are the projected embedding (``dims`` wide),
    L2-normalised, as CLIP's image embedding is (CMMD's)."""
    default_resize: str = "dgm-eval"
    """The preprocessing mode when none is asked."""

    def resize_op(self, mode: str) -> str:
        """The image operation of fastfid.data for a preprocessing mode of this space."""
        check_space_resize(mode)
        return {"dgm-eval": f"pil-bicubic-{self.geometry}", "edm2": "torch-bicubic", "cmmd": "pil-bicubic-centre",
                "cmmd-pytorch": "torch-bicubic-centre"}.get(mode, "torch-fidelity")


def check_space_resize(mode: str) -> str:
    if mode not in SPACE_RESIZE_MODES:
        raise ValueError(f"the representation spaces' preprocessing is one of {SPACE_RESIZE_MODES}, got {mode!r} "
                         "(pytorch-fid, clean, ... are the FID Inception's)")
    return mode


def _dinov2(size: str, letter: str, dims: int) -> Space:
    stem = f"dinov2_vit{letter}14"
    return Space(f"dinov2-vit-{letter}14", dims, f"vit_{size}_patch14_dinov2",
                 Weights(url=f"https://dl.fbaipublicfiles.com/dinov2/{stem}/{stem}_pretrain.pth"),
                 224, "squash", IMAGENET_MEAN, IMAGENET_STD, "CLS token after the final norm", converter="dinov2",
                 timm_options={"img_size": 224})


_SPACES = [
    _dinov2("small", "s", 384),
    _dinov2("base", "b", 768),
    _dinov2("large", "l", 1024),
    _dinov2("giant", "g", 1536),
    Space("clip-vit-l-14", 1024, "vit_large_patch14_clip_224",
          Weights(repo="laion/CLIP-ViT-L-14-DataComp.XL-s13B-b90K", filename="open_clip_pytorch_model.bin"),
          224, "crop", CLIP_MEAN, CLIP_STD, "CLS token after ln_post, before the projection (open_clip "
          "datacomp_xl_s13b_b90k)"),
    Space("clip-vit-l-14-336", 768, "vit_large_patch14_clip_quickgelu_336",
          Weights(repo="timm/vit_large_patch14_clip_336.openai", filename="model.safetensors"),
          336, "centre", CLIP_MEAN, CLIP_STD, "the projected image embedding, L2-normalised (OpenAI's CLIP ViT-L/14 "
          "at 336 px, QuickGELU): CMMD's", projection=True, default_resize="cmmd"),
    Space("siglip-so400m", 1152, "vit_so400m_patch14_siglip_224",
          Weights(repo="timm/vit_so400m_patch14_siglip_224.webli", filename="model.safetensors"),
          224, "squash", HALF, HALF, "attention-pooled embedding (MAP head, before any projection; WebLI)",
          # big_vision's SigLIP (and transformers') uses the tanh GELU; timm's definition the exact one.
          timm_options={"act_layer": "gelu_tanh"}),
    Space("convnext", 2048, "convnext_xlarge",
          Weights(repo="timm/convnext_xlarge.fb_in22k", filename="model.safetensors"),
          224, "squash", IMAGENET_MEAN, IMAGENET_STD, "global average pool and the head's norm, before the "
          "classifier (ConvNeXt-XL, ImageNet-22k)"),
    Space("mae-vit-l-16", 1024, "vit_large_patch16_224",
          Weights(repo="timm/vit_large_patch16_224.mae", filename="model.safetensors"),
          224, "squash", IMAGENET_MEAN, IMAGENET_STD, "CLS token after the final norm (MAE pre-trained encoder)"),
]
SPACES = {space.name: space for space in _SPACES}
INCEPTION = "inception"


def space_names() -> tuple[str, ...]:
    """Every name ``model=`` accepts: ``"inception"`` (the FID Inception-v3, pool3) and the spaces."""
    return (INCEPTION, *SPACES)


def get_space(name: str) -> Space:
    try:
        return SPACES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown representation space {name!r}; the spaces are: {', '.join(space_names())}") \
            from None


def space_of(feature_space: str | None) -> str | None:
    """The space a statistics file's ``feature_space`` (or its network's label) names (None for other
    networks)."""
    if not feature_space:
        return None
    if feature_space.startswith("FIDInceptionV3(dims=2048"):
        return INCEPTION
    head = feature_space.split(" ", 1)[0]
    return head if head in SPACES else None
