"""fastfid.data: image layouts, the two resize modes, folders and zips, bad files."""

import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")
PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from fastfid import data  # noqa: E402
from support.features import bicubic_reference, bilinear_reference  # noqa: E402


@pytest.fixture
def images(rng):
    return rng.integers(0, 256, (5, 21, 17, 3), dtype=np.uint8)  # NHWC


def test_uint8_nhwc_and_nchw_and_float_nchw_give_the_same_batch(images):
    expected = images.transpose(0, 3, 1, 2) / 255.0
    for given in (images, torch.from_numpy(images), torch.from_numpy(images).permute(0, 3, 1, 2),
                  torch.from_numpy(expected).float(), torch.from_numpy(expected)):
        batch = data.as_image_batch(given)
        assert batch.dtype == torch.float32 and batch.shape == (5, 3, 21, 17)
        np.testing.assert_allclose(batch.numpy(), expected, rtol=0, atol=6e-8)  # float32 rounding of k/255


def test_gray_and_rgba_become_rgb(images):
    gray = data.as_image_batch(images[..., :1])
    assert torch.equal(gray[:, 0], gray[:, 2]) and gray.shape[1] == 3
    rgba = np.concatenate([images, np.full(images.shape[:3] + (1,), 7, np.uint8)], axis=3)
    assert torch.equal(data.as_image_batch(rgba), data.as_image_batch(images))  # alpha dropped, as PIL's convert


@pytest.mark.parametrize("bad, error, words", [
    (np.zeros((2, 3, 8, 8), np.float32) + 2, ValueError, r"\[0, 1\].*\(x \+ 1\) / 2"),
    (np.full((2, 3, 8, 8), np.nan, np.float32), ValueError, "NaN"),
    (np.zeros((2, 3, 8, 8), np.int32), TypeError, "uint8"),
    (np.zeros((2, 8, 8), np.uint8), ValueError, "4-D"),
    (np.zeros((2, 5, 8, 6), np.uint8), ValueError, "channel"),
    (np.zeros((0, 3, 8, 8), np.uint8), ValueError, "empty"),
])
def test_bad_batches_are_refused_with_the_reason(bad, error, words):
    with pytest.raises(error, match=words):
        data.as_image_batch(bad)


def test_pytorch_fid_resize_is_half_pixel_bilinear(images):
    for size in ((299, 299), (9, 30)):
        ours = data.resize_image(images[0], size, "pytorch-fid").numpy()
        # float32 resampling of [0, 1] values: coordinates and weights carry ~1e-6 of rounding.
        np.testing.assert_allclose(ours, bilinear_reference(images[0].transpose(2, 0, 1) / 255, size), atol=1e-5)
        batch = data.resize_batch(data.as_image_batch(images), size, "pytorch-fid")
        assert torch.equal(batch[0], torch.from_numpy(ours))  # one image or a batch: the same numbers


def test_clean_resize_is_pil_bicubic_per_channel_clipped(images):
    sharp = images.copy()
    sharp[0, :, :8] = 0
    sharp[0, :, 8:] = 255  # an edge whose cubic overshoot must be clipped
    for size in ((299, 299), (8, 6)):  # enlarging, and shrinking (antialiased)
        ours = data.resize_image(sharp[0], size, "clean").numpy()
        expected = np.stack([bicubic_reference(sharp[0, :, :, c].astype(float), size) for c in range(3)])
        assert expected.max() > 255  # the reference overshoots; the clip is what is tested
        # float32 in [0, 255]: about 1e-5 of rounding, then divided by 255.
        np.testing.assert_allclose(ours, np.clip(expected, 0, 255) / 255, rtol=0, atol=1e-6)
        batch = data.resize_batch(data.as_image_batch(sharp), size, "clean")
        np.testing.assert_allclose(batch[0].numpy(), ours, rtol=0, atol=1e-7)


def test_the_modes_differ_and_unknown_modes_are_refused(images):
    a = data.resize_image(images[0], (299, 299), "pytorch-fid")
    b = data.resize_image(images[0], (299, 299), "clean")
    assert (a - b).abs().max() > 0.01
    with pytest.raises(ValueError, match="pytorch-fid"):
        data.check_resize("bicubic")


def _write(folder, images, formats=("png", "jpg", "bmp", "webp", "tiff")):
    names = []
    for i, image in enumerate(images):
        extension = formats[i % len(formats)]
        path = folder / ("nested" if i % 2 else ".") / f"{i:03d}.{extension}"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(image).save(path)
        names.append(path)
    return names


def _all(source, **options):
    options = dict(batch_size=2, size=(16, 16), mode="pytorch-fid", num_workers=0, pin_memory=False) | options
    batches = list(source.batches(0, len(source), **options))
    return torch.cat([b.images for b in batches if b.images is not None]), batches


def test_folders_are_read_recursively_in_sorted_order_with_every_format(images, tmp_path):
    _write(tmp_path, images)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(b"")
    Image.fromarray(images[0]).save(tmp_path / "UPPER.PNG")
    files = data.ImageFiles(tmp_path)
    assert files.names == ["000.png", "002.bmp", "004.tiff", "UPPER.PNG", "nested/001.jpg", "nested/003.webp"]
    batch, _ = _all(files)
    lossless = data.resize_batch(data.as_image_batch(images[[0, 2, 4]]), (16, 16), "pytorch-fid")
    assert torch.equal(batch[:3], lossless)  # png, bmp, tiff are lossless: the same pixels


def test_gray_palette_and_rgba_files_are_converted(images, tmp_path):
    Image.fromarray(images[0]).convert("L").save(tmp_path / "gray.png")
    Image.fromarray(images[0]).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(images[0]).convert("RGBA").save(tmp_path / "rgba.png")
    batch, _ = _all(data.ImageFiles(tmp_path), size=None)
    assert batch.shape == (3, 3, 21, 17)
    assert torch.equal(batch[2], data.as_image_batch(images[:1])[0])  # RGBA → RGB keeps the pixels


def test_a_zip_gives_what_its_folder_gives(images, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    _write(folder, images, formats=("png",))
    with zipfile.ZipFile(tmp_path / "images.zip", "w") as archive:
        for path in sorted(folder.rglob("*.png")):
            archive.write(path, str(path.relative_to(folder)))
        archive.writestr("__MACOSX/._000.png", b"resource fork")
    from_zip, from_folder = data.ImageFiles(tmp_path / "images.zip"), data.ImageFiles(folder)
    assert from_zip.names == from_folder.names
    assert torch.equal(_all(from_zip, num_workers=2)[0], _all(from_folder)[0])  # two loader processes too


def test_a_corrupt_file_is_named_and_can_be_counted(images, tmp_path):
    _write(tmp_path, images[:3], formats=("png",))
    good = (tmp_path / "000.png").read_bytes()
    (tmp_path / "001_truncated.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "002_garbage.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    batch, batches = _all(data.ImageFiles(tmp_path))
    bad = [message for b in batches for message in b.bad]
    assert len(bad) == 2 and "001_truncated.png" in bad[0] and "002_garbage.jpg" in bad[1]
    assert sum(b.attempted for b in batches) == 5 and batch.shape[0] == 3  # 000, 002, nested/001


def test_linked_folders_are_followed_once(images, tmp_path):
    (tmp_path / "a").mkdir()
    Image.fromarray(images[0]).save(tmp_path / "a" / "x.png")
    (tmp_path / "a" / "loop").symlink_to(tmp_path / "a")  # a cycle
    (tmp_path / "linked").symlink_to(tmp_path / "a")
    assert data.ImageFiles(tmp_path).names == ["a/x.png"]  # one real folder, read once
    assert data.ImageFiles(tmp_path / "linked").names == ["x.png"]


def test_empty_or_odd_paths_are_refused(tmp_path):
    with pytest.raises(ValueError, match="holds no images"):
        data.ImageFiles(tmp_path)
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(ValueError, match="neither a folder nor a zip"):
        data.ImageFiles(tmp_path / "x.txt")


def test_mixed_sizes_need_a_size(images, tmp_path):
    Image.fromarray(images[0]).save(tmp_path / "a.png")
    Image.fromarray(images[0, :10]).save(tmp_path / "b.png")
    with pytest.raises(ValueError, match="different sizes"):
        _all(data.ImageFiles(tmp_path), size=None)
    assert _all(data.ImageFiles(tmp_path))[0].shape == (2, 3, 16, 16)


def test_generators_must_return_what_was_asked(images):
    source = data.ImageGenerator(lambda n: images[:n], num_samples=7)
    batches = list(source.batches(0, 7, batch_size=3, size=None, mode="pytorch-fid"))
    assert [b.attempted for b in batches] == [3, 3, 1]
    short = data.ImageGenerator(lambda n: images[:1], num_samples=3)
    with pytest.raises(ValueError, match="returned 1 images when asked for 3"):
        list(short.batches(0, 3, batch_size=3, size=None, mode="pytorch-fid"))
    with pytest.raises(ValueError, match="num_samples"):
        data.ImageGenerator(lambda n: images[:n], num_samples=None)
