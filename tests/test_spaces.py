"""The representation spaces (fastfid.models.spaces / networks): each network against an independent
definition on the same images, preprocessing included; DINOv2's positional embedding against the
official rule computed in float64; weights from paths and from the libraries' caches; bad inputs."""

from __future__ import annotations

import hashlib
import importlib
import math
import sys
import urllib.error

import numpy as np
import pytest

torch = pytest.importorskip("torch")
for _library in ("timm", "transformers", "open_clip", "safetensors", "huggingface_hub"):
    pytest.importorskip(_library, reason=f"{_library} is not installed (pip install 'fastfid[spaces]' and the test extras)")
from PIL import Image  # noqa: E402

import support.spaces as support  # noqa: E402
from fastfid.data import ImageFiles  # noqa: E402
from fastfid.extraction import FeatureExtractor  # noqa: E402
from fastfid.models import get_space, space_names, space_of  # noqa: E402
from fastfid.models import networks  # noqa: E402

# float32 networks of depth 2 on 224-px inputs: the definitions differ only in the order of float32
# sums (fused qkv vs split q/k/v, MHA vs SDPA, NHWC vs NCHW norms). Measured: 0 (MAE) to 3.1e-6
# (ConvNeXt), 3-7e-7 for the ViTs; the bar, 1e-5, is far below what a wrong layer, norm, activation or
# positional embedding gives (1e-3 and more: see the tests of the named differences below).
PARITY = 1e-5


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Images of several sizes and aspect ratios (up- and down-scaling, wide and tall)."""
    return support.write_images(tmp_path_factory.mktemp("space_images"), seed=3)


def fastfid_features(space, weights, folder, resize=None) -> np.ndarray:
    """Features through fastfid's own path: decode, resize by the space's plan, network."""
    extractor = FeatureExtractor(space, weights=weights, device="cpu", resize=resize)
    source = ImageFiles(folder)
    batch, = source.batches(0, len(source), batch_size=len(source), plans=extractor.plans, num_workers=0,
                            pin_memory=False)
    return extractor(batch.images)[0].double().numpy()


def pil_images(folder):
    return [Image.open(path) for path in sorted(folder.glob("*.png"))]


def relative_difference(ours, theirs) -> float:
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


# --- DINOv2's positional embedding -----------------------------------------------------------------
def official_interpolation(patches: np.ndarray, grid: int, offset: float = 0.1) -> np.ndarray:
    """float64 bicubic (Keys, a = -0.75) of a (M, M, D) grid to (grid, grid, D), sampling output i at
    (i + 0.5) / s − 0.5 with s = (grid + offset) / M, edge pixels repeated: the official DINOv2
    interpolate_pos_encoding (scale_factor with its 0.1 offset, no antialiasing), from its formula."""
    old = patches.shape[0]
    scale = (grid + offset) / old

    def weights(t):
        a = -0.75
        x = np.array([1 + t, t, 1 - t, 2 - t])
        near = ((a + 2) * x - (a + 3)) * x * x + 1
        far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
        return np.where(x <= 1, near, far)

    matrix = np.zeros((grid, old))
    for i in range(grid):
        real = (i + 0.5) / scale - 0.5
        base = math.floor(real)
        for tap, w in zip(range(base - 1, base + 3), weights(real - base)):
            matrix[i, min(max(tap, 0), old - 1)] += w
    return np.einsum("ia,jb,abd->ijd", matrix, matrix, patches)


def test_dinov2_positional_embedding_follows_the_official_interpolation():
    rng = np.random.default_rng(0)
    pos = torch.from_numpy(rng.standard_normal((1, 1 + 37 * 37, 8)).astype(np.float32))
    ours = networks.dinov2_pos_embed(pos, 16)
    expected = official_interpolation(pos[0, 1:].double().numpy().reshape(37, 37, 8), 16).reshape(256, 8)
    assert torch.equal(ours[0, 0], pos[0, 0])  # the class token's embedding is not interpolated
    # torch computes the source coordinates in float32 (1/s and (i + 0.5)/s, ~1e-6 px off), which moves
    # order-one values by up to ~7e-6 measured; the other rules below differ by 1e-2 and more.
    np.testing.assert_allclose(ours[0, 1:].double().numpy(), expected, atol=2e-5)
    # The other two definitions differ by much more than rounding, which is why fastfid applies the official rule:
    by_size = official_interpolation(pos[0, 1:].double().numpy().reshape(37, 37, 8), 16, offset=0.0).reshape(256, 8)
    assert np.abs(by_size - expected).max() > 1e-2  # transformers' Dinov2 (size=, no antialiasing)
    from timm.layers import resample_abs_pos_embed

    timm_default = resample_abs_pos_embed(pos, (16, 16), num_prefix_tokens=1)[0, 1:].double().numpy()
    assert np.abs(timm_default - expected).max() > 1e-1  # timm's own resample (antialiased)
    assert networks.dinov2_pos_embed(pos, 37) is pos  # at 518 px nothing moves


def _official_hf_interpolation(embeddings):
    """transformers' Dinov2 embeddings with the official interpolation (the float64 formula above)."""
    def interpolate(tokens, height, width):
        grid = height // 14
        table = embeddings.position_embeddings.detach()
        old = math.isqrt(table.shape[1] - 1)
        patches = official_interpolation(table[0, 1:].double().numpy().reshape(old, old, -1), grid)
        resized = torch.from_numpy(patches.reshape(1, grid * grid, -1)).to(table.dtype)
        return torch.cat([table[:, :1], resized], dim=1)
    return interpolate


# --- each network against an independent definition -------------------------------------------------
@pytest.mark.parametrize("name", ["dinov2-vit-l14", "dinov2-vit-g14", "clip-vit-l-14", "clip-vit-l-14-336",
                                  "siglip-so400m", "convnext", "mae-vit-l-16"])
def test_features_match_an_independent_definition(name, images, tmp_path):
    if name.startswith("dinov2"):
        case = support.dinov2_case(tmp_path, name[-3], interpolation=_official_hf_interpolation)
    else:
        case = support.CASES[name](tmp_path)
    ours = fastfid_features(case.space, case.weights, images)
    theirs = case.reference(pil_images(images))
    width = case.space.dims if case.space.projection else case.space.timm_options.get("embed_dim") or ours.shape[1]
    assert ours.shape == theirs.shape == (5, width)
    assert np.abs(theirs).max() > 0.1  # features of order one: the comparison is not of zeros
    assert relative_difference(ours, theirs) < PARITY


def test_dinov2_in_torch_fidelity_mode_matches_its_resize(images, tmp_path):
    case = support.dinov2_case(tmp_path, "l", mode="torch-fidelity", interpolation=_official_hf_interpolation)
    ours = fastfid_features(case.space, case.weights, images, resize="torch-fidelity")
    assert relative_difference(ours, case.reference(pil_images(images))) < PARITY
    dgm = fastfid_features(case.space, case.weights, images)
    assert relative_difference(dgm, ours) > 1e-3  # the two protocols give different features


def test_siglip_follows_the_tanh_gelu_of_the_official_model(images, tmp_path):
    case = support.siglip_case(tmp_path)
    import dataclasses

    exact = dataclasses.replace(case.space, timm_options={k: v for k, v in case.space.timm_options.items()
                                                          if k != "act_layer"})
    difference = relative_difference(fastfid_features(exact, case.weights, images), case.reference(pil_images(images)))
    # timm's default (the exact GELU) is another network: 1.4e-4 measured on this small one (depth 2; it
    # grows with depth), against 5e-7 with the tanh GELU
    assert difference > 3 * PARITY


def test_every_named_space_builds_at_its_full_size_with_its_declared_width():
    import timm

    for name in space_names()[1:]:
        space = get_space(name)
        head = space.dims if space.projection else 0  # a projection space keeps its head: the projection
        with torch.device("meta"):  # the architecture only: no memory, no random initialisation
            network = timm.create_model(space.timm_model, pretrained=False, num_classes=head, **space.timm_options)
        assert (network.num_classes if space.projection else network.num_features) == space.dims, name
        if hasattr(network, "patch_embed"):
            assert network.patch_embed.img_size == (space.image_size, space.image_size), name


# --- weights --------------------------------------------------------------------------------------
def test_weights_of_the_wrong_shape_are_refused_naming_the_keys(tmp_path):
    case = support.mae_case(tmp_path)
    other = support.tiny("mae-vit-l-16", embed_dim=32, depth=2, num_heads=4)
    with pytest.raises(ValueError, match=r"does not hold the mae-vit-l-16 weights.*wrong shape: blocks.0.attn.proj.bias \(64,\) for \(32,\)"):
        networks.SpaceNetwork(other, case.weights)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a weight file")
    with pytest.raises(OSError, match="not a readable weight file"):
        networks.SpaceNetwork(case.space, garbage)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        networks.SpaceNetwork(case.space, tmp_path / "missing.safetensors")


def test_a_path_names_its_weights_by_hash_in_the_feature_space(tmp_path):
    case = support.convnext_case(tmp_path)
    network = networks.SpaceNetwork(case.space, case.weights)
    digest = hashlib.sha256(case.weights.read_bytes()).hexdigest()[:12]
    assert network.feature_space == f"convnext weights={case.weights.name}:sha256={digest}"
    extractor = FeatureExtractor(case.space, weights=case.weights, device="cpu")
    assert extractor.feature_space.startswith("convnext weights=") and "resize=dgm-eval 224x224" in extractor.feature_space
    assert space_of(extractor.feature_space) == "convnext"


def _hub_cache(root, repo: str, filename: str, content: bytes, blob_name: str | None = None):
    """A Hugging Face cache holding one file, laid out as huggingface_hub lays it out."""
    folder = root / "hub" / f"models--{repo.replace('/', '--')}"
    revision = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    (folder / "blobs").mkdir()
    blob = folder / "blobs" / (blob_name or hashlib.sha256(content).hexdigest())
    blob.write_bytes(content)
    snapshot = folder / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (snapshot / filename).symlink_to(blob)
    return blob


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """huggingface_hub reading a private cache, offline (its constants are read at import)."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for module in [m for m in sys.modules if m.startswith("huggingface_hub")]:
        monkeypatch.delitem(sys.modules, module)
    return tmp_path / "hf"


def test_published_weights_come_from_the_hugging_face_cache_checked_by_their_hash(tmp_path, offline_hub):
    case = support.mae_case(tmp_path)
    published = case.space.weights
    _hub_cache(offline_hub, published.repo, published.filename, case.weights.read_bytes())
    network = networks.SpaceNetwork(case.space)  # no path: the library's cache, offline
    assert network.feature_space == "mae-vit-l-16 weights=timm/vit_large_patch16_224.mae/model.safetensors"
    reference = networks.SpaceNetwork(case.space, case.weights)
    x = torch.rand(2, 3, 224, 224)
    assert torch.equal(network(x), reference(x))


def test_a_damaged_cached_file_is_refused_by_the_published_hash(tmp_path, offline_hub):
    case = support.mae_case(tmp_path)
    published = case.space.weights
    content = case.weights.read_bytes()
    _hub_cache(offline_hub, published.repo, published.filename, content[:-1] + b"\0",
               blob_name=hashlib.sha256(content).hexdigest())
    with pytest.raises(OSError, match="do not match the SHA-256 the hub publishes"):
        networks.SpaceNetwork(case.space)


def test_missing_weights_offline_say_which_file_and_what_to_set(tmp_path, offline_hub, monkeypatch):
    space = support.tiny("siglip-so400m", embed_dim=WIDTH_SMALL, depth=1, num_heads=2)
    with pytest.raises(OSError) as caught:
        networks.SpaceNetwork(space)
    message = str(caught.value)
    assert "timm/vit_so400m_patch14_siglip_224.webli/model.safetensors" in message
    assert "--weights siglip-so400m=PATH" in message and "HF_HOME" in message
    # DINOv2's file comes from Meta's URL into torch hub's cache: unreachable, the error says the same
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def unreachable(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(networks.download.__globals__["urllib"].request, "urlopen", unreachable)
    with pytest.raises(OSError, match=r"cannot download the dinov2-vit-s14 weights from https://dl\.fbaipublicfiles"
                                      r"\.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain\.pth.*weights=PATH"):
        networks.SpaceNetwork(support.tiny("dinov2-vit-s14", embed_dim=WIDTH_SMALL, depth=1, num_heads=2))
    assert not list((tmp_path / "torch").rglob("*.pth"))  # nothing half-downloaded is left


WIDTH_SMALL = 16


# --- bad inputs -----------------------------------------------------------------------------------
def test_an_unknown_space_is_refused_with_the_list_of_names(images):
    import fastfid

    with pytest.raises(ValueError, match=r"unknown representation space 'dinov3'; the spaces are: inception, "
                                         r"dinov2-vit-s14"):
        fastfid.compute_stats(images, model=["inception", "dinov3"], device="cpu", progress=False)
    with pytest.raises(ValueError, match="unknown representation space 'clip'"):
        FeatureExtractor("clip", device="cpu")
    with pytest.raises(ValueError, match="preprocessing is one of .'dgm-eval', 'torch-fidelity', 'edm2', 'cmmd', 'cmmd-pytorch'., got 'clean'"):
        fastfid.compute_stats(images, model="convnext", resize="clean", device="cpu", progress=False)


def test_a_missing_library_names_the_extra_in_one_line(monkeypatch):
    from fastfid import _imports

    real_import = importlib.import_module

    def without_timm(name, *args):
        if name == "timm" or name.startswith("timm."):
            raise ModuleNotFoundError("No module named 'timm'")
        return real_import(name, *args)

    monkeypatch.setattr(_imports.importlib, "import_module", without_timm)
    with pytest.raises(ImportError) as caught:
        networks.SpaceNetwork("convnext", weights=False)
    assert str(caught.value) == ("the representation spaces need timm (No module named 'timm'): "
                                 'pip install "fastfid[spaces]"')


def test_a_torchvision_that_cannot_load_beside_torch_is_named_in_one_line():
    # In a fresh interpreter (no test shim): where this environment's torchvision loads, the drop-in
    # imports; where it cannot (PyPI's beside a CPU torch), one line says so and what fixes it.
    import subprocess
    import sys

    script = ("try:\n    import torchvision\nexcept Exception:\n    print('broken', flush=True)\n"
              "import fastfid.compat.torchmetrics")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    if done.stdout.strip() != "broken":
        assert done.returncode == 0, done.stderr
        return
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1 and last.startswith("ImportError: torchvision ") and "cannot load beside torch" in last
    assert "pip install torch==2.14.1 torchvision==0.29.1" in last
