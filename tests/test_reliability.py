"""Real conditions without torch: partial checkpoints, files that must not be lost or overwritten,
bad files named on one line, threads, overflow, crashes in the middle of a save."""

import errno
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import fastfid
from fastfid.files import atomic, format as keys
from fastfid.files.stats import read_progress, save_stats
from fastfid.cli import main
from support.features import relu_features


@pytest.fixture
def features(rng, tmp_path):
    """Two feature files and their statistics files."""
    paths = {}
    for name, offset in (("real", 0.0), ("fake", 0.2)):
        x = relu_features(rng, 400, 16, offset=offset).astype(np.float32)
        np.save(tmp_path / f"{name}.npy", x)
        fastfid.FeatureStats.from_features(x).save(tmp_path / f"{name}.npz")
        paths[name] = tmp_path / name
    return paths


def partial_file(tmp_path, rng):
    """A checkpoint of a job stopped after 140 of 300 samples."""
    stats = fastfid.FeatureStats.from_features(relu_features(rng, 140, 16))
    path = tmp_path / "partial.npz"
    save_stats(stats.to_stored(), path, progress={"start": 0, "stop": 300, "next": 140, "skipped": 0, "complete": False})
    return path


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fastfid: "), err
    return err


# --- partial statistics are never final ones by accident ---------------------------------------------
def test_partial_statistics_are_refused_where_final_ones_are_read(tmp_path, rng, features, capsys):
    partial = partial_file(tmp_path, rng)
    assert not {"mu", "sigma"} & set(np.load(partial).files)  # pytorch-fid cannot read them as final
    with pytest.raises(keys.PartialStatisticsError, match="140 of 300 items done"):
        fastfid.FeatureStats.load(partial)
    with pytest.raises(keys.PartialStatisticsError):
        fastfid.fid(partial, f"{features['real']}.npz")
    assert main(["fid", str(partial), f"{features['real']}.npz"]) == 1
    assert "partial statistics" in one_error_line(capsys)
    assert main(["merge", str(partial), f"{features['real']}.npz", "-o", str(tmp_path / "all.npz")]) == 1
    assert "--allow-partial" in one_error_line(capsys)
    assert not (tmp_path / "all.npz").exists()
    # Asked for explicitly, they are used as they are.
    assert main(["merge", str(partial), f"{features['real']}.npz", "-o", str(tmp_path / "all.npz"),
                 "--allow-partial"]) == 0
    assert fastfid.FeatureStats.load(tmp_path / "all.npz").count == 540
    with pytest.warns(RuntimeWarning, match="partial.npz holds partial statistics"):
        assert main(["fid", str(partial), f"{features['real']}.npz", "--allow-partial"]) == 0
    assert fastfid.FeatureStats.load(partial, allow_partial=True).count == 140


def test_the_same_statistics_are_not_merged_twice(features, tmp_path, capsys):
    real = f"{features['real']}.npz"
    assert main(["merge", real, real, "-o", str(tmp_path / "twice.npz")]) == 1
    assert "same samples twice" in one_error_line(capsys)
    stats = fastfid.FeatureStats.load(real)
    with pytest.raises(ValueError, match="into themselves"):
        stats.merge(stats)


# --- outputs are checked before any work, and never written over an input -----------------------------
def test_outputs_are_checked_before_any_work(features, tmp_path, capsys, monkeypatch):
    import fastfid.extraction

    def no_work(*args, **kwargs):
        raise AssertionError("the work started before the output was checked")

    monkeypatch.setattr(fastfid.extraction, "compute_stats", no_work)
    real = f"{features['real']}.npy"
    for output, message in ((tmp_path / "missing" / "out.npz", "does not exist"),
                            (tmp_path / "out_noext", f"name it {tmp_path / 'out_noext.npz'}"),
                            (tmp_path / "real" / "0.png", f"name it {tmp_path / 'real' / '0.png.npz'}"),
                            (tmp_path / "out.npy", ".npz file")):
        assert main(["stats", real, "-o", str(output)]) == 1
        assert message in one_error_line(capsys)
        assert main(["fid", real, str(output), "--save-stats"]) == 1
        assert message in one_error_line(capsys)


def test_an_input_is_never_overwritten(features, tmp_path, capsys):
    real = f"{features['real']}.npz"
    before = Path(real).read_bytes()
    assert main(["merge", real, f"{features['fake']}.npz", "-o", real]) == 1
    assert "also an input" in one_error_line(capsys)
    assert Path(real).read_bytes() == before


# --- files and arrays with no network need no torch --------------------------------------------------
def test_feature_and_statistics_files_need_no_torch(features, tmp_path):
    # torch made unimportable, as after the README's `pip install .`: stats of a .npy and FID of
    # two .npz run, and torch is never imported.
    script = f"""
import sys
sys.modules["torch"] = None
from fastfid.cli import main
assert main(["stats", {str(features['real']) + '.npy'!r}, "-o", {str(tmp_path / 'r.npz')!r}, "--quiet"]) == 0
assert main(["fid", {str(tmp_path / 'r.npz')!r}, {str(features['fake']) + '.npz'!r}]) == 0
assert main(["fid", {str(features['real']) + '.npy'!r}, {str(features['fake']) + '.npy'!r}, "--quiet"]) == 0
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("FID:") == 2


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"fastfid {fastfid.__version__}"


# --- one line on stderr, naming the file ---------------------------------------------------------------
def test_bad_files_are_named_on_one_line(tmp_path, features, capsys):
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    three_d = tmp_path / "cube.npy"
    np.save(three_d, np.zeros((2, 3, 4), np.float32))
    with_nan = tmp_path / "nan.npy"
    x = np.ones((10, 4), np.float32)
    x[7, 2] = np.nan
    np.save(with_nan, x)
    empty_npz = tmp_path / "empty.npz"
    empty_npz.write_bytes(b"")
    cases = [(empty, "empty.npy is empty (0 bytes)"), (three_d, "2-D arrays are features"),
             (with_nan, "nan.npy, rows 0–9: features contain NaN"), (empty_npz, "empty.npz is empty")]
    for path, message in cases:
        assert main(["stats", str(path), "-o", str(tmp_path / "out.npz"), "--quiet"]) == 1
        assert message in one_error_line(capsys)
    assert main(["fid", str(empty), f"{features['real']}.npz", "--error-bars", "--quiet"]) == 1
    assert "empty.npy is empty" in one_error_line(capsys)


def test_ctrl_c_is_one_line(features, capsys, monkeypatch):
    import fastfid.extraction

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fastfid.extraction, "compute_fid", interrupted)
    assert main(["fid", f"{features['real']}.npz", f"{features['fake']}.npz"]) == 130
    assert one_error_line(capsys) == "fastfid: interrupted\n"


def test_memory_errors_are_one_line(features, capsys, monkeypatch):
    import fastfid.extraction

    def too_big(*args, **kwargs):
        raise MemoryError("Unable to allocate 9.3 GiB")

    monkeypatch.setattr(fastfid.extraction, "compute_fid", too_big)
    assert main(["fid", f"{features['real']}.npz", f"{features['fake']}.npz"]) == 1
    assert one_error_line(capsys) == "fastfid: error: out of memory: Unable to allocate 9.3 GiB\n"


def test_error_bars_say_what_each_number_is(features, capsys):
    assert main(["fid", f"{features['fake']}.npy", f"{features['real']}.npz", "--error-bars", "--groups", "4",
                 "--quiet"]) == 0
    corrected, plain = capsys.readouterr().out.splitlines()
    # The interval belongs to the bias-corrected value and stands beside it; the plain FID, which
    # may lie outside it, is on its own line with its own label.
    assert corrected.startswith("bias-corrected FID: ") and "95% interval [" in corrected
    assert "standard error" in corrected and plain.startswith("plain FID: ") and "not bias-corrected" in plain
    value = float(corrected.split()[2])
    low, high = (float(x) for x in corrected.split("[")[1].split("]")[0].split(","))
    assert low < value < high


# --- threads ---------------------------------------------------------------------------------------
def test_concurrent_updates_lose_nothing(rng):
    # 4 threads × 50 chunks into one object (small chunks go through the gathering buffer, large
    # ones straight to the native pass): every sample counts once, as one thread would count it.
    chunks = [relu_features(rng, 37 if i % 2 else 300, 32) for i in range(200)]
    shared = fastfid.FeatureStats(32)

    def feed(part):
        for chunk in part:
            shared.update(chunk)

    threads = [threading.Thread(target=feed, args=(chunks[k::4],)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    alone = fastfid.FeatureStats.from_features(np.concatenate(chunks))
    assert shared.count == alone.count == sum(len(c) for c in chunks)
    # Summation order differs between threads: rounding only (≈ 1e-16 relative per add).
    np.testing.assert_allclose(shared.cov, alone.cov, rtol=0, atol=1e-12 * np.abs(alone.cov).max())
    np.testing.assert_allclose(shared.mean, alone.mean, rtol=1e-12)


# --- numbers that cannot be represented are refused ---------------------------------------------------
def test_features_whose_squares_overflow_are_refused():
    stats = fastfid.FeatureStats(3)
    for rows in (5, 5000):  # one panel and several
        with pytest.raises(ValueError, match="beyond ±1e150"):
            stats.update(np.full((rows, 3), 1e200))
    assert stats.count == 0


def test_a_count_that_would_overflow_is_refused(tmp_path):
    huge = fastfid.FeatureStats._adopt_state(2**62, np.zeros(2), np.eye(2))
    with pytest.raises(OverflowError, match="overflows"):
        huge.merge(huge.copy())
    assert huge.count == 2**62


def test_masked_arrays_are_refused():
    x = np.ma.masked_array(np.ones((4, 2)), mask=[[0, 0], [1, 0], [0, 0], [0, 0]])
    with pytest.raises(TypeError, match="masked array"):
        fastfid.FeatureStats.from_features(x)


def test_removing_a_part_that_was_never_merged_is_refused(rng):
    whole = fastfid.FeatureStats.from_features(relu_features(rng, 100, 8))
    stranger = fastfid.FeatureStats.from_features(relu_features(rng, 50, 8, offset=3.0) * 10)
    before = whole.cov
    with pytest.raises(ValueError, match="not contained"):
        whole.remove(stranger)
    np.testing.assert_array_equal(whole.cov, before)


# --- crafted files are refused before they are read ---------------------------------------------------
def _npy_header_only(shape, dtype="<f8") -> bytes:
    header = np.lib.format.header_data_from_array_1_0(np.zeros(0))
    header.update(shape=shape, descr=dtype)
    from io import BytesIO

    buffer = BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


def test_declared_sizes_are_checked_before_reading(tmp_path):
    # A few bytes that declare a 20000² sigma beside a mean of dim 10: refused from the headers.
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w") as archive:
        archive.writestr("mu.npy", _npy_header_only((10,)) + bytes(80))
        archive.writestr("sigma.npy", _npy_header_only((20000, 20000)))
    started = time.perf_counter()
    with pytest.raises(ValueError, match=r"sigma has shape \(20000, 20000\), expected \(10, 10\)"):
        fastfid.FeatureStats.load(bomb)
    # Consistent but larger than this machine's memory: refused before any allocation.
    d = 4_000_000
    huge = tmp_path / "huge.npz"
    with zipfile.ZipFile(huge, "w") as archive:
        archive.writestr("mu.npy", _npy_header_only((d,)))
        archive.writestr("fastfid_count.npy", _npy_header_only((), "<i8") + bytes(8))
        archive.writestr("fastfid_format.npy", _npy_header_only((), "<i8") + bytes(8))
        archive.writestr("fastfid_comoment_upper.npy", _npy_header_only((d * (d + 1) // 2,)))
    with pytest.raises(MemoryError, match="dim 4000000"):
        fastfid.FeatureStats.load(huge)
    assert time.perf_counter() - started < 5


# --- saves: all or nothing, nothing left behind -------------------------------------------------------
def test_a_failed_save_keeps_the_old_file_and_leaves_nothing(features, tmp_path, monkeypatch):
    target = tmp_path / "stats.npz"
    old = fastfid.FeatureStats.load(f"{features['real']}.npz")
    old.save(target)
    before = target.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OSError, match=f"cannot write {target}: No space left on device"):
        fastfid.FeatureStats.load(f"{features['fake']}.npz").save(target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_temporaries_of_killed_writers_are_removed(features, tmp_path):
    target = tmp_path / "stats.npz"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    abandoned = tmp_path / f"{atomic._temporary_prefix(target, int(dead.stdout))}abc{atomic.TEMPORARY_SUFFIX}"
    abandoned.write_bytes(b"x" * 1000)
    alive = tmp_path / f"{atomic._temporary_prefix(target)}def{atomic.TEMPORARY_SUFFIX}"  # this process: a live writer
    alive.write_bytes(b"y")
    fastfid.FeatureStats.load(f"{features['real']}.npz").save(target)
    assert not abandoned.exists() and alive.exists()


# --- feature files are checkpointed and resumed like images -------------------------------------------
def test_an_interrupted_feature_file_resumes(rng, tmp_path, monkeypatch, capsys):
    from fastfid.extraction import FeatureRows

    monkeypatch.setattr(FeatureRows, "rows_per_read", 100)
    x = relu_features(rng, 1000, 8)
    np.save(tmp_path / "x.npy", x)
    update, calls = fastfid.FeatureStats.update, []

    def interrupted_update(self, rows):  # Ctrl-C during the fourth slice
        calls.append(1)
        if len(calls) == 4:
            os.kill(os.getpid(), signal.SIGINT)
        return update(self, rows)

    monkeypatch.setattr(fastfid.FeatureStats, "update", interrupted_update)
    output = str(tmp_path / "x.npz")
    assert main(["stats", str(tmp_path / "x.npy"), "-o", output, "--quiet"]) == 130
    assert "400 of 1000" in one_error_line(capsys)
    monkeypatch.setattr(fastfid.FeatureStats, "update", update)
    assert fastfid.FeatureStats.load(output, allow_partial=True).count == 400
    assert main(["stats", str(tmp_path / "x.npy"), "-o", output, "--quiet", "--resume"]) == 0
    resumed, whole = fastfid.FeatureStats.load(output), fastfid.FeatureStats.from_features(x)
    assert resumed.count == 1000
    np.testing.assert_allclose(resumed.cov, whole.cov, rtol=0, atol=1e-12 * np.abs(whole.cov).max())
    # A feature file rewritten under the same name is not resumed into.
    assert main(["stats", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npz"), "--quiet"]) == 0
    save_stats(fastfid.FeatureStats.load(output).to_stored(), tmp_path / "y.npz", progress={
        **read_progress(output), "next": 500, "complete": False})
    capsys.readouterr()
    time.sleep(0.01)
    np.save(tmp_path / "x.npy", x + 1)
    assert main(["stats", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npz"), "--quiet", "--resume"]) == 1
    assert "changed" in one_error_line(capsys)


def test_bad_rows_leave_no_empty_checkpoint_and_a_kept_one_says_how_to_go_on(rng, tmp_path, monkeypatch, capsys):
    from fastfid.extraction import FeatureRows

    monkeypatch.setattr(FeatureRows, "rows_per_read", 100)
    x = relu_features(rng, 1000, 8)
    bad, source, output = x.copy(), str(tmp_path / "x.npy"), tmp_path / "x.npz"
    bad[50, 3] = np.nan  # in the first slice: nothing is done, so nothing is kept
    np.save(source, bad)
    assert main(["stats", source, "-o", str(output), "--quiet"]) == 1
    message = one_error_line(capsys)
    assert "rows 0–99" in message and "NaN" in message and "saved" not in message and not output.exists()
    bad[50, 3], bad[450, 3] = 0.5, np.nan  # in the fifth slice: four are done and kept
    np.save(source, bad)
    assert main(["stats", source, "-o", str(output), "--quiet"]) == 1
    message = one_error_line(capsys)
    assert "rows 400–499" in message and f"400 of 1000 rows done are saved in {output}" in message
    assert "--resume" in message and "--overwrite" in message
    np.save(source, x)  # repaired: a feature file is one whole, so its progress cannot be resumed into
    assert main(["stats", source, "-o", str(output), "--quiet"]) == 1
    assert "partial run (400 of 1000 rows done): continue it with --resume" in one_error_line(capsys)
    assert main(["stats", source, "-o", str(output), "--quiet", "--resume"]) == 1
    assert "changed since it was saved" in (message := one_error_line(capsys)) and "--overwrite" in message
    assert main(["stats", source, "-o", str(output), "--quiet", "--overwrite"]) == 0
    capsys.readouterr()
    whole = fastfid.FeatureStats.from_features(x)
    np.testing.assert_allclose(fastfid.FeatureStats.load(output).cov, whole.cov, rtol=0,
                               atol=1e-12 * np.abs(whole.cov).max())  # a fresh run: rounding only
    # Finished statistics are not replaced unasked, by a job or by statistics passed through.
    np.save(tmp_path / "other.npy", x[:500])
    fastfid.FeatureStats.from_features(x[:500]).save(tmp_path / "other.npz")
    for path in (str(tmp_path / "other.npy"), str(tmp_path / "other.npz")):
        assert main(["stats", path, "-o", str(output), "--quiet"]) == 1
        assert "already exists" in one_error_line(capsys) and fastfid.FeatureStats.load(output).count == 1000
    assert main(["stats", str(tmp_path / "other.npy"), "-o", str(output), "--quiet", "--overwrite"]) == 0
    assert fastfid.FeatureStats.load(output).count == 500
    # Statistics in are neither sharded nor checkpointed, and a copy says nothing about either.
    assert main(["stats", str(output), "-o", str(tmp_path / "copy.npz"), "--quiet"]) == 0
    assert "sharded" not in capsys.readouterr().err
    assert main(["stats", str(output), "-o", str(tmp_path / "copy2.npz"), "--shard", "0/2"]) == 1
    assert "cannot be sharded" in one_error_line(capsys)


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_equals_an_uninterrupted_run(rng, tmp_path):
    # A feature file read 2,000 rows at a time, saving after every slice: kill -9 lands in updates,
    # in saves and between them. Every resume must give the uninterrupted statistics.
    x = relu_features(rng, 120_000, 48).astype(np.float32)
    source = tmp_path / "x.npy"
    np.save(source, x)
    whole = fastfid.FeatureStats.from_features(x)
    command = [sys.executable, "-m", "fastfid", "stats", str(source), "--quiet", "--checkpoint-every", "0",
               "--batch-size", "2000"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    moments = np.random.default_rng(5).uniform(0.3, 2.5, 20)
    for trial, moment in enumerate(moments):
        output = tmp_path / f"run{trial}.npz"
        job = subprocess.Popen(command + ["-o", str(output)], env=env, stderr=subprocess.DEVNULL)
        time.sleep(moment)
        job.send_signal(signal.SIGKILL)
        job.wait()
        resume = ["--resume"] if output.exists() else []
        finished = subprocess.run(command + ["-o", str(output)] + resume, env=env, capture_output=True, text=True)
        assert finished.returncode == 0, (trial, moment, finished.stderr)
        resumed = fastfid.FeatureStats.load(output)
        assert resumed.count == whole.count, (trial, moment)
        np.testing.assert_allclose(resumed.cov, whole.cov, rtol=0, atol=1e-10 * np.abs(whole.cov).max())
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".run{trial}.npz.")]  # no temporaries
