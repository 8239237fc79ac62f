import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastfid
import fastfid.files
from fastfid.cli import main
from support.features import relu_features


@pytest.fixture
def features(rng, tmp_path):
    a, b = relu_features(rng, 800, 16).astype(np.float32), relu_features(rng, 500, 16, offset=0.3)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    return tmp_path, a, b


def test_stats_then_fid(features, capsys):
    folder, a, b = features
    assert main(["stats", str(folder / "a.npy"), "-o", str(folder / "a.npz"), "--batch-size", "100"]) == 0
    assert main(["stats", str(folder / "b.npy"), "-o", str(folder / "b.npz")]) == 0
    capsys.readouterr()
    assert main(["fid", str(folder / "a.npz"), str(folder / "b.npz")]) == 0
    expected = fastfid.fid(fastfid.FeatureStats.from_features(a), fastfid.FeatureStats.from_features(b))
    out = capsys.readouterr().out
    assert out.startswith("FID: ") and float(out.split()[1]) == pytest.approx(expected, abs=1e-6)


def test_fid_json(features, capsys):
    folder, a, b = features
    fastfid.FeatureStats.from_features(a).save(folder / "a.npz")
    fastfid.FeatureStats.from_features(b).save(folder / "b.npz")
    assert main(["fid", str(folder / "a.npz"), str(folder / "b.npz"), "--json", "--method", "newton_schulz"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["method"] == "newton_schulz" and report["converged"]
    assert report["fid"] == pytest.approx(fastfid.fid(folder / "a.npz", folder / "b.npz"), rel=1e-10)


def test_merge_equals_stats_of_everything(features):
    folder, a, _ = features
    np.save(folder / "a1.npy", a[:300])
    np.save(folder / "a2.npy", a[300:])
    for part in ("a1", "a2"):
        assert main(["stats", str(folder / f"{part}.npy"), "-o", str(folder / f"{part}.npz")]) == 0
    assert main(["merge", str(folder / "a1.npz"), str(folder / "a2.npz"), "-o", str(folder / "all.npz")]) == 0
    merged = fastfid.FeatureStats.load(folder / "all.npz")
    whole = fastfid.FeatureStats.from_features(a)
    assert merged.count == 800
    np.testing.assert_allclose(merged.cov, whole.cov, rtol=0, atol=1e-12 * np.abs(whole.cov).max())


def test_errors_exit_non_zero_with_a_message(features, capsys):
    folder, *_ = features
    assert main(["fid", str(folder / "missing.npz"), str(folder / "missing.npz")]) == 1
    assert "missing.npz" in capsys.readouterr().err
    (folder / "bad.npy").write_bytes(b"not numpy")
    assert main(["stats", str(folder / "bad.npy"), "-o", str(folder / "x.npz")]) == 1
    assert "not a readable .npy" in capsys.readouterr().err
    assert main(["stats", str(folder / "a.npy"), "-o", str(folder / "x.npz"), "--batch-size", "0"]) == 2
    with pytest.raises(SystemExit):
        main(["fid", "only-one.npz"])


def test_module_entry_point(features):
    folder, a, _ = features
    fastfid.FeatureStats.from_features(a).save(folder / "a.npz")
    run = subprocess.run([sys.executable, "-m", "fastfid", "fid", str(folder / "a.npz"), str(folder / "a.npz")],
                         capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "FID: 0.000000"


# --- images ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def image_job(tmp_path_factory):
    """Two small image folders and a random FID Inception weight file; commands at dims 64 (fast)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("PIL")
    from PIL import Image


    root = tmp_path_factory.mktemp("cli_images")
    rng = np.random.default_rng(11)
    for name, high in (("generated", 180), ("real", 255)):
        for i in range(10):
            (root / name / f"d{i % 2}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, high, (24, 30, 3), dtype=np.uint8)).save(root / name / f"d{i % 2}/{i}.png")
    torch.manual_seed(2)
    from support.peers import calibrated_state_dict

    torch.save(calibrated_state_dict(), root / "w.pth")
    return root


def _image_flags(root, *extra):
    return ["--weights", str(root / "w.pth"), "--dims", "64", "--num-workers", "0", "--quiet", *extra]


def test_a_second_writer_of_one_output_is_refused_in_one_line(image_job, tmp_path, capsys):
    from fastfid.files.atomic import writing

    root, output = image_job, tmp_path / "same.npz"
    for command in (["stats", str(root / "real"), "-o", str(output)],  # checkpointed: the job locks it
                    ["fid", "--save-stats", str(root / "real"), str(output)]):
        with writing(output):  # another fastfid writing it now
            assert main(command + _image_flags(root)) == 1
        error = capsys.readouterr().err.strip()
        assert error.startswith("fastfid: error: ") and "is being written by another fastfid (pid" in error
        assert error.count("\n") == 0 and not output.exists()


def test_fid_of_two_folders_states_how_it_was_computed(image_job, capsys):
    root = image_job
    # pytorch-fid's flags, as its users type them
    args = ["fid", str(root / "generated"), str(root / "real"), "--batch-size", "4", "--device", "cpu"]
    assert main(args + _image_flags(root)) == 0
    out = capsys.readouterr().out.strip()
    expected = fastfid.compute_fid(root / "generated", root / "real", model=64, weights=root / "w.pth",
                                   batch_size=4, num_workers=0, progress=False)
    assert out == str(expected) and out.count("\n") == 0
    assert float(out.split()[1]) == pytest.approx(expected.value, abs=1e-6)
    assert "resize=pytorch-fid 299x299; 10 vs 10 samples" in out
    assert main(args + _image_flags(root, "--resize", "clean", "--json", "--isc", "--splits", "2")) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["resize"] == "clean" and "resize=clean" in report["feature_space"]
    assert report["inception_score"]["splits"] == 2 and report["counts"] == [10, 10]
    assert "warning: the Inception Score of 10 images in 2 splits (5 per split) is not comparable" in captured.err


def test_save_stats_has_pytorch_fids_meaning(image_job, tmp_path, capsys):
    root = image_job
    out = tmp_path / "real.npz"
    assert main(["fid", "--save-stats", str(root / "real"), str(out)] + _image_flags(root)) == 0
    saved = fastfid.FeatureStats.load(out)
    assert saved.count == 10 and saved.feature_space.startswith("FIDInceptionV3(dims=64")
    assert main(["fid", str(root / "generated"), str(out)] + _image_flags(root)) == 0
    with_stats = float(capsys.readouterr().out.split()[1])
    assert main(["fid", str(root / "generated"), str(root / "real")] + _image_flags(root)) == 0
    assert with_stats == pytest.approx(float(capsys.readouterr().out.split()[1]), abs=2e-6)


def test_job_array_shards_merge_into_the_whole(image_job, tmp_path, capsys, monkeypatch):
    root = image_job
    # One image per batch in one fixed execution mode (auto may pick another for the whole than for
    # a shard): the same features in every run.
    monkeypatch.setenv("FASTFID_EXECUTION", "eager")
    flags = _image_flags(root, "--batch-size", "1")
    assert main(["stats", str(root / "real"), "-o", str(tmp_path / "all.npz")] + flags) == 0
    parts = [str(tmp_path / f"part_{i}.npz") for i in range(3)]
    for i, part in enumerate(parts):
        assert main(["stats", str(root / "real"), "-o", part, "--shard", f"{i}/3"] + flags) == 0
    capsys.readouterr()
    assert main(["merge", *parts, "-o", str(tmp_path / "merged.npz")]) == 0
    assert "10 samples from 3 files" in capsys.readouterr().err
    assert main(["merge", parts[0], "-o", str(tmp_path / "one.npz")]) == 0
    assert "from 1 file ->" in capsys.readouterr().err
    # Statistics against statistics: the resize mode is the one their feature space names.
    assert main(["fid", str(tmp_path / "merged.npz"), str(tmp_path / "all.npz"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["resize"] == "pytorch-fid" and "resize=pytorch-fid" in report["feature_space"]
    merged, whole = fastfid.FeatureStats.load(tmp_path / "merged.npz"), fastfid.FeatureStats.load(tmp_path / "all.npz")
    assert merged.count == 10 and merged.feature_space == whole.feature_space
    np.testing.assert_allclose(merged.cov, whole.cov, rtol=0, atol=1e-12 * np.abs(whole.cov).max())
    with pytest.raises(SystemExit):
        main(["stats", str(root / "real"), "-o", "x.npz", "--shard", "3/3"])


def test_an_interrupted_stats_run_resumes(image_job, tmp_path, monkeypatch, capsys):
    import os
    import signal

    from fastfid.models import FIDInceptionV3

    root = image_job
    output = str(tmp_path / "real.npz")
    flags = _image_flags(root, "--batch-size", "3")
    assert main(["stats", str(root / "real"), "-o", str(tmp_path / "straight.npz")] + flags) == 0
    forward, calls = FIDInceptionV3.forward, []

    def interrupted_forward(self, images):  # Ctrl-C during the second batch
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return forward(self, images)

    monkeypatch.setattr(FIDInceptionV3, "forward", interrupted_forward)
    assert main(["stats", str(root / "real"), "-o", output] + flags) == 130
    assert "resume" in capsys.readouterr().err
    with pytest.raises(fastfid.files.PartialStatisticsError, match="6 of 10 items done"):
        fastfid.FeatureStats.load(output)  # a checkpoint is not final statistics
    assert fastfid.FeatureStats.load(output, allow_partial=True).count == 6
    assert not {"mu", "sigma"} & set(np.load(output).files)  # nor can pytorch-fid read it as such
    monkeypatch.setattr(FIDInceptionV3, "forward", forward)
    assert main(["stats", str(root / "real"), "-o", output] + flags) == 1  # a partial file is not overwritten
    assert "partial run (6 of 10 images done)" in capsys.readouterr().err
    assert main(["stats", str(root / "real"), "-o", output, "--resume"] + flags) == 0
    resumed, straight = fastfid.FeatureStats.load(output), fastfid.FeatureStats.load(tmp_path / "straight.npz")
    assert resumed.count == 10
    np.testing.assert_allclose(resumed.cov, straight.cov, rtol=0, atol=1e-12 * np.abs(straight.cov).max())


def test_the_wait_before_the_first_batch_says_what_is_under_way(image_job, tmp_path, capsys):
    root = image_job
    flags = [flag for flag in _image_flags(root) if flag != "--quiet"]
    assert main(["stats", str(root / "real"), "-o", str(tmp_path / "real.npz"), "--batch-size", "4"] + flags) == 0
    err = capsys.readouterr().err
    assert err.startswith("fastfid: loading the FID Inception-v3 (dims 64)\n")
    assert "reading the first images" in err and "the network on the first 4 images" in err
    assert main(["stats", str(root / "real"), "-o", str(tmp_path / "q.npz"), "--batch-size", "4"] + _image_flags(root)) == 0
    assert "loading" not in capsys.readouterr().err  # --quiet is quiet


def test_bad_images_fail_with_the_name_or_are_skipped(image_job, tmp_path, capsys):
    import shutil

    root = image_job
    shutil.copytree(root / "real", tmp_path / "real")
    (tmp_path / "real" / "d0" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    args = ["fid", str(tmp_path / "real"), str(root / "real")] + _image_flags(root)
    assert main(args) == 1
    assert "broken.jpg" in capsys.readouterr().err
    with pytest.warns(RuntimeWarning, match="1 unreadable image of"):  # on stderr as "fastfid: warning: ..."
        assert main(args + ["--skip-bad"]) == 0
    assert "1 unreadable image skipped" in capsys.readouterr().out
    assert main(["fid", str(tmp_path / "nowhere"), str(root / "real")] + _image_flags(root)) == 1
    assert "nowhere does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("error", [ValueError("v"), TypeError("t"), RuntimeError("r"), OSError("o"), ImportError("i"),
                                   EOFError("e"), MemoryError("m"), KeyError("k"), KeyboardInterrupt("stopped")],
                         ids=lambda error: type(error).__name__)
def test_fastfid_debug_prints_a_traceback_for_every_exception_class(monkeypatch, capsys, tmp_path, error):
    import fastfid.cli

    def failing(args):
        raise error

    monkeypatch.setattr(fastfid.cli, "_merge", failing)
    argv = ["merge", str(tmp_path / "a.npz"), "-o", str(tmp_path / "out.npz")]
    monkeypatch.delenv("FASTFID_DEBUG", raising=False)
    code = main(argv)
    quiet = capsys.readouterr().err
    assert code in (1, 130) and "Traceback" not in quiet and len(quiet.strip().splitlines()) == 1
    monkeypatch.setenv("FASTFID_DEBUG", "1")
    assert main(argv) == code
    loud = capsys.readouterr().err
    assert "Traceback (most recent call last)" in loud and "in failing" in loud
    assert loud.strip().splitlines()[-1] == quiet.strip()  # the same one line closes it


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's parent-death signal is Linux's")
def test_loader_workers_die_with_a_job_killed_by_sigkill(image_job, tmp_path):
    import signal
    import subprocess
    import time

    from PIL import Image

    root, many = image_job, tmp_path / "many"
    many.mkdir()
    for i in range(400):  # enough batches that the job is still running when it is killed
        Image.fromarray(np.full((24, 30, 3), i % 256, np.uint8)).save(many / f"{i:03d}.png")
    job = subprocess.Popen([sys.executable, "-m", "fastfid", "stats", str(many), "-o", str(tmp_path / "s.npz"),
                            "--batch-size", "2", *_image_flags(root)[:-3], "--num-workers", "2", "--quiet"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(workers := _children(job.pid)) < 2 and time.monotonic() < deadline and job.poll() is None:
            time.sleep(0.05)
        assert len(workers) >= 2, "the job's loader workers never started"
        job.send_signal(signal.SIGKILL)
        job.wait()
        time.sleep(0.5)
        assert not [pid for pid in workers if _alive(pid)], "loader workers outlived their job"
    finally:
        job.kill()
        job.wait()


def test_submit_to_a_server_that_does_not_answer_says_so_at_each_retry(tmp_path, rng):
    from support.service import free_port

    path = tmp_path / "gen.npz"
    fastfid.FeatureStats.from_features(rng.standard_normal((30, 4))).save(path)
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    done = subprocess.run([sys.executable, "-m", "fastfid", "submit", str(path), "--url", url, "--token", "t",
                           "--model", "m", "--checkpoint", "1", "--reference", "r", "--retries", "2"],
                          capture_output=True, text=True, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 3, done.stderr
    assert lines[0].startswith(f"fastfid: cannot reach {url} (") and lines[0].endswith("(1 of 2 retries)")
    assert "trying again in 1 s (2 of 2 retries)" in lines[1]
    assert lines[2].startswith(f"fastfid: error: cannot reach the fastfid service at {url} after 3 tries")
