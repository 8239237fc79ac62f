"""Images to statistics and FID: fastfid.compute_stats / compute_fid / inception_score / FID."""

import os
import signal
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

import fastfid  # noqa: E402
from fastfid.extraction import FeatureExtractor, Interrupted  # noqa: E402
from fastfid.metrics import ClassScores, inception_score_from_logits  # noqa: E402
from fastfid.models import FIDInceptionV3, weights  # noqa: E402
from support.features import bilinear_reference  # noqa: E402

SIZE = 24


class TinyNet(torch.nn.Module):
    """A small convolutional feature network (16 features) standing in for a real one."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(),
                                        torch.nn.Conv2d(8, 16, 3), torch.nn.ReLU())

    def forward(self, x):
        return self.body(x)  # (N, 16, h, w): fastfid averages it over space


@pytest.fixture(scope="module")
def pictures():
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, (23, 20, 28, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def folder(pictures, tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    for i, picture in enumerate(pictures):
        (root / f"part{i % 3}").mkdir(exist_ok=True)
        Image.fromarray(picture).save(root / f"part{i % 3}" / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def ordered(pictures, folder):
    """The pictures in the order fastfid reads the folder (sorted relative paths)."""
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.png"))
    return pictures[[int(name.split("/")[1][:2]) for name in names]]


@pytest.fixture(scope="module")
def weight_file(tmp_path_factory):
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / weights.FID_WEIGHTS_FILE
    from support.peers import calibrated_state_dict

    torch.save(calibrated_state_dict(), path)
    return path


def tiny(**options):
    return FeatureExtractor(TinyNet(), device="cpu", image_size=SIZE, **options)


OPTIONS = dict(batch_size=4, num_workers=0, progress=False)


def relative_error(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


def test_folder_statistics_match_an_independent_pipeline(folder, ordered):
    stats = fastfid.compute_stats(folder, model=tiny(), **OPTIONS)
    # Reference: float64 throughout (resize, network, mean, covariance), one image at a time.
    network = TinyNet().double()
    features = np.stack([
        network(torch.from_numpy(bilinear_reference(p.transpose(2, 0, 1) / 255, (SIZE, SIZE)))[None]).mean(dim=(2, 3))[0]
        .detach().numpy() for p in ordered])
    assert stats.count == len(ordered) and stats.feature_space == "TinyNet resize=pytorch-fid 24x24"
    # The pipeline runs the network in float32: about 1e-6 relative on features of this size.
    assert relative_error(stats.mean, features.mean(axis=0)) < 1e-5
    assert relative_error(stats.cov, np.cov(features, rowvar=False)) < 1e-5


def test_every_source_kind_gives_the_same_statistics(folder, ordered, tmp_path):
    expected = fastfid.compute_stats(folder, model=tiny(), **OPTIONS)
    with zipfile.ZipFile(tmp_path / "images.zip", "w") as archive:
        for path in sorted(folder.rglob("*.png")):
            archive.write(path, str(path.relative_to(folder)))
    np.save(tmp_path / "images.npy", ordered)
    floats = torch.from_numpy(ordered).permute(0, 3, 1, 2).float() / 255
    calls = []

    def generate(n):
        start = sum(calls)
        calls.append(n)
        return ordered[start:start + n]

    sources = {"zip": tmp_path / "images.zip", "npy": tmp_path / "images.npy", "uint8 NHWC array": ordered,
               "float NCHW tensor": floats, "generator": generate}
    for kind, source in sources.items():
        stats = fastfid.compute_stats(source, model=tiny(), num_samples=len(ordered), **OPTIONS)
        assert stats.count == expected.count, kind
        # The same pixels and batches through the same float32 network; /255 in float32 vs exact
        # k/255 for the tensor is the only rounding difference.
        assert relative_error(stats.cov, expected.cov) < 1e-6, kind
    assert calls == [4, 4, 4, 4, 4, 3]


def test_statistics_and_feature_files_need_no_network(rng, tmp_path, monkeypatch):
    monkeypatch.setenv(weights.WEIGHTS_VARIABLE, str(tmp_path / "absent.pth"))  # loading it would fail
    features = rng.normal(size=(300, 8))
    np.save(tmp_path / "features.npy", features)
    fastfid.FeatureStats.from_features(features[:100]).save(tmp_path / "stats.npz")
    stats = fastfid.compute_stats(tmp_path / "features.npy")
    np.testing.assert_allclose(stats.cov, np.cov(features, rowvar=False), rtol=0, atol=1e-13)
    result = fastfid.compute_fid(tmp_path / "features.npy", tmp_path / "stats.npz")
    assert result.resize is None and result.counts == (300, 100)
    assert result.value == pytest.approx(fastfid.fid(stats, tmp_path / "stats.npz"), rel=1e-12)


def test_shards_merge_into_the_whole(folder, monkeypatch):
    # One image per batch in one fixed execution mode: each image's features are then the same in
    # every run, so the merge is compared with the whole at the merge's own rounding (1e-12), not the
    # network's. (auto may pick another mode for the 23-batch whole than for its 8-batch shards.)
    monkeypatch.setenv("FASTFID_EXECUTION", "eager")
    options = dict(OPTIONS, batch_size=1)
    whole = fastfid.compute_stats(folder, model=tiny(), **options)
    parts = [fastfid.compute_stats(folder, model=tiny(), shard=(i, 3), **options) for i in range(3)]
    assert [p.count for p in parts] == [7, 8, 8]
    merged = parts[0] + parts[1] + parts[2]
    assert relative_error(merged.cov, whole.cov) < 1e-12 and relative_error(merged.mean, whole.mean) < 1e-12
    with pytest.raises(ValueError, match="0 … 2"):
        fastfid.compute_stats(folder, model=tiny(), shard=(3, 3), **options)


class InterruptedNet(TinyNet):
    """TinyNet that sends this process SIGINT during its third batch, as Ctrl-C would."""

    feature_space = "TinyNet"  # the same features: the run it interrupts may be resumed by TinyNet

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return super().forward(x)


def test_an_interrupted_job_resumes_without_losing_or_repeating_work(folder, tmp_path):
    checkpoint = tmp_path / "partial.npz"
    whole = fastfid.compute_stats(folder, model=tiny(), **OPTIONS)
    interrupted = FeatureExtractor(InterruptedNet(), device="cpu", image_size=SIZE)
    with pytest.raises(Interrupted, match="resume"):
        fastfid.compute_stats(folder, model=interrupted, checkpoint=checkpoint, **OPTIONS)
    from fastfid.files.stats import read_progress

    record = read_progress(checkpoint)
    assert record["next"] == 12 and not record["complete"]  # the third batch finished, then it stopped
    assert fastfid.FeatureStats.load(checkpoint, allow_partial=True).count == 12
    with pytest.raises(ValueError, match="partial run"):
        fastfid.compute_stats(folder, model=tiny(), checkpoint=checkpoint, **OPTIONS)
    with pytest.raises(ValueError, match="feature_space"):
        fastfid.compute_stats(folder, model=tiny(resize="clean"), checkpoint=checkpoint, resume=True, **OPTIONS)
    resumed = fastfid.compute_stats(folder, model=tiny(), checkpoint=checkpoint, resume=True, **OPTIONS)
    assert resumed.count == whole.count and read_progress(checkpoint)["complete"]
    # Batches restart at the same boundaries, so every image's features are the same as in one run.
    assert relative_error(resumed.cov, whole.cov) < 1e-12
    assert relative_error(fastfid.FeatureStats.load(checkpoint).cov, whole.cov) < 1e-12


def test_unreadable_images_are_named_or_skipped_and_counted(folder, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in sorted(folder.rglob("*.png"))[:5]:
        (broken / path.name).write_bytes(path.read_bytes())
    (broken / "03_cut.png").write_bytes((broken / "03.png").read_bytes()[:200])
    with pytest.raises(OSError, match="03_cut.png"):
        fastfid.compute_stats(broken, model=tiny(), **OPTIONS)
    with pytest.warns(RuntimeWarning, match="1 unreadable image of .* was skipped: .*03_cut.png: OSError"):
        result = fastfid.compute_fid(broken, folder, model=tiny(), skip_bad=True, **OPTIONS)
    assert result.counts == (5, 23) and result.skipped == (1, 0) and "1 unreadable image skipped" in str(result)
    assert len(result.skipped_items[0]) == 1 and "03_cut.png" in result.skipped_items[0][0]


def test_a_warning_names_ten_unreadable_images_and_the_result_all(folder, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in sorted(folder.rglob("*.png"))[:3]:
        (broken / path.name).write_bytes(path.read_bytes())
    for index in range(12):
        (broken / f"bad{index:02d}.png").write_bytes(b"not a png")
    with pytest.warns(RuntimeWarning) as caught:
        result = fastfid.compute_fid(broken, folder, model=tiny(), skip_bad=True, **OPTIONS)
    message = str(caught[0].message)
    assert message.startswith("12 unreadable images of") and message.endswith("; and 2 more")
    assert "bad09.png" in message and "bad10.png" not in message
    assert [Path(item.split(":")[0]).name for item in result.skipped_items[0]] == \
        [f"bad{index:02d}.png" for index in range(12)]


def test_results_state_the_resize_mode_and_mismatches_are_caught(folder):
    clean = fastfid.compute_fid(folder, folder, model=tiny(resize="clean"), **OPTIONS)
    assert clean.resize == "clean" and "resize=clean" in clean.feature_space and "resize=clean" in str(clean)
    assert clean.value == pytest.approx(0, abs=1e-10)
    a = fastfid.compute_stats(folder, model=tiny(), **OPTIONS)
    b = fastfid.compute_stats(folder, model=tiny(resize="clean"), **OPTIONS)
    with pytest.warns(RuntimeWarning, match="different features"):
        fastfid.fid(a, b)
    with pytest.raises(ValueError, match="different features"):
        a.merge(b)


def test_inception_score_from_logits_is_the_definition(rng):
    logits = rng.normal(scale=3, size=(103, 1008))
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    scores = []
    for part in np.array_split(p, 10):
        marginal = part.mean(axis=0)
        scores.append(np.exp((part * (np.log(part) - np.log(marginal))).sum(axis=1).mean()))
    result = inception_score_from_logits(logits, splits=10)
    assert result.mean == pytest.approx(np.mean(scores), rel=1e-12) and result.std == pytest.approx(np.std(scores))
    streamed = ClassScores(103, 10)
    other = ClassScores(103, 10)
    for start in range(0, 103, 17):  # chunks that straddle the splits, spread over two accumulators
        (streamed if start % 2 else other).update(logits[start:start + 17], start)
    assert streamed.merge(other).result().mean == pytest.approx(result.mean, rel=1e-12)
    with pytest.raises(ValueError, match="splits"):
        ClassScores(5, 10)


def test_fid_and_is_come_from_one_inception_pass(folder, ordered, weight_file):
    options = dict(OPTIONS, batch_size=8)
    result = fastfid.compute_fid(folder, folder, model=64, weights=weight_file, isc=True, splits=3, **options)
    assert result.value == pytest.approx(0, abs=1e-9)
    assert result.feature_space == ("FIDInceptionV3(dims=64, weights=pt_inception-2015-12-05-6726825d) "
                                    "resize=pytorch-fid 299x299")
    network = FIDInceptionV3(64, weights=weight_file)
    images = torch.from_numpy(ordered).permute(0, 3, 1, 2).float() / 255
    logits = torch.cat([network.features_and_logits(images[i:i + 8])[1] for i in range(0, len(images), 8)])
    expected = inception_score_from_logits(logits.numpy(), splits=3)
    # float32 network: the loader's images and these may differ in their last bits (the order of the
    # uint8 → float conversion and scaling), which moves the score ~2e-9; one image more or less, 1e-4.
    assert result.inception_score.mean == pytest.approx(expected.mean, rel=1e-7)
    alone = fastfid.inception_score(folder, weights=weight_file, splits=3, **options)
    assert alone.mean == pytest.approx(expected.mean, rel=1e-7) and alone.count == 23


def test_offline_default_weights_give_an_error_naming_url_and_variable(folder, tmp_path, monkeypatch):
    monkeypatch.delenv(weights.WEIGHTS_VARIABLE, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(weights, "FID_WEIGHTS_URL", "http://127.0.0.1:9/pt_inception-2015-12-05-6726825d.pth")
    with pytest.raises(OSError, match=r"127\.0\.0\.1:9.*FASTFID_WEIGHTS"):
        fastfid.compute_fid(folder, folder, **OPTIONS)


# --- the torchmetrics-style class -------------------------------------------------------------
def test_the_class_equals_compute_fid(ordered, weight_file):
    metric = fastfid.FID(feature=64, weights=weight_file)
    nchw = torch.from_numpy(ordered).permute(0, 3, 1, 2)  # torchmetrics' uint8 layout
    real, fake = nchw[:12], torch.flip(nchw[11:], dims=(3,))
    metric.update(real[:5], real=True)
    metric.update(real[5:], real=True)
    metric.update(fake, real=False)
    value = metric.compute()
    assert value.dtype == torch.float64 and value.shape == ()
    expected = fastfid.compute_fid(fake, real, model=64, weights=weight_file, **OPTIONS)
    assert value.item() == pytest.approx(expected.value, rel=1e-6)  # float32 features, other batch sizes
    metric.reset()
    with pytest.raises(ValueError, match="no real images"):  # reset_real_features=True, the default
        metric.compute()
    with pytest.raises(TypeError, match="normalize=True"):
        metric.update(fake.float() / 255, real=False)
    floats = fastfid.FID(feature=64, weights=weight_file, normalize=True, reset_real_features=False)
    floats.update(real.float() / 255, real=True)
    floats.update(fake.float() / 255, real=False)
    assert floats.compute().item() == pytest.approx(expected.value, rel=1e-5)
    floats.reset()
    floats.update(real.float() / 255, real=False)  # the real images were kept
    assert floats.compute().item() == pytest.approx(0, abs=1e-9)


def test_the_class_takes_any_module_and_passes_inputs_through(rng):
    network = torch.nn.Linear(6, 4, dtype=torch.float64)  # e.g. an audio or text embedding's head
    metric = fastfid.FID(feature=network)
    a, b = torch.from_numpy(rng.normal(size=(50, 6))), torch.from_numpy(rng.normal(0.3, 1, size=(40, 6)))
    metric.update(a, real=True)
    metric.update(b, real=False)
    with torch.no_grad():
        expected = fastfid.fid(fastfid.FeatureStats.from_features(network(a)),
                               fastfid.FeatureStats.from_features(network(b)))
    assert metric.compute().item() == pytest.approx(expected, rel=1e-12)


def test_an_unreadable_file_keeps_the_work_done_before_it(folder, tmp_path):
    import shutil

    copy = tmp_path / "images"
    shutil.copytree(folder, copy)
    victim = sorted(copy.rglob("*.png"))[9]  # in the third batch of 4
    good = victim.read_bytes()
    victim.write_bytes(good[:100])
    checkpoint = tmp_path / "stats.npz"
    with pytest.raises(OSError, match=victim.name):
        fastfid.compute_stats(copy, model=tiny(), checkpoint=checkpoint, **OPTIONS)
    from fastfid.files.stats import read_progress

    assert read_progress(checkpoint)["next"] == 8 and fastfid.FeatureStats.load(checkpoint, allow_partial=True).count == 8
    victim.write_bytes(good)  # repaired: the listing is the same, so the job resumes
    resumed = fastfid.compute_stats(copy, model=tiny(), checkpoint=checkpoint, resume=True, **OPTIONS)
    whole = fastfid.compute_stats(folder, model=tiny(), **OPTIONS)
    assert resumed.count == 23 and relative_error(resumed.cov, whole.cov) < 1e-12


def test_sixteen_bit_and_float_images_are_scaled_not_clipped(pictures, tmp_path):
    # The same gray pictures as 8-bit PNGs, 16-bit PNGs (v·257: 65535 ↔ 255 exactly) and float
    # TIFFs (v/255): each is read as the same [0, 1] image, so the statistics agree to float32
    # rounding of the network, and the FID between the folders is ≈ 0 (clipping gave 2.99).
    gray = pictures[:12, :, :, 0]
    folders = {kind: tmp_path / kind for kind in ("eight", "sixteen", "float")}
    for folder in folders.values():
        folder.mkdir()
    for i, picture in enumerate(gray):
        Image.fromarray(picture).save(folders["eight"] / f"{i:02d}.png")
        Image.fromarray(picture.astype(np.uint16) * 257).save(folders["sixteen"] / f"{i:02d}.png")
        Image.fromarray(picture.astype(np.float32) / 255).save(folders["float"] / f"{i:02d}.tif")
    with Image.open(folders["sixteen"] / "00.png") as sixteen:
        assert sixteen.mode.startswith("I")
    stats = {kind: fastfid.compute_stats(folder, model=tiny(), **OPTIONS) for kind, folder in folders.items()}
    for kind in ("sixteen", "float"):
        assert relative_error(stats[kind].mean, stats["eight"].mean) < 1e-6
        assert relative_error(stats[kind].cov, stats["eight"].cov) < 1e-5
        assert fastfid.fid(stats[kind], stats["eight"]) < 1e-6 * np.trace(stats["eight"].cov)
    Image.fromarray(np.full((20, 28), 3.5, np.float32)).save(folders["float"] / "99_bright.tif")
    with pytest.raises(OSError, match=r"99_bright.tif: ValueError: a float image with values in \[3.5, 3.5\]"):
        fastfid.compute_stats(folders["float"], model=tiny(), **OPTIONS)


def _sixteen_bit_png(pixels: np.ndarray) -> bytes:
    """A PNG of 16 bits per sample (colour type 2 or 6), written by hand: Pillow cannot write one."""
    import struct
    import zlib

    height, width, channels = pixels.shape
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, {3: 2, 4: 6}[channels], 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def test_sixteen_bit_colour_pngs_are_refused_not_narrowed(folder, tmp_path, rng):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    deep = rng.integers(0, 65536, (24, 20, 3)).astype(np.uint16)
    (copy / "deep.png").write_bytes(_sixteen_bit_png(deep))
    with Image.open(copy / "deep.png") as image:  # what Pillow makes of it: 8-bit RGB, each sample's high byte
        assert image.mode == "RGB" and np.array_equal(np.asarray(image), (deep >> 8).astype(np.uint8))
    with pytest.raises(OSError, match="deep.png: ValueError: a 16-bit RGB PNG: Pillow reads only the high byte"):
        fastfid.compute_stats(copy, model=tiny(), **OPTIONS)
    (copy / "deep.png").write_bytes(_sixteen_bit_png(rng.integers(0, 65536, (24, 20, 4)).astype(np.uint16)))
    with pytest.warns(RuntimeWarning, match="1 unreadable image"):
        kept = fastfid.compute_stats(copy, model=tiny(), skip_bad=True, **OPTIONS)
    assert kept.count == 23


def test_a_fifo_named_like_an_image_is_reported_not_waited_for(folder, tmp_path):
    import shutil

    copy = tmp_path / "images"
    shutil.copytree(folder, copy)
    os.mkfifo(copy / "part0" / "00_pipe.png")
    with pytest.raises(OSError, match="00_pipe.png: OSError: not a regular file"):
        fastfid.compute_stats(copy, model=tiny(), **OPTIONS)
    with pytest.warns(RuntimeWarning, match="1 unreadable image of"):
        assert fastfid.compute_stats(copy, model=tiny(), skip_bad=True, **OPTIONS).count == 23
    # Hashing every item for a content fingerprint must not open the FIFO for reading and wait. A
    # watchdog writer releases such a wait after 20 s, so that a regression fails instead of hanging.
    import threading
    import time

    done = threading.Event()

    def release():
        if not done.wait(20):
            with open(copy / "part0" / "00_pipe.png", "wb"):
                pass

    watchdog = threading.Thread(target=release, daemon=True)
    watchdog.start()
    started = time.monotonic()
    try:
        with pytest.warns(RuntimeWarning, match="1 unreadable image of"):
            stats = fastfid.compute_stats(copy, model=tiny(), skip_bad=True, fingerprint="content",
                                          checkpoint=tmp_path / "run.npz", **OPTIONS)
    finally:
        done.set()
    assert time.monotonic() - started < 15 and stats.count == 23


def test_an_archive_with_repeated_member_names_is_refused(folder, tmp_path):
    archive = tmp_path / "images.zip"
    first = sorted(folder.rglob("*.png"))[0]
    with zipfile.ZipFile(archive, "w") as zipped, pytest.warns(UserWarning, match="Duplicate name"):
        zipped.write(first, "a.png")
        zipped.write(first, "a.png")
    with pytest.raises(ValueError, match="several members named 'a.png'"):
        fastfid.compute_stats(archive, model=tiny(), **OPTIONS)


@pytest.mark.parametrize("fingerprint", ["stat", "content"])
def test_images_changed_under_a_checkpoint_are_not_resumed(folder, tmp_path, fingerprint):
    import shutil

    copy = tmp_path / "images"
    shutil.copytree(folder, copy)
    checkpoint = tmp_path / "partial.npz"
    interrupted = FeatureExtractor(InterruptedNet(), device="cpu", image_size=SIZE)
    with pytest.raises(Interrupted):
        fastfid.compute_stats(copy, model=interrupted, checkpoint=checkpoint, fingerprint=fingerprint, **OPTIONS)
    names = sorted(copy.rglob("*.png"), key=lambda p: str(p.relative_to(copy)))
    # An image already read, rewritten with other pixels (same size: only the time or the content tells).
    done = names[0]
    with Image.open(done) as image:
        pixels = np.asarray(image)
    time.sleep(0.01)
    Image.fromarray(255 - pixels).save(done)
    with pytest.raises(ValueError, match="already processed changed"):
        fastfid.compute_stats(copy, model=tiny(), checkpoint=checkpoint, resume=True, fingerprint=fingerprint,
                              **OPTIONS)


def test_compute_fid_refuses_several_spaces_before_any_image_is_read(folder, tmp_path, monkeypatch, rng):
    import fastfid.data

    decoded = []
    real_decode = fastfid.data._DecodedImages._decode
    monkeypatch.setattr(fastfid.data._DecodedImages, "_decode",
                        lambda self, name: decoded.append(name) or real_decode(self, name))
    with pytest.raises(ValueError, match="compute_fid compares one space"):
        fastfid.compute_fid(folder, folder, model=["inception", "dinov2-vit-l14"], **OPTIONS)
    assert decoded == []
    # With two statistics files the list is refused too, not silently ignored.
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    for path in (a, b):
        fastfid.FeatureStats.from_features(rng.standard_normal((20, 4))).save(path)
    with pytest.raises(ValueError, match="compute_fid compares one space"):
        fastfid.compute_fid(a, b, model=["inception", "dinov2-vit-l14"], **OPTIONS)
    # The decode counter sees reads when there are some.
    fastfid.compute_fid(folder, folder, model=tiny(), **OPTIONS)
    assert decoded


def test_statistics_that_the_images_cannot_be_compared_with_are_refused_before_any_image_is_read(
        folder, tmp_path, monkeypatch, rng):
    import fastfid.data

    decoded = []
    real_decode = fastfid.data._DecodedImages._decode
    monkeypatch.setattr(fastfid.data._DecodedImages, "_decode",
                        lambda self, name: decoded.append(name) or real_decode(self, name))
    declared = TinyNet()
    declared.dims = dims = 16  # a network that declares its width (fastfid's own do): checked up front
    other_dim = tmp_path / "other_dim.npz"
    fastfid.FeatureStats.from_features(rng.standard_normal((20, dims + 1))).save(other_dim)
    with pytest.raises(ValueError, match=f"of dim {dims + 1}, with this network's features of dim {dims}"):
        fastfid.compute_fid(folder, other_dim, model=FeatureExtractor(declared, device="cpu", image_size=SIZE),
                            **OPTIONS)
    other_resize = tmp_path / "other_resize.npz"
    stats = fastfid.FeatureStats.from_features(rng.standard_normal((20, dims)))
    stats.feature_space = tiny(resize="clean").feature_space
    stats.save(other_resize)
    with pytest.raises(ValueError, match="resize=clean.*but the images would give.*resize=pytorch-fid"):
        fastfid.compute_fid(other_resize, folder, model=tiny(), **OPTIONS)
    assert decoded == []
    # The same space is accepted, and its images are read.
    stats.feature_space = tiny().feature_space
    stats.save(other_resize)
    assert fastfid.compute_fid(folder, other_resize, model=tiny(), **OPTIONS).value > 0 and decoded


def test_a_source_with_nothing_readable_says_so_plainly(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "only.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"none of its 1 image could be read \(.*only.png: "), \
            pytest.warns(RuntimeWarning, match="1 unreadable image"):
        fastfid.compute_stats(broken, model=tiny(), skip_bad=True, **OPTIONS)
