"""The feature-space label: written by FeatureSpace, read back by FeatureSpace.parse, nowhere else."""

import pytest

from fastfid.models.label import FeatureSpace


@pytest.mark.parametrize("label, network, resize, size, space", [
    ("FIDInceptionV3(dims=2048, weights=pt_inception-2015-12-05-6726825d) resize=pytorch-fid 299x299",
     "FIDInceptionV3(dims=2048, weights=pt_inception-2015-12-05-6726825d)", "pytorch-fid", (299, 299), "inception"),
    ("FIDInceptionV3(dims=64, weights=random) resize=clean 299x299", "FIDInceptionV3(dims=64, weights=random)",
     "clean", (299, 299), None),
    ("dinov2-vit-l14 weights=dinov2_vitl14_pretrain.pth resize=dgm-eval 224x224",
     "dinov2-vit-l14 weights=dinov2_vitl14_pretrain.pth", "dgm-eval", (224, 224), "dinov2-vit-l14"),
    ("TinyNet resize=pytorch-fid native size", "TinyNet", "pytorch-fid", None, None),
    # Labels fastfid did not write (a user's name for their features) are all network.
    ("test-space", "test-space", None, None, None),
    ("odd resize=mode 12x", "odd resize=mode 12x", None, None, None),
])
def test_a_label_reads_back_as_written(label, network, resize, size, space):
    parsed = FeatureSpace.parse(label)
    assert (parsed.network, parsed.resize, parsed.size, parsed.space) == (network, resize, size, space)
    assert str(parsed) == label
