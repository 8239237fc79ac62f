"""fastfid.models: the FID Inception-v3's architecture, weight loading, input handling."""

import hashlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from fastfid.models import FIDInceptionV3, weights  # noqa: E402
from support.features import bilinear_reference  # noqa: E402


@pytest.fixture(scope="module")
def network():
    from support.peers import calibrated_state_dict

    network = FIDInceptionV3(weights=False)
    network.load_state_dict(calibrated_state_dict(0))  # trained-like batch norms: an untrained file is refused
    for module in network.modules():  # as a released file: no step counts (they do not act in eval mode)
        if isinstance(module, torch.nn.BatchNorm2d):
            module.num_batches_tracked.zero_()
    return network.eval()


@pytest.fixture(scope="module")
def weight_file(network, tmp_path_factory):
    """A random state dict saved as pytorch-fid's file is: what tests load instead of the real weights."""
    path = tmp_path_factory.mktemp("weights") / weights.FID_WEIGHTS_FILE
    torch.save(network.state_dict(), path)
    return path


def test_parameters_match_the_published_architecture(network):
    # torchvision's Inception-v3 has 27,161,264 parameters with its auxiliary classifier and 1000
    # classes. The FID network drops the auxiliary head (conv 768→128 1×1 + BN: 98,560; conv 128→768
    # 5×5 + BN: 2,459,136; fc 768→1000: 769,000) and has 8 more classes (8 × 2049): 23,850,960.
    # One wrong channel count anywhere changes this number.
    assert sum(p.numel() for p in network.parameters()) == 27_161_264 - 3_326_696 + 8 * 2049
    state = network.state_dict()
    convs = [key for key in state if key.endswith(".conv.weight")]
    assert len(convs) == 94  # torchvision's Inception3 without AuxLogits: 94 BasicConv2d
    assert all(f"{key[:-len('conv.weight')]}bn.{name}" in state for key in convs
               for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"))
    assert len(state) == 94 * 6 + 2  # conv weight + 5 batch-norm entries each, fc weight and bias
    shapes = {  # a sample of torchvision's key names and shapes, including every factorised kernel kind
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
        "Mixed_5d.branch5x5_2.conv.weight": (64, 48, 5, 5),
        "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
        "Mixed_6e.branch7x7_2.conv.weight": (192, 192, 1, 7),
        "Mixed_6b.branch7x7dbl_2.conv.weight": (128, 128, 7, 1),
        "Mixed_7a.branch3x3_2.conv.weight": (320, 192, 3, 3),
        "Mixed_7b.branch3x3dbl_1.conv.weight": (448, 1280, 1, 1),
        "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
        "fc.weight": (1008, 2048),
        "fc.bias": (1008,),
    }
    for key, shape in shapes.items():
        assert tuple(state[key].shape) == shape, key
    assert all(module.eps == 0.001 for module in network.modules() if isinstance(module, torch.nn.BatchNorm2d))


def test_pooling_follows_the_tensorflow_graph(network):
    # The FID blocks differ from torchvision's only here: average pools that leave the padding out of
    # their count (FIDInceptionA, C, E_1), and a max pool in Mixed_7c (FIDInceptionE_2).
    for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7b"):
        pool = getattr(network, name).pool
        assert isinstance(pool, torch.nn.AvgPool2d) and not pool.count_include_pad, name
        assert (pool.kernel_size, pool.stride, pool.padding) == (3, 1, 1)
    pool = network.Mixed_7c.pool
    assert isinstance(pool, torch.nn.MaxPool2d) and (pool.kernel_size, pool.stride, pool.padding) == (3, 1, 1)
    # count_include_pad=False: a constant map stays constant up to its border.
    constant = torch.full((1, 1, 5, 5), 2.0)
    assert torch.equal(network.Mixed_5b.pool(constant), constant)


def test_input_is_resized_bilinearly_and_scaled_to_minus_one_one(network):
    seen = {}
    handle = network.Conv2d_1a_3x3.register_forward_pre_hook(lambda module, args: seen.update(x=args[0]))
    images = torch.rand(2, 3, 37, 23, generator=torch.Generator().manual_seed(1))
    try:
        network(images)
    finally:
        handle.remove()
    expected = np.stack([bilinear_reference(image, (299, 299)) for image in images.double().numpy()]) * 2 - 1
    # float32 resampling of values in [0, 1]: the source coordinates and weights carry ~1e-6 of rounding.
    np.testing.assert_allclose(seen["x"].numpy(), expected, rtol=0, atol=1e-5)


def test_each_dims_is_the_spatial_mean_of_its_layer_and_logits_have_no_bias(network):
    images = torch.rand(2, 3, 299, 299, generator=torch.Generator().manual_seed(2))
    outputs = {}
    hooks = [getattr(network, name).register_forward_hook(lambda m, i, o, name=name: outputs.update({name: o}))
             for name in ("Conv2d_2b_3x3", "Conv2d_4a_3x3", "Mixed_6e", "Mixed_7c")]
    try:
        features, logits = network.features_and_logits(images)
    finally:
        for hook in hooks:
            hook.remove()
    pooled = lambda x: torch.nn.functional.max_pool2d(x, 3, stride=2).mean(dim=(2, 3))  # noqa: E731
    expected = {64: pooled(outputs["Conv2d_2b_3x3"]), 192: pooled(outputs["Conv2d_4a_3x3"]),
                768: outputs["Mixed_6e"].mean(dim=(2, 3)), 2048: outputs["Mixed_7c"].mean(dim=(2, 3))}
    torch.testing.assert_close(features, expected[2048])
    torch.testing.assert_close(logits, expected[2048] @ network.fc.weight.T)
    for dims in (64, 192, 768):
        small = FIDInceptionV3(dims, weights=False)
        small.load_state_dict(network.state_dict())
        torch.testing.assert_close(small(images), expected[dims], rtol=1e-5, atol=1e-6)


def test_the_network_stays_in_eval_mode_without_gradients(network):
    network.train()
    assert not network.training and not any(p.requires_grad for p in network.parameters())


@pytest.mark.parametrize("bad, error", [
    (torch.rand(2, 1, 32, 32), ValueError), (torch.rand(3, 32, 32), ValueError),
    (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), TypeError)])
def test_bad_inputs_are_refused(network, bad, error):
    with pytest.raises(error, match="FIDInceptionV3 takes"):
        network(bad)


def test_dims_must_be_a_pytorch_fid_layer():
    with pytest.raises(ValueError, match="64, 192, 768, 2048"):
        FIDInceptionV3(1000, weights=False)


# --- weights ---------------------------------------------------------------------------------
def _same_parameters(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_saved_state_dict_loads_unchanged_from_a_path(network, weight_file):
    loaded = FIDInceptionV3(weights=weight_file)
    assert _same_parameters(loaded, network)
    assert loaded.feature_space == "FIDInceptionV3(dims=2048, weights=pt_inception-2015-12-05-6726825d)"


def test_old_files_without_batch_norm_counters_load(network, tmp_path):
    state = {k: v for k, v in network.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pth")
    loaded = FIDInceptionV3(weights=tmp_path / "old.pth")
    assert _same_parameters(loaded, network)
    assert loaded.weights_name.startswith("old.pth:sha256=")


def test_the_environment_variable_names_the_file(network, weight_file, monkeypatch):
    monkeypatch.setenv(weights.WEIGHTS_VARIABLE, str(weight_file))
    assert _same_parameters(FIDInceptionV3(), network)
    monkeypatch.setenv(weights.WEIGHTS_VARIABLE, str(weight_file.with_name("absent.pth")))
    with pytest.raises(FileNotFoundError, match="FASTFID_WEIGHTS"):
        FIDInceptionV3()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    monkeypatch.delenv(weights.WEIGHTS_VARIABLE, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def test_download_checks_the_sha256_and_caches(network, weight_file, hub, monkeypatch):
    digest = hashlib.sha256(weight_file.read_bytes()).hexdigest()
    monkeypatch.setattr(weights, "FID_WEIGHTS_URL", weight_file.as_uri())
    monkeypatch.setattr(weights, "FID_WEIGHTS_SHA256", digest)
    assert _same_parameters(FIDInceptionV3(), network)
    cached = hub / weights.FID_WEIGHTS_FILE
    assert cached.read_bytes() == weight_file.read_bytes()
    monkeypatch.setattr(weights, "FID_WEIGHTS_URL", "file:///nonexistent")  # the cache is used: no download
    assert _same_parameters(FIDInceptionV3(), network)


def test_a_download_with_the_wrong_hash_is_not_kept(weight_file, hub, monkeypatch):
    monkeypatch.setattr(weights, "FID_WEIGHTS_URL", weight_file.as_uri())
    with pytest.raises(OSError, match="SHA-256"):
        FIDInceptionV3()
    assert not hub.exists() or not any(hub.iterdir())


def test_offline_the_error_names_the_url_and_the_variable(hub, monkeypatch):
    monkeypatch.setattr(weights, "FID_WEIGHTS_URL", "http://127.0.0.1:9/pt_inception.pth")  # port 9: refused
    with pytest.raises(OSError) as error:
        FIDInceptionV3()
    assert "http://127.0.0.1:9/pt_inception.pth" in str(error.value) and "FASTFID_WEIGHTS" in str(error.value)
    assert not any(hub.iterdir())


def test_the_real_url_and_hash_are_pytorch_fids():
    assert weights.FID_WEIGHTS_URL == ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                                       "pt_inception-2015-12-05-6726825d.pth")
    assert weights.FID_WEIGHTS_SHA256.startswith("6726825d")  # torch hub's naming: the file name carries it


def test_foreign_or_corrupt_files_are_refused(network, tmp_path):
    state = network.state_dict()
    state["AuxLogits.fc.weight"] = torch.zeros(1000, 768)
    del state["Mixed_7c.branch_pool.conv.weight"]
    torch.save(state, tmp_path / "foreign.pth")
    with pytest.raises(ValueError, match="missing.*Mixed_7c.branch_pool.conv.weight.*unexpected.*AuxLogits"):
        FIDInceptionV3(weights=tmp_path / "foreign.pth")
    (tmp_path / "truncated.pth").write_bytes((tmp_path / "foreign.pth").read_bytes()[:1000])
    with pytest.raises(OSError, match="truncated.pth"):
        FIDInceptionV3(weights=tmp_path / "truncated.pth")


def test_a_weight_file_of_an_untrained_network_is_refused(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "untrained.pth"
    torch.save(FIDInceptionV3(weights=False).state_dict(), path)  # batch norms at their defaults
    with pytest.raises(ValueError, match="holds an untrained network: every batch norm has its initial running"):
        FIDInceptionV3(weights=path)
