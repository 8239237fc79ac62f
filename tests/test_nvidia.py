"""NVIDIA's protocol (StyleGAN2-ADA/3, EDM, EDM2): its reference files read as they are (EDM's
fid-refs .npz, EDM2's pickles through a restricted unpickler), its TorchScript detector run as a
feature network and shown equal to fastfid's legacy_tensorflow preprocessing, EDM2's DINOv2 resize,
and the covariance divisor each protocol uses."""

import json
import os
import pickle
import warnings

import numpy as np
import pytest
import scipy.linalg

import fastfid
from fastfid.cli import main
from fastfid.files.nvidia import read_reference_pickle


def scipy_fd(mu1, sigma1, mu2, sigma2) -> float:
    """EDM's formula in float64 scipy (calculate_metrics_from_stats)."""
    root = scipy.linalg.sqrtm(sigma1 @ sigma2)  # EDM passes disp=False, which newer scipy deprecates
    return float(np.real(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1 + sigma2 - 2 * root)))


def gaussian_stats(rng, d, n=None, shift=0.0):
    x = rng.standard_normal((n or 4 * d, d)) @ rng.standard_normal((d, d)) / np.sqrt(d) + shift
    return {"mu": x.mean(0), "sigma": np.cov(x, rowvar=False)}


@pytest.fixture
def edm2_reference(tmp_path, rng):
    """A file made to EDM2's format (calculate_metrics.py's save_stats: pickle.dump of the dict)."""
    ref = {"num_images": 50_000, "fid": gaussian_stats(rng, 24), "fd_dinov2": gaussian_stats(rng, 16)}
    path = tmp_path / "img512.pkl"
    path.write_bytes(pickle.dumps(ref))
    return path, ref


# --- reference files ------------------------------------------------------------------------------
def test_an_edm_fid_ref_npz_is_read_as_it_is(tmp_path, rng):
    ref, gen = gaussian_stats(rng, 20), gaussian_stats(rng, 20, shift=0.3)
    np.savez(tmp_path / "cifar10-32x32.npz", **ref)  # EDM's fid.py: np.savez(dest, mu=mu, sigma=sigma)
    loaded = fastfid.FeatureStats.load(tmp_path / "cifar10-32x32.npz")
    assert np.array_equal(loaded.mean, ref["mu"]) and np.array_equal(loaded.cov, ref["sigma"])
    # Exact eigen route against scipy's sqrtm: 1e-9 of the traces, far above either's rounding.
    bound = 1e-9 * (np.trace(ref["sigma"]) + np.trace(gen["sigma"]))
    value = fastfid.fid((gen["mu"], gen["sigma"]), tmp_path / "cifar10-32x32.npz")
    assert abs(value - scipy_fd(gen["mu"], gen["sigma"], ref["mu"], ref["sigma"])) <= bound


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_an_edm2_pickle_loads_as_a_file_of_two_spaces(tmp_path, rng, protocol):
    ref = {"num_images": 50_000, "fid": gaussian_stats(rng, 24), "fd_dinov2": gaussian_stats(rng, 16)}
    path = tmp_path / "img512.pkl"
    path.write_bytes(pickle.dumps(ref, protocol=protocol))
    spaces = fastfid.load_spaces(path)
    assert list(spaces) == ["inception", "dinov2-vit-l14"]
    for space, metric in (("inception", "fid"), ("dinov2-vit-l14", "fd_dinov2")):
        assert np.array_equal(spaces[space].mean, ref[metric]["mu"])
        assert np.array_equal(spaces[space].cov, ref[metric]["sigma"])
    assert read_reference_pickle(path)[1] == 50_000
    # A statistics file where one space is asked: the FID's.
    assert np.array_equal(fastfid.FeatureStats.load(path).mean, ref["fid"]["mu"])


def test_fid_and_fd_dinov2_against_an_edm2_pickle_are_edms_formula(edm2_reference, tmp_path, rng, capsys):
    path, ref = edm2_reference
    gen = {"fid": gaussian_stats(rng, 24, shift=0.2), "fd_dinov2": gaussian_stats(rng, 16, shift=-0.1)}
    np.savez(tmp_path / "gen_fid.npz", **gen["fid"])
    np.savez(tmp_path / "gen_dino.npz", **gen["fd_dinov2"])
    for metric, space, generated in (("fid", None, "gen_fid.npz"), ("fd_dinov2", "dinov2-vit-l14", "gen_dino.npz")):
        expected = scipy_fd(gen[metric]["mu"], gen[metric]["sigma"], ref[metric]["mu"], ref[metric]["sigma"])
        bound = 1e-9 * (np.trace(gen[metric]["sigma"]) + np.trace(ref[metric]["sigma"]))
        result = fastfid.compute_fid(tmp_path / generated, path, model=space or 2048, progress=False)
        assert abs(result.value - expected) <= bound
        arguments = ["fid", str(tmp_path / generated), str(path), "--json", "--quiet"]
        assert main(arguments + (["--space", space] if space else [])) == 0
        assert abs(json.loads(capsys.readouterr().out)["fid"] - expected) <= bound


def test_a_pickle_that_names_code_is_refused_before_anything_runs(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path = tmp_path / "img512.pkl"
    path.write_bytes(pickle.dumps({"fid": {"mu": Payload(), "sigma": np.eye(2)}}))
    with pytest.raises(OSError, match=r"img512.pkl is refused as a reference pickle: it names (posix|os)\.system"):
        fastfid.load_spaces(path)
    assert not marker.exists()
    assert main(["fid", str(path), str(path)]) == 1  # one line, no traceback (the CLI's error path)


@pytest.mark.parametrize("content, message", [
    ([1, 2], "holds a list, not EDM2's dict"),
    ({"fid": {"mu": np.zeros(3)}}, r"\[fid\] is not a dict with mu and sigma"),
    ({"fid": {"mu": np.zeros(3, dtype=np.int64), "sigma": np.eye(3)}}, "must be float arrays"),
    ({"kid": {}}, "holds kid, which EDM2's references do not"),
    ({"num_images": 1, "fid": {"mu": np.zeros(3), "sigma": np.eye(3)}}, "not a count of at least 2"),
    ({"num_images": 3}, "holds no statistics"),
])
def test_a_pickle_not_of_edm2s_shape_is_named(tmp_path, content, message):
    path = tmp_path / "ref.pkl"
    path.write_bytes(pickle.dumps(content))
    with pytest.raises(ValueError, match=message):
        fastfid.load_spaces(path)


def test_a_truncated_pickle_and_wrong_statistics_are_named(tmp_path, rng):
    good = pickle.dumps({"fid": gaussian_stats(rng, 8)})
    (tmp_path / "cut.pkl").write_bytes(good[: len(good) // 2])
    with pytest.raises(OSError, match="cut.pkl is not a readable pickle"):
        fastfid.load_spaces(tmp_path / "cut.pkl")
    bad = {"fid": {"mu": np.zeros(3), "sigma": np.full((3, 3), np.nan)}}
    (tmp_path / "bad.pkl").write_bytes(pickle.dumps(bad))
    with pytest.raises(ValueError, match=r"bad.pkl \[inception\]: sigma contains NaN"):
        fastfid.load_spaces(tmp_path / "bad.pkl")
    (tmp_path / "dino.pkl").write_bytes(pickle.dumps({"fd_dinov2": gaussian_stats(rng, 8)}))
    with pytest.raises(ValueError, match="dino.pkl holds statistics of dinov2-vit-l14 only"):
        fastfid.FeatureStats.load(tmp_path / "dino.pkl")


# --- the covariance's divisor ---------------------------------------------------------------------
def test_the_population_covariance_is_stylegans_and_the_unbiased_one_edms(rng, tmp_path, capsys):
    x, y = rng.standard_normal((60, 12)), rng.standard_normal((50, 12)) + 0.1
    stats = fastfid.FeatureStats.from_features(x)
    # Exact sums in float64 against numpy's two-pass covariance: 1e-13 of the largest entry.
    for ddof in (0, 1):
        expected = np.cov(x, rowvar=False, ddof=ddof)
        np.testing.assert_allclose(stats.covariance(ddof), expected, rtol=0, atol=1e-13 * np.abs(expected).max())
    assert np.array_equal(stats.covariance(), stats.cov)
    with pytest.raises(ValueError, match="ddof must be 0"):
        stats.covariance(2)
    with pytest.raises(ValueError, match="keeps the divisor it was written with"):
        fastfid.FeatureStats.from_mean_cov(stats.mean, stats.cov).covariance(0)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    for ddof in (0, 1):
        expected = scipy_fd(x.mean(0), np.cov(x, rowvar=False, ddof=ddof), y.mean(0), np.cov(y, rowvar=False, ddof=ddof))
        result = fastfid.compute_fid(x, y, ddof=ddof, progress=False)
        assert result.value == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert main(["fid", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "--ddof", str(ddof), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["fid"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    # The two divisors differ by a factor n/(n-1) on each covariance: visible at this n.
    assert abs(fastfid.compute_fid(x, y, ddof=0, progress=False).value
               - fastfid.compute_fid(x, y, progress=False).value) > 1e-3


# --- EDM2's DINOv2 resize -------------------------------------------------------------------------
def test_edm2s_dinov2_resize_is_torchs_antialiased_bicubic_unrounded_and_unclipped(rng):
    torch = pytest.importorskip("torch")
    from PIL import Image

    from fastfid.data import resize_image
    from fastfid.models import get_space

    assert get_space("dinov2-vit-l14").resize_op("edm2") == "torch-bicubic"
    for shape in ((64, 64, 3), (512, 384, 3), (100, 300, 3)):
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        ours = resize_image(image, (224, 224), "torch-bicubic").numpy() * 255
        # PIL's bicubic (a = -0.5, widened when shrinking) on each channel as a float image: an
        # independent float32 implementation of the same filter; they agree to ~4e-3 of 255 here.
        pil = np.stack([np.asarray(Image.fromarray(image[:, :, c].astype(np.float32)).resize(
            (224, 224), Image.Resampling.BICUBIC)) for c in range(3)])
        np.testing.assert_allclose(ours, pil, rtol=0, atol=1e-2)
    # Overshoots are kept, as EDM2 keeps them (its values go to the network unclipped).
    edge = np.zeros((8, 8, 3), dtype=np.uint8)
    edge[:, 4:] = 255
    resized = resize_image(edge, (224, 224), "torch-bicubic") * 255
    assert float(resized.min()) < -1 and float(resized.max()) > 256
    assert isinstance(resized, torch.Tensor)


# --- NVIDIA's TorchScript detector ----------------------------------------------------------------
# The 2015 graph's names for the blocks (docs/protocols.md's table): the detector's layout.
GRAPH_NAMES = {"Conv2d_1a_3x3": "conv", "Conv2d_2a_3x3": "conv_1", "Conv2d_2b_3x3": "conv_2",
               "Conv2d_3b_1x1": "conv_3", "Conv2d_4a_3x3": "conv_4", "Mixed_5b": "mixed", "Mixed_5c": "mixed_1",
               "Mixed_5d": "mixed_2", "Mixed_6a": "mixed_3", "Mixed_6b": "mixed_4", "Mixed_6c": "mixed_5",
               "Mixed_6d": "mixed_6", "Mixed_6e": "mixed_7", "Mixed_7a": "mixed_8", "Mixed_7b": "mixed_9",
               "Mixed_7c": "mixed_10", "fc": "softmax"}


def to_detector_layout(state: dict) -> dict:
    """fastfid's FID Inception weights under the graph's block names."""
    out = {}
    for key, value in state.items():
        block, rest = key.split(".", 1)
        out[f"{GRAPH_NAMES[block]}.{rest}"] = value
    return out


def make_detector(state: dict, path):
    """A TorchScript module of the detector's interface, ``forward(uint8 NCHW, return_features)``: it
    resizes by affine_grid/grid_sample (bilinear, border padding) shifted to TensorFlow 1's sample
    positions, scales (x − 128)/128 and runs the graph's blocks, loaded from ``state`` converted to
    the graph's names."""
    import torch
    import torch.nn.functional as F

    from fastfid.models import FIDInceptionV3

    blocks = FIDInceptionV3(weights=False)

    class Graph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            for ours, theirs in GRAPH_NAMES.items():
                setattr(self, theirs, getattr(blocks, ours))

        def forward(self, x):
            pool = lambda t: F.max_pool2d(t, 3, stride=2)  # noqa: E731
            x = pool(self.conv_2(self.conv_1(self.conv(x))))
            x = pool(self.conv_4(self.conv_3(x)))
            for index in range(11):
                x = getattr(self, "mixed" if index == 0 else f"mixed_{index}")(x)
            return x.mean(dim=(2, 3))

    graph = Graph()
    graph.load_state_dict(to_detector_layout(state))
    graph.eval()
    with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; NVIDIA's detector is one
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(graph, torch.zeros(1, 3, 299, 299))

    class Detector(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = traced
            self.weight = torch.nn.Parameter(graph.softmax.weight.detach().clone(), requires_grad=False)

        def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
            x = img.to(torch.float32)
            n, h, w = x.shape[0], x.shape[2], x.shape[3]
            theta = torch.zeros(n, 2, 3, dtype=torch.float32)
            theta[:, 0, 0] = 1.0
            theta[:, 1, 1] = 1.0
            theta[:, 0, 2] = 1.0 / w - 1.0 / 299  # sample x = j·in/out, as TensorFlow 1 does
            theta[:, 1, 2] = 1.0 / h - 1.0 / 299
            grid = F.affine_grid(theta, [n, 3, 299, 299], align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
            features = self.layers((x - 128) / 128)
            if return_features:
                return features
            return torch.softmax(features @ self.weight.t(), dim=1)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(Detector()).save(str(path))
    return path


@pytest.mark.slow
def test_the_detector_runs_as_given_and_equals_legacy_tensorflow_on_pytorch_fids_network(peer_weights, tmp_path,
                                                                                         rng, capsys):
    torch = pytest.importorskip("torch")
    from fastfid.extraction import FeatureExtractor

    state = torch.load(peer_weights, weights_only=True)
    detector = make_detector(state, tmp_path / "inception-2015-12-05.pt")
    theirs = FeatureExtractor(2048, weights=detector, device="cpu")
    ours = FeatureExtractor(2048, weights=peer_weights, device="cpu", resize="legacy_tensorflow")
    assert theirs.image_size is None and theirs.resize == "detector"
    assert theirs.feature_space.startswith("TorchScriptDetector(dims=2048, weights=inception-2015-12-05.pt:sha256=")
    for size in (32, 64, 299, 512):  # up, up, none, down
        images = rng.integers(0, 256, (3, size, size, 3), dtype=np.uint8)
        a = theirs.batch_features(images).numpy()
        b = ours.batch_features(images).numpy()
        # grid_sample's sample positions, ((g + 1)·in − 1)/2 from a float32 grid, differ from TF1's
        # i·in/out by a few ulps of the position: resized pixels differ by up to 7e-4 (32 px), 8e-3
        # (299 px, which TF1 copies) and 1.2e-2 (512 px) of 255, and pool3 by 1e-6, 2e-5 and 1e-4 of
        # its largest value (measured); 5e-4 leaves room for other seeds' images.
        np.testing.assert_allclose(a, b, rtol=0, atol=5e-4 * np.abs(b).max())
    # As a weights file of the command line: images at their own size, features of the detector.
    folder = tmp_path / "images"
    folder.mkdir()
    from PIL import Image

    for index in range(4):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    stats = fastfid.compute_stats(folder, weights=detector, device="cpu", progress=False)
    reference = fastfid.compute_stats(folder, weights=peer_weights, device="cpu", resize="legacy_tensorflow",
                                      progress=False)
    np.testing.assert_allclose(stats.mean, reference.mean, rtol=0, atol=1e-4 * np.abs(reference.mean).max())
    assert main(["fid", str(folder), str(folder), "--weights", str(detector), "--device", "cpu", "--json",
                 "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["fid"] == pytest.approx(0, abs=1e-6)


def test_the_detectors_pickle_and_other_layers_are_refused(tmp_path):
    pytest.importorskip("torch")
    from fastfid.extraction import FeatureExtractor

    (tmp_path / "inception-2015-12-05.pkl").write_bytes(b"\x80\x04N.")
    with pytest.raises(ValueError, match="runs code when it is unpickled.*inception-2015-12-05.pt"):
        FeatureExtractor(2048, weights=tmp_path / "inception-2015-12-05.pkl", device="cpu")
    with pytest.raises(ValueError, match="gives pool3"):
        FeatureExtractor(768, weights=tmp_path / "inception-2015-12-05.pkl", device="cpu")
    from fastfid.adm import ADMInception

    with pytest.raises(ValueError, match="NVIDIA's detector, which gives pool3 only: ADM's evaluator also reads"):
        ADMInception(tmp_path / "inception-2015-12-05.pkl", device="cpu")
