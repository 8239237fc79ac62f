"""fastfid.compat.pytorch_fid against pytorch-fid itself, on the same image files and weights."""

import numpy as np
import pytest
import torch
from PIL import Image

from support.peers import peer

pf_score = peer("pytorch_fid.fid_score")
pf_inception = peer("pytorch_fid.inception")
from fastfid.compat.pytorch_fid import fid_score, inception  # noqa: E402

# pytorch-fid calls scipy's sqrtm with an argument SciPy 1.16 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated:DeprecationWarning")


@pytest.fixture(scope="module")
def folders(tmp_path_factory, peer_weights):
    root = tmp_path_factory.mktemp("pytorch_fid_images")
    rng = np.random.default_rng(5)
    # More images than the 64 features of the first block, so that sqrtm (pytorch-fid's trace term)
    # is well conditioned and its result a fair reference.
    for name, count, shift in (("a", 90, 0), ("b", 80, 40)):
        folder = root / name
        folder.mkdir()
        for i in range(count):
            pixels = np.clip(rng.integers(0, 200, (24, 20, 3)) + shift, 0, 255).astype(np.uint8)
            extension = ("png", "ppm", "jpg")[i % 3]
            Image.fromarray(pixels).save(folder / f"{i:03d}.{extension}")
    return root / "a", root / "b"


def test_fid_given_paths_equals_pytorch_fid(folders):
    paths = [str(folders[0]), str(folders[1])]
    theirs = pf_score.calculate_fid_given_paths(paths, batch_size=25, device="cpu", dims=64, num_workers=0)
    mine = fid_score.calculate_fid_given_paths(paths, batch_size=25, device="cpu", dims=64, num_workers=0)
    assert isinstance(mine, np.float64)
    # Same network, same float32 resize: features agree to float32 rounding; pytorch-fid's sqrtm
    # agrees with the exact trace term to ~1e-7 relative at this size.
    assert mine == pytest.approx(theirs, rel=1e-4)


def test_inception_blocks_and_activations_equal_pytorch_fid(folders):
    blocks = [0, 1, 2, 3]
    theirs, mine = pf_inception.InceptionV3(blocks).eval(), inception.InceptionV3(blocks).eval()
    x = torch.rand(2, 3, 64, 50)
    with torch.no_grad():
        for a, b in zip(theirs(x), mine(x), strict=True):
            assert a.shape == b.shape
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    files = sorted(folders[0].iterdir())[:12]
    model = inception.InceptionV3([inception.InceptionV3.BLOCK_INDEX_BY_DIM[192]])
    acts = fid_score.get_activations(files, model, batch_size=4, dims=192, num_workers=0)
    reference = pf_score.get_activations(files, pf_inception.InceptionV3([1]), batch_size=4, dims=192, num_workers=0)
    np.testing.assert_allclose(acts, reference, rtol=1e-4, atol=1e-5)
    mu, sigma = fid_score.calculate_activation_statistics(files, model, batch_size=4, dims=192, num_workers=0)
    np.testing.assert_allclose(mu, reference.mean(axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(sigma, np.cov(reference, rowvar=False), rtol=1e-3, atol=1e-5)
    pool3 = fid_score.get_activations(files[:5], inception.InceptionV3(), batch_size=5, num_workers=0)
    reference = pf_score.get_activations(files[:5], pf_inception.InceptionV3(), batch_size=5, num_workers=0)
    np.testing.assert_allclose(pool3, reference, rtol=1e-4, atol=1e-5)


def test_saved_stats_read_by_both(folders, tmp_path):
    out = tmp_path / "a.npz"
    fid_score.save_fid_stats([str(folders[0]), str(out)], batch_size=30, device="cpu", dims=64, num_workers=0)
    with np.load(out) as saved:
        assert set(saved.files) == {"mu", "sigma"}
    with pytest.raises(RuntimeError, match="Existing output file"):
        fid_score.save_fid_stats([str(folders[0]), str(out)], batch_size=7, device="cpu", dims=64)
    with pytest.raises(RuntimeError, match="Invalid path"):
        fid_score.calculate_fid_given_paths([str(out), str(tmp_path / "absent")], 5, "cpu", 64)
    theirs = pf_score.calculate_fid_given_paths([str(out), str(folders[1])], batch_size=40, device="cpu", dims=64,
                                                num_workers=0)
    mine = fid_score.calculate_fid_given_paths([str(out), str(folders[1])], batch_size=40, device="cpu", dims=64,
                                               num_workers=0)
    assert mine == pytest.approx(theirs, rel=1e-4)


def test_command_line_prints_like_pytorch_fid(folders, capsys):
    fid_score.main(["--device", "cpu", "--num-workers", "0", "--dims", "64", "--batch-size", "45",
                    str(folders[0]), str(folders[1])])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("FID:  ") and float(line.split()[-1]) > 0


def test_a_sigma_that_is_not_symmetric_is_refused_where_pytorch_fid_computes(rng):
    # A documented difference: a covariance is symmetric, so a sigma that is not is a bug upstream
    # (a transposed or truncated file); pytorch-fid returns a number for it, the drop-in names it.
    x = rng.standard_normal((200, 6))
    mu, sigma = x.mean(axis=0), np.cov(x, rowvar=False)
    skewed = sigma.copy()
    skewed[0, 1] += 0.5
    assert np.isfinite(pf_score.calculate_frechet_distance(mu, skewed, mu, sigma))
    with pytest.raises(ValueError, match="sigma1 is not symmetric"):
        fid_score.calculate_frechet_distance(mu, skewed, mu, sigma)


def test_image_path_dataset_is_pytorch_fids(folders):
    import torchvision.transforms as TF

    files = sorted(folders[0].iterdir())[:6]
    ours, theirs = fid_score.ImagePathDataset(files, transforms=TF.ToTensor()), \
        pf_score.ImagePathDataset(files, transforms=TF.ToTensor())
    assert len(ours) == len(theirs) == 6
    for i in range(6):
        assert torch.equal(ours[i], theirs[i])
    plain = fid_score.ImagePathDataset(files)[0]  # no transforms: the RGB image itself
    assert plain.mode == "RGB" and plain.size == (20, 24)
    batch = next(iter(torch.utils.data.DataLoader(ours, batch_size=3)))
    assert batch.shape == (3, 3, 24, 20)
