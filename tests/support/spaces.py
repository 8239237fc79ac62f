"""Small networks of each space's definition, their weights as the publisher ships them (random,
made here: no test downloads anything), and an independent reference definition of each: transformers'
Dinov2Model, SiglipVisionModel, ViTMAEModel and ConvNextModel, open_clip's VisionTransformer, each with
its own preprocessing (torchvision's transforms on PIL images, open_clip's image_transform).

Key maps below translate timm's (= the publisher's) names into the reference's: facts about the
two libraries' layouts, written from their state dicts."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from support.peers import declare_torchvision_ops

declare_torchvision_ops()  # timm and open_clip import torchvision (see peers.py)

from fastfid.models import get_space  # noqa: E402
from fastfid.models.spaces import Space  # noqa: E402

WIDTH, HEADS, DEPTH = 64, 4, 2


def tiny(name: str, **options) -> Space:
    """The space's definition at a small width and depth (same timm architecture and options)."""
    space = get_space(name)
    return dataclasses.replace(space, timm_options={**space.timm_options, **options})


def randomize(state: dict, seed: int) -> dict:
    """Random weights of a scale that keeps activations of order one: matrices ~ N(0, 1/fan_in),
    norm scales near 1, layer scales (init 1e-5 in DINOv2, which would hide the blocks) near 0.5."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in state.items():
        noise = torch.randn(value.shape, generator=generator, dtype=torch.float32)
        if value.dim() >= 2 and "pos" not in key and "token" not in key and "probe" not in key and "latent" not in key:
            fan_in = value[0].numel()
            out[key] = noise / fan_in ** 0.5
        elif re.search(r"norm|ln_|layernorm", key) and key.endswith("weight"):
            out[key] = 1 + 0.2 * noise
        elif "gamma" in key or "lambda1" in key or "layer_scale" in key:
            out[key] = 0.5 + 0.1 * noise
        else:
            out[key] = 0.2 * noise
    return out


def _split_qkv(state: dict, key: str, prefix: str, names=("q_proj", "k_proj", "v_proj")) -> dict:
    out = {}
    for suffix in ("weight", "bias"):
        if f"{key}.{suffix}" in state:
            for name, part in zip(names, state[f"{key}.{suffix}"].chunk(3)):
                out[f"{prefix}.{name}.{suffix}"] = part
    return out


def _renamed(state: dict, rules: list[tuple[str, str]], handled=()) -> dict:
    out = {}
    for key, value in state.items():
        if any(re.fullmatch(h, key) for h in handled):
            continue
        new = key
        for pattern, replacement in rules:
            new = re.sub(pattern, replacement, new)
        out[new] = value
    return out


def official_dinov2_to_hf(state: dict, depth: int) -> dict:
    out = _renamed(state, [
        (r"^cls_token$", "embeddings.cls_token"), (r"^mask_token$", "embeddings.mask_token"),
        (r"^pos_embed$", "embeddings.position_embeddings"),
        (r"^patch_embed\.proj", "embeddings.patch_embeddings.projection"),
        (r"^blocks\.(\d+)\.attn\.proj", r"encoder.layer.\1.attention.o_proj"),
        (r"^blocks\.(\d+)\.ls(\d)\.gamma", r"encoder.layer.\1.layer_scale\2.lambda1"),
        (r"^blocks\.(\d+)\.mlp\.w3", r"encoder.layer.\1.mlp.down_proj"),
        (r"^blocks\.(\d+)\.", r"encoder.layer.\1."), (r"^norm\.", "layernorm."),
    ], handled=[r"blocks\.\d+\.attn\.qkv\.(weight|bias)", r"blocks\.\d+\.mlp\.w12\.(weight|bias)"])
    for i in range(depth):
        out.update(_split_qkv(state, f"blocks.{i}.attn.qkv", f"encoder.layer.{i}.attention"))
        for suffix in ("weight", "bias"):  # SwiGLU: w12 packs the gate (silu'd) over the up projection
            if f"blocks.{i}.mlp.w12.{suffix}" in state:
                gate, up = state[f"blocks.{i}.mlp.w12.{suffix}"].chunk(2)
                out[f"encoder.layer.{i}.mlp.gate_proj.{suffix}"] = gate
                out[f"encoder.layer.{i}.mlp.up_proj.{suffix}"] = up
    return out


def timm_siglip_to_hf(state: dict, depth: int) -> dict:
    out = _renamed(state, [
        (r"^patch_embed\.proj", "embeddings.patch_embedding"),
        (r"^blocks\.(\d+)\.norm(\d)", r"encoder.layers.\1.layer_norm\2"),
        (r"^blocks\.(\d+)\.attn\.proj", r"encoder.layers.\1.self_attn.out_proj"),
        (r"^blocks\.(\d+)\.mlp", r"encoder.layers.\1.mlp"), (r"^norm\.", "post_layernorm."),
        (r"^attn_pool\.latent$", "head.probe"), (r"^attn_pool\.proj", "head.attention.out_proj"),
        (r"^attn_pool\.norm", "head.layernorm"), (r"^attn_pool\.mlp", "head.mlp"),
    ], handled=[r"blocks\.\d+\.attn\.qkv\.(weight|bias)", r"pos_embed", r"attn_pool\.(q|kv)\.(weight|bias)"])
    for i in range(depth):
        out.update(_split_qkv(state, f"blocks.{i}.attn.qkv", f"encoder.layers.{i}.self_attn"))
    out["embeddings.position_embedding.weight"] = state["pos_embed"][0]
    for suffix, name in (("weight", "in_proj_weight"), ("bias", "in_proj_bias")):
        out[f"head.attention.{name}"] = torch.cat([state[f"attn_pool.q.{suffix}"], state[f"attn_pool.kv.{suffix}"]])
    return out


def timm_mae_to_hf(state: dict, depth: int) -> dict:
    out = _renamed(state, [
        (r"^cls_token$", "embeddings.cls_token"), (r"^pos_embed$", "embeddings.position_embeddings"),
        (r"^patch_embed\.proj", "embeddings.patch_embeddings.projection"),
        (r"^blocks\.(\d+)\.norm1", r"layers.\1.layernorm_before"),
        (r"^blocks\.(\d+)\.norm2", r"layers.\1.layernorm_after"),
        (r"^blocks\.(\d+)\.attn\.proj", r"layers.\1.attention.o_proj"),
        (r"^blocks\.(\d+)\.mlp", r"layers.\1.mlp"), (r"^norm\.", "layernorm."),
    ], handled=[r"blocks\.\d+\.attn\.qkv\.(weight|bias)"])
    for i in range(depth):
        out.update(_split_qkv(state, f"blocks.{i}.attn.qkv", f"layers.{i}.attention"))
    return out


def timm_convnext_to_hf(state: dict) -> dict:
    return _renamed(state, [
        (r"^stem\.0", "embeddings.patch_embeddings"), (r"^stem\.1", "embeddings.layernorm"),
        (r"^stages\.(\d+)\.downsample\.", r"encoder.stages.\1.downsampling_layer."),
        (r"^stages\.(\d+)\.blocks\.(\d+)\.gamma", r"encoder.stages.\1.layers.\2.layer_scale_parameter"),
        (r"^stages\.(\d+)\.blocks\.(\d+)\.conv_dw", r"encoder.stages.\1.layers.\2.dwconv"),
        (r"^stages\.(\d+)\.blocks\.(\d+)\.norm", r"encoder.stages.\1.layers.\2.layernorm"),
        (r"^stages\.(\d+)\.blocks\.(\d+)\.mlp\.fc(\d)", r"encoder.stages.\1.layers.\2.pwconv\3"),
        (r"^head\.norm", "layernorm"),
    ], handled=[r"head\.fc\.(weight|bias)"])


def write_images(folder: Path, seed: int, shapes=((300, 260), (97, 150), (224, 224), (512, 384), (64, 40))) -> Path:
    """Photo-like PNGs (smooth colour fields with noise) of several sizes and aspect ratios."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index, (height, width) in enumerate(shapes):
        base = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(base).resize((width, height), Image.Resampling.BILINEAR))
        noisy = np.clip(smooth.astype(int) + rng.integers(-20, 21, smooth.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"{index:03d}.png")
    return folder


# --- one case per space ------------------------------------------------------------------------------
@dataclass
class Case:
    space: Space
    weights: Path
    reference: Callable
    """PIL images → float64 (N, d) features by the reference definition and its own preprocessing."""


def _transform_squash(space: Space, mode: str = "dgm-eval"):
    from torchvision import transforms

    if mode == "torch-fidelity":  # torch-fidelity's own resize of uint8 values, then the normalisation
        from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

        def prepare(image):
            pixels = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)[None].float()
            resized = interpolate_bilinear_2d_like_tensorflow1x(pixels, size=(224, 224), align_corners=False)[0]
            return transforms.functional.normalize(resized, [255 * m for m in space.mean], [255 * s for s in space.std])
        return prepare
    return transforms.Compose([transforms.Resize((224, 224), interpolation=transforms.InterpolationMode.BICUBIC),
                               transforms.ToTensor(), transforms.Normalize(space.mean, space.std)])


def _features(network, prepare, images, call) -> np.ndarray:
    batch = torch.stack([prepare(image.convert("RGB")) for image in images])
    with torch.no_grad():
        return call(network.eval(), batch).double().numpy()


def dinov2_case(tmp: Path, letter: str = "l", mode: str = "dgm-eval", interpolation=None) -> Case:
    """The official checkpoint layout (timm's names at 518 px, a mask token; SwiGLU w12/w3 for g)."""
    import timm
    import transformers

    giant = letter == "g"
    options = dict(embed_dim=WIDTH, depth=DEPTH, num_heads=HEADS, **({"mlp_ratio": 5.5} if giant else {}))
    space = tiny(f"dinov2-vit-{letter}14", **options)
    trained = timm.create_model(space.timm_model, pretrained=False, num_classes=0, img_size=518, **options)
    state = randomize({**trained.state_dict(), "mask_token": torch.zeros(1, WIDTH)}, seed=1)
    if giant:
        state = {k.replace("mlp.fc1", "mlp.w12").replace("mlp.fc2", "mlp.w3"): v for k, v in state.items()}
    path = tmp / f"dinov2_vit{letter}14_pretrain.pth"
    torch.save(state, path)
    config = transformers.Dinov2Config(hidden_size=WIDTH, num_hidden_layers=DEPTH, num_attention_heads=HEADS,
                                       mlp_ratio=4, image_size=518, patch_size=14, use_swiglu_ffn=giant,
                                       layer_norm_eps=1e-6)
    reference = transformers.Dinov2Model(config)
    if interpolation is not None:  # the official rule, put in place of transformers' own
        reference.embeddings.interpolate_pos_encoding = interpolation(reference.embeddings)
    reference.load_state_dict(official_dinov2_to_hf(state, DEPTH))
    prepare = _transform_squash(space, mode)
    return Case(space, path, lambda images: _features(reference, prepare, images,
                                                      lambda net, x: net(pixel_values=x).pooler_output))


def clip_case(tmp: Path) -> Case:
    """open_clip's checkpoint layout (visual.* beside the text tower) and open_clip's own tower."""
    import open_clip
    from open_clip.transformer import VisionTransformer

    space = tiny("clip-vit-l-14", embed_dim=WIDTH, depth=DEPTH, num_heads=HEADS)
    tower = VisionTransformer(image_size=224, patch_size=14, width=WIDTH, layers=DEPTH, heads=HEADS, mlp_ratio=4.0,
                              output_dim=32)
    visual = randomize(tower.state_dict(), seed=2)
    state = {**{f"visual.{k}": v for k, v in visual.items()}, "logit_scale": torch.tensor(4.6),
             "token_embedding.weight": torch.zeros(10, 32)}
    path = tmp / "open_clip_pytorch_model.bin"
    torch.save(state, path)
    tower.load_state_dict(visual)
    tower.proj = None  # the CLS token after ln_post, before the projection
    prepare = open_clip.image_transform(224, is_train=False, mean=space.mean, std=space.std)
    return Case(space, path, lambda images: _features(tower, prepare, images, lambda net, x: net(x)))


def cmmd_prepare(space: Space, size: int):
    """google-research CMMD's preprocessing, from its definition: the centre square (corner rounded
    down) cut from the PIL image, PIL's bicubic to size × size, /255, CLIP's mean and std."""
    from torchvision import transforms

    def prepare(image):
        width, height = image.size
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        square = image.crop((left, top, left + side, top + side)).resize((size, size), resample=3)  # 3: BICUBIC
        return transforms.Normalize(space.mean, space.std)(transforms.ToTensor()(square))
    return prepare


def clip336_case(tmp: Path) -> Case:
    """OpenAI's CLIP layout (visual.* with its projection, as open_clip saves the openai weights) and
    open_clip's own tower with QuickGELU; the embedding is the projection, L2-normalised."""
    import dataclasses

    from open_clip.transformer import QuickGELU, VisionTransformer

    projected = 32
    space = dataclasses.replace(tiny("clip-vit-l-14-336", embed_dim=WIDTH, depth=DEPTH, num_heads=HEADS),
                                dims=projected)
    tower = VisionTransformer(image_size=336, patch_size=14, width=WIDTH, layers=DEPTH, heads=HEADS, mlp_ratio=4.0,
                              output_dim=projected, act_layer=QuickGELU)
    visual = randomize(tower.state_dict(), seed=5)
    state = {**{f"visual.{k}": v for k, v in visual.items()}, "logit_scale": torch.tensor(4.6),
             "token_embedding.weight": torch.zeros(10, projected)}
    path = tmp / "open_clip_pytorch_model.bin"
    torch.save(state, path)
    tower.load_state_dict(visual)
    prepare = cmmd_prepare(space, 336)
    return Case(space, path, lambda images: _features(
        tower, prepare, images, lambda net, x: torch.nn.functional.normalize(net(x), dim=-1)))


def _timm_published(space: Space, tmp: Path, seed: int, classes: int = 0) -> tuple[dict, Path]:
    """A timm-layout checkpoint (the HF hub's timm/* files), saved as safetensors."""
    import timm
    from safetensors.torch import save_file

    network = timm.create_model(space.timm_model, pretrained=False, num_classes=classes, **space.timm_options)
    state = randomize(network.state_dict(), seed)
    path = tmp / f"{space.name}.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return state, path


def siglip_case(tmp: Path) -> Case:
    import transformers

    space = tiny("siglip-so400m", embed_dim=WIDTH, depth=DEPTH, num_heads=HEADS)
    state, path = _timm_published(space, tmp, seed=3)
    hidden = int(WIDTH * 3.7362)
    config = transformers.SiglipVisionConfig(hidden_size=WIDTH, num_hidden_layers=DEPTH, num_attention_heads=HEADS,
                                             intermediate_size=hidden, image_size=224, patch_size=14,
                                             layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh")
    reference = transformers.SiglipVisionModel(config)
    reference.load_state_dict(timm_siglip_to_hf(state, DEPTH))
    prepare = _transform_squash(space)
    return Case(space, path, lambda images: _features(reference, prepare, images,
                                                      lambda net, x: net(pixel_values=x).pooler_output))


def convnext_case(tmp: Path) -> Case:
    import transformers

    dims, depths = (16, 32, 48, 64), (1, 1, 2, 1)
    space = dataclasses.replace(tiny("convnext", dims=dims, depths=depths))
    state, path = _timm_published(space, tmp, seed=4, classes=7)  # with the classifier, as published
    config = transformers.ConvNextConfig(hidden_sizes=list(dims), depths=list(depths))
    reference = transformers.ConvNextModel(config)
    reference.load_state_dict(timm_convnext_to_hf(state))
    prepare = _transform_squash(space)
    return Case(space, path, lambda images: _features(reference, prepare, images,
                                                      lambda net, x: net(pixel_values=x).pooler_output))


def mae_case(tmp: Path) -> Case:
    import transformers

    space = tiny("mae-vit-l-16", embed_dim=WIDTH, depth=DEPTH, num_heads=HEADS)
    state, path = _timm_published(space, tmp, seed=5)
    config = transformers.ViTMAEConfig(hidden_size=WIDTH, num_hidden_layers=DEPTH, num_attention_heads=HEADS,
                                       intermediate_size=4 * WIDTH, image_size=224, patch_size=16, mask_ratio=0.0,
                                       layer_norm_eps=1e-6)
    reference = transformers.ViTMAEModel(config)
    reference.load_state_dict(timm_mae_to_hf(state, DEPTH))
    prepare = _transform_squash(space)
    patches = (224 // 16) ** 2

    def call(net, x):  # noise in increasing order: MAE's shuffle keeps every patch in place
        noise = torch.arange(patches, dtype=torch.float32).expand(x.shape[0], patches)
        return net(pixel_values=x, noise=noise).last_hidden_state[:, 0]
    return Case(space, path, lambda images: _features(reference, prepare, images, call))


CASES = {"dinov2-vit-l14": dinov2_case, "dinov2-vit-g14": lambda tmp: dinov2_case(tmp, "g"),
         "clip-vit-l-14": clip_case, "clip-vit-l-14-336": clip336_case, "siglip-so400m": siglip_case,
         "convnext": convnext_case,
         "mae-vit-l-16": mae_case}
