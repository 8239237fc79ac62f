import os

import numpy as np
import pytest

import fastfid
import fastfid.files.stats
from support.features import relu_features


@pytest.fixture
def stats(rng):
    return fastfid.FeatureStats.from_features(relu_features(rng, 300, 12, offset=2.0))


def test_round_trip_is_exact(stats, tmp_path):
    path = tmp_path / "stats.npz"
    stats.save(path)
    loaded = fastfid.FeatureStats.load(path)
    assert loaded.count == stats.count and loaded.dim == stats.dim
    assert np.array_equal(loaded.mean, stats.mean)
    assert np.array_equal(loaded.comoment, stats.comoment)
    assert np.array_equal(loaded.cov, stats.cov)


def test_pytorch_fid_reads_mu_and_sigma(stats, tmp_path):
    path = tmp_path / "stats.npz"
    stats.save(path)
    with np.load(path) as data:  # what pytorch-fid and clean-fid do
        assert np.array_equal(data["mu"], stats.mean)
        np.testing.assert_allclose(data["sigma"], stats.cov, rtol=1e-15)


def test_saved_file_has_ordinary_permissions(stats, tmp_path):
    mask = os.umask(0o022)
    try:
        stats.save(tmp_path / "stats.npz")
    finally:
        os.umask(mask)
    assert (tmp_path / "stats.npz").stat().st_mode & 0o777 == 0o644


def test_saved_name_is_kept_and_no_temporary_is_left(stats, tmp_path):
    stats.save(tmp_path / "stats.custom")
    assert os.listdir(tmp_path) == ["stats.custom"]


def test_resume_loses_nothing(rng, tmp_path):
    x = relu_features(rng, 900, 10)
    uninterrupted = fastfid.FeatureStats(10)
    for part in np.array_split(x, 9):
        uninterrupted.update(part)
    resumed = fastfid.FeatureStats(10)
    for i, part in enumerate(np.array_split(x, 9)):
        if i == 4:  # interrupted: the next process picks up the saved state
            resumed.save(tmp_path / "partial.npz")
            resumed = fastfid.FeatureStats.load(tmp_path / "partial.npz")
        resumed.update(part)
    # Same samples, grouped differently into native passes: equal up to float64 rounding
    # (tests/test_stats.py's 1e-12 of the largest entry).
    assert resumed.count == uninterrupted.count == 900
    np.testing.assert_allclose(resumed.mean, uninterrupted.mean, rtol=0, atol=1e-12 * np.abs(x).max())
    np.testing.assert_allclose(resumed.cov, uninterrupted.cov, rtol=0,
                               atol=1e-12 * np.abs(uninterrupted.cov).max())


def test_saved_shards_merge_like_in_memory(rng, tmp_path):
    x = relu_features(rng, 600, 8)
    parts = [fastfid.FeatureStats.from_features(p) for p in np.array_split(x, 3)]
    for i, part in enumerate(parts):
        part.save(tmp_path / f"part{i}.npz")
    loaded = [fastfid.FeatureStats.load(tmp_path / f"part{i}.npz") for i in range(3)]
    assert np.array_equal((loaded[0] + loaded[1] + loaded[2]).cov, (parts[0] + parts[1] + parts[2]).cov)


def test_plain_mu_sigma_file_reads_but_does_not_merge(stats, tmp_path):
    path = tmp_path / "pytorch_fid.npz"
    np.savez(path, mu=stats.mean, sigma=stats.cov)  # as pytorch-fid --save-stats writes
    plain = fastfid.FeatureStats.load(path)
    assert plain.count is None and not plain.mergeable
    assert np.array_equal(plain.cov, stats.cov)
    assert fastfid.fid(plain, stats) == pytest.approx(0, abs=1e-10 * np.trace(stats.cov))
    with pytest.raises(ValueError, match="sample count is unknown"):
        plain.merge(stats)
    with pytest.raises(ValueError, match="sample count is unknown"):
        stats.merge(plain)
    with pytest.raises(ValueError, match="sample count is unknown"):
        plain.update(np.zeros((3, stats.dim)))
    plain.save(tmp_path / "again.npz")  # a summary saves back as a summary, its mean and covariance intact
    again = fastfid.FeatureStats.load(tmp_path / "again.npz")
    assert again.count is None
    assert np.array_equal(again.mean, stats.mean) and np.array_equal(again.cov, plain.cov)


def test_statistics_read_from_a_stream_and_written_as_a_state(stats, tmp_path):
    import io

    from fastfid.files.stats import write_state

    buffer = io.BytesIO()
    write_state(stats.to_stored(), buffer)  # no sigma: what fastfid.client sends
    with np.load(io.BytesIO(buffer.getvalue())) as data:
        assert "sigma" not in data.files
    loaded = fastfid.FeatureStats.load(buffer)
    assert loaded.count == stats.count and np.array_equal(loaded.comoment, stats.comoment)
    with pytest.raises(OSError, match="upload is not a readable .npz"):
        fastfid.FeatureStats.load(io.BytesIO(buffer.getvalue()[:200]))
    with pytest.raises(ValueError, match="at least one sample"):
        write_state(fastfid.FeatureStats(3).to_stored(), io.BytesIO())


def test_clean_fid_compressed_file_reads(stats, tmp_path):
    path = tmp_path / "clean_fid.npz"
    np.savez_compressed(path, mu=stats.mean, sigma=stats.cov)
    assert np.array_equal(fastfid.FeatureStats.load(path).cov, stats.cov)


def test_empty_stats_are_not_saved(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        fastfid.FeatureStats(3).save(tmp_path / "x.npz")


def test_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        fastfid.FeatureStats.load(tmp_path / "missing.npz")


@pytest.mark.parametrize("keep", [0.3, 0.7, 0.95])
def test_truncated_file_is_an_os_error(stats, tmp_path, keep):
    path = tmp_path / "stats.npz"
    stats.save(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(OSError, match="truncated or corrupt"):
        fastfid.FeatureStats.load(path)


def test_corrupted_compressed_member_is_an_os_error(stats, tmp_path):
    path = tmp_path / "stats.npz"
    np.savez_compressed(path, mu=stats.mean, sigma=stats.cov)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)
    path.write_bytes(bytes(data))
    with pytest.raises(OSError, match="truncated or corrupt"):
        fastfid.FeatureStats.load(path)


def test_garbage_is_an_os_error(tmp_path):
    path = tmp_path / "garbage.npz"
    path.write_bytes(b"this is not a zip file at all" * 10)
    with pytest.raises(OSError, match="not a readable"):
        fastfid.FeatureStats.load(path)


@pytest.mark.parametrize(
    "contents,match",
    [
        ({"mu": np.zeros(3), "extra": np.zeros(1)}, r"missing \['sigma'\]; it has keys \['extra', 'mu'\]"),
        ({"sigma": np.eye(3)}, r"missing \['mu'\]"),
        ({"mu": np.zeros(3), "sigma": np.eye(4)}, r"sigma has shape \(4, 4\), expected \(3, 3\)"),
        ({"mu": np.zeros(3), "sigma": np.full((3, 3), np.nan)}, "NaN or Inf"),
        ({"mu": np.zeros(3), "sigma": np.eye(3), "fastfid_count": np.int64(5), "fastfid_format": np.int64(1)},
         "fastfid_comoment_upper"),
        ({"mu": np.zeros(3), "sigma": np.eye(3), "fastfid_count": np.int64(5), "fastfid_format": np.int64(9),
          "fastfid_comoment_upper": np.zeros(6)}, "unsupported fastfid statistics format 9"),
        ({"mu": np.zeros(3), "sigma": np.eye(3), "fastfid_count": np.int64(5), "fastfid_format": np.int64(1),
          "fastfid_comoment_upper": np.zeros(5)}, r"fastfid_comoment_upper has shape \(5,\), expected \(6,\)"),
    ],
)
def test_bad_contents_are_named(tmp_path, contents, match):
    path = tmp_path / "bad.npz"
    np.savez(path, **contents)
    with pytest.raises(ValueError, match=match):
        fastfid.FeatureStats.load(path)


def test_single_array_file_is_refused(tmp_path):
    path = tmp_path / "features.npy"
    np.save(path, np.zeros((4, 3)))
    with pytest.raises(ValueError, match="single array"):
        fastfid.FeatureStats.load(path)


def test_the_feature_space_travels_with_the_statistics(rng, tmp_path):
    import pickle

    space = "FIDInceptionV3(dims=2048, weights=pt_inception-2015-12-05-6726825d) resize=clean 299x299"
    stats = fastfid.FeatureStats(4, feature_space=space).update(rng.normal(size=(20, 4)))
    stats.save(tmp_path / "s.npz")
    assert fastfid.FeatureStats.load(tmp_path / "s.npz").feature_space == space
    assert pickle.loads(pickle.dumps(stats)).feature_space == space
    assert (fastfid.FeatureStats.from_features(rng.normal(size=(5, 4))) + stats).feature_space == space
    unknown = fastfid.FeatureStats.from_features(rng.normal(size=(5, 4)))
    np.savez(tmp_path / "plain.npz", mu=unknown.mean, sigma=unknown.cov)  # pytorch-fid's files say nothing
    assert fastfid.FeatureStats.load(tmp_path / "plain.npz").feature_space is None


def test_a_refused_merge_or_removal_changes_nothing(rng):
    space = "TinyNet resize=pytorch-fid 24x24"
    unknown = fastfid.FeatureStats.from_features(rng.normal(size=(30, 4)))
    labelled = fastfid.FeatureStats(4, feature_space=space).update(rng.normal(size=(40, 4)))
    with pytest.raises(ValueError, match="a part must be smaller"):
        unknown.remove(labelled)  # refused after every check on the other statistics passed
    assert unknown.feature_space is None and unknown.count == 30
    with pytest.raises(ValueError, match="different features"):
        labelled.merge(fastfid.FeatureStats(4, feature_space="other").update(rng.normal(size=(5, 4))))
    assert labelled.feature_space == space and labelled.count == 40


def declared_only(path, members):
    """An .npz whose members declare these shapes (float64) in their headers and hold 4 KiB of zeros:
    what a compressed file of zeros looks like before it is inflated."""
    import io
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, shape in members.items():
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": shape})
            archive.writestr(name + ".npy", header.getvalue() + bytes(4096))
    return path


def test_a_small_file_that_would_unpack_to_gigabytes_is_refused_unread(tmp_path, stats):
    # As mu = zeros(20000), sigma = zeros((20000, 20000)) compressed: a few MB that numpy inflates to
    # 3 GiB (twice that while converting) before any check of the contents. At d = 4000 (122 MiB
    # declared in a few dozen bytes) the memory check passes on any machine, and the inflation check refuses.
    zeros = declared_only(tmp_path / "zeros.npz", {"mu": (4000,), "sigma": (4000, 4000)})
    with pytest.raises(ValueError, match=r"sigma declares 122 MiB in \d+ bytes of compressed data, more than 256:1"):
        fastfid.FeatureStats.load(zeros)
    bomb = declared_only(tmp_path / "bomb.npz", {"mu": (20000,), "sigma": (20000, 20000)})
    # Against statistics of another dim, the headers decide before either file is read.
    small = tmp_path / "small.npz"
    stats.save(small)
    with pytest.raises(ValueError, match="cannot compare statistics of dim 12 and 20000"):
        fastfid.fid(small, bomb)
    with pytest.raises(ValueError, match="statistics of dim 20000 cannot be compared with a reference of dim 12"):
        fastfid.Reference(small).distance(bomb)
    assert fastfid.files.stats.stats_dim(small) == 12


def test_one_writer_per_output_and_a_killed_writer_blocks_nobody(tmp_path):
    import signal
    import subprocess
    import sys

    from fastfid.files.atomic import writing

    target = tmp_path / "same.npz"
    with writing(target):
        with pytest.raises(FileExistsError, match=rf"same.npz is being written by another fastfid \(pid {os.getpid()}"):
            with writing(target):
                pass
    assert not (tmp_path / "same.npz.lock").exists()  # nothing left behind
    # A writer killed with SIGKILL (no cleanup runs) leaves its lock file, but not its lock.
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from fastfid.files.atomic import writing\n"
        f"with writing({str(target)!r}):\n    print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(FileExistsError, match=rf"pid {holder.pid} on"):
        with writing(target):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    holder.stdout.close()
    assert (tmp_path / "same.npz.lock").exists()
    with writing(target):
        pass
