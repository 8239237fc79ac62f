"""torch.distributed (gloo, 2 and 3 processes on this CPU): the exact merge across ranks, the
torchmetrics-style class under DDP, and ``torchrun -m fastfid fid`` against one process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

import fastfid  # noqa: E402
from support.features import relu_features  # noqa: E402


def torchrun(world, *command, cwd=None, timeout=240):
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={world}", *command], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)


@pytest.mark.parametrize("world, sizes", [(2, [130, 71]), (3, [90, 111, 0])])
def test_all_reduce_is_the_exact_merge_of_every_rank(rng, tmp_path, world, sizes):
    features = relu_features(rng, sum(sizes), 12, offset=1000.0)  # a large mean: raw sums would lose digits
    fake = relu_features(rng, 150, 12, offset=1000.3)
    np.savez(tmp_path / "inputs.npz", features=features, fake=fake, bounds=np.cumsum([0] + sizes))
    run = torchrun(world, str((Path(__file__).parent / "support" / "distributed_stats_worker.py")), str(tmp_path))
    assert run.returncode == 0, run.stderr[-3000:]
    whole = fastfid.FeatureStats.from_features(features)
    torch.manual_seed(0)
    network = torch.nn.Linear(12, 5, dtype=torch.float64)
    with torch.no_grad():
        expected_fid = fastfid.fid(fastfid.FeatureStats.from_features(network(torch.from_numpy(features))),
                                   fastfid.FeatureStats.from_features(network(torch.from_numpy(fake))))
    for rank in range(world):
        result = np.load(tmp_path / f"rank_{rank}.npz")
        assert int(result["count"]) == sum(sizes)
        # The bound: one process's statistics within 1e-10 relative (observed ~1e-15).
        np.testing.assert_allclose(result["mean"], whole.mean, rtol=1e-10)
        np.testing.assert_allclose(result["cov"], whole.cov, rtol=0, atol=1e-10 * np.abs(whole.cov).max())
        assert int(result["device_count"]) == sum(sizes)
        np.testing.assert_allclose(result["device_cov"], whole.cov, rtol=0, atol=1e-10 * np.abs(whole.cov).max())
        assert "different dims" in str(result["dims_error"])
        expected_error = "ValueError: cannot all-reduce" if rank == 1 else "RuntimeError: another rank"
        assert str(result["summary_error"]).startswith(expected_error)
        assert float(result["fid"]) == pytest.approx(expected_fid, rel=1e-10)


@pytest.fixture(scope="module")
def image_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("folders")
    rng = np.random.default_rng(3)
    for name, high, count in (("generated", 200, 11), ("real", 255, 10)):
        (root / name).mkdir()
        for i in range(count):
            Image.fromarray(rng.integers(0, high, (30, 26, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    torch.manual_seed(5)
    from support.peers import calibrated_state_dict

    torch.save(calibrated_state_dict(), root / "weights.pth")
    return root


def _fid_command(*extra):
    return ["-m", "fastfid", "fid", "generated", "real", "--weights", "weights.pth", "--dims", "64", "--quiet",
            "--num-workers", "0", "--batch-size", "2", "--json", *extra]


def test_torchrun_fid_equals_one_process(image_folders):
    run = torchrun(3, *_fid_command("--isc", "--splits", "2"), cwd=image_folders)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1  # rank 0 alone prints
    shared = json.loads(lines[0])
    # The reference runs with one thread, as torchrun's ranks do: float32 convolutions then give every
    # image the same features in both runs, and only the merge differs.
    single = subprocess.run([sys.executable, *_fid_command("--isc", "--splits", "2")], cwd=image_folders,
                            capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), check=True)
    alone = json.loads(single.stdout)
    assert shared["counts"] == alone["counts"] == [11, 10]
    assert shared["fid"] == pytest.approx(alone["fid"], rel=1e-10)
    # The class logits come from a float32 matmul whose blocking follows the batch's size, which
    # sharding changes: their last bits (1e-7 relative) differ, and the score by ~1e-9.
    assert shared["inception_score"]["mean"] == pytest.approx(alone["inception_score"]["mean"], rel=1e-6)
    assert shared["resize"] == "pytorch-fid"


def test_a_failing_rank_stops_every_rank(image_folders, tmp_path):
    broken = tmp_path / "generated"
    broken.mkdir()
    for path in sorted((image_folders / "generated").iterdir())[:6]:
        (broken / path.name).write_bytes(path.read_bytes())
    (broken / "5.png").write_bytes(b"\x89PNG broken")  # in the last rank's share
    for name in ("real", "weights.pth"):
        (tmp_path / name).symlink_to(image_folders / name)
    run = torchrun(2, *_fid_command(), cwd=tmp_path, timeout=120)  # a hang would time out
    assert run.returncode != 0
    assert "5.png" in run.stderr and "another rank failed" in run.stderr


def test_a_rank_whose_share_is_all_unreadable_adds_nothing_with_skip_bad(image_folders, tmp_path):
    # The generated folder's second half (rank 1's share) is unreadable: with --skip-bad that rank
    # contributes no samples and the job completes, as one process would; shut down cleanly.
    mixed = tmp_path / "generated"
    mixed.mkdir()
    for path in sorted((image_folders / "generated").iterdir())[:5]:
        (mixed / path.name).write_bytes(path.read_bytes())
    for i in range(5):
        (mixed / f"9{i}.png").write_bytes(b"\x89PNG broken")
    for name in ("real", "weights.pth"):
        (tmp_path / name).symlink_to(image_folders / name)
    run = torchrun(2, *_fid_command("--skip-bad"), cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    shared = json.loads([line for line in run.stdout.splitlines() if line.startswith("{")][0])
    single = subprocess.run([sys.executable, *_fid_command("--skip-bad")], cwd=tmp_path, capture_output=True,
                            text=True, env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore"), check=True)
    alone = json.loads(single.stdout)
    assert shared["counts"] == alone["counts"] == [5, 10] and shared["skipped"] == alone["skipped"]
    assert shared["fid"] == pytest.approx(alone["fid"], rel=1e-10)


def test_torchrun_several_spaces_equal_one_process(image_folders, tmp_path):
    pytest.importorskip("open_clip")
    import support.spaces as spaces_support

    for name in ("dinov2", "clip"):
        (tmp_path / name).mkdir()
    dinov2, clip = spaces_support.dinov2_case(tmp_path / "dinov2"), spaces_support.clip_case(tmp_path / "clip")
    worker = str((Path(__file__).parent / "support" / "distributed_spaces_worker.py"))
    arguments = [str(image_folders / "real"), "--spaces", "inception,dinov2-vit-l14,clip-vit-l-14", "--weights",
                 f"inception={image_folders / 'weights.pth'}", "--weights", f"dinov2-vit-l14={dinov2.weights}",
                 "--weights", f"clip-vit-l-14={clip.weights}", "--quiet", "--num-workers", "0", "--batch-size", "2"]
    run = torchrun(3, worker, "stats", *arguments, "-o", str(tmp_path / "shared.npz"), timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    single = subprocess.run([sys.executable, worker, "stats", *arguments, "-o", str(tmp_path / "alone.npz")],
                            capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert single.returncode == 0, single.stderr[-3000:]
    shared, alone = fastfid.load_spaces(tmp_path / "shared.npz"), fastfid.load_spaces(tmp_path / "alone.npz")
    assert list(shared) == list(alone) == ["inception", "dinov2-vit-l14", "clip-vit-l-14"]
    for name in shared:
        assert shared[name].count == alone[name].count == 10
        # one thread per rank and in the single run: the same features; only the merge differs
        np.testing.assert_allclose(shared[name].cov, alone[name].cov, rtol=1e-9, atol=1e-12)
