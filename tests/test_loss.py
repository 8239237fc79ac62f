"""fastfid.loss: the differentiable FD and FrechetLoss with its population queue."""

import contextlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import fastfid  # noqa: E402
from fastfid import _cuda, _device, loss  # noqa: E402
from fastfid.testing import emulated_cuda  # noqa: E402

KERNELS = _device.DeviceKernels(_cuda.emulated_backend(), 0)  # fastfid's kernels on the emulated driver
from support.features import relu_features  # noqa: E402


def moments(x):
    mean = x.mean(dim=0)
    centred = x - mean
    return mean, centred.T @ centred / (x.shape[0] - 1)


def naive_fd(mu1, sigma1, mu2, sigma2):
    """FD by autograd through torch.linalg.eigh (fine on well-conditioned inputs)."""
    w, v = torch.linalg.eigh(sigma1)
    root = (v * w.clamp_min(0).sqrt()) @ v.T
    inner = torch.linalg.eigvalsh(root @ sigma2 @ root)
    diff = mu1 - mu2
    return diff @ diff + sigma1.trace() + sigma2.trace() - 2 * inner.clamp_min(0).sqrt().sum()


@pytest.fixture
def features(rng):
    x = torch.from_numpy(relu_features(rng, 80, 7, offset=0.3))
    y = torch.from_numpy(relu_features(rng, 120, 7, offset=0.5))
    return x, y


def test_gradcheck_through_features(features):
    x, y = features
    mu_ref, sigma_ref = moments(y)
    x = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: loss.frechet_distance(*moments(z), mu_ref, sigma_ref), (x,))


def test_gradcheck_in_every_argument(features):
    x, y = features
    args = [t.clone().requires_grad_(True) for t in (*moments(x), *moments(y))]
    assert torch.autograd.gradcheck(loss.frechet_distance, args)


def test_gradients_agree_with_autograd_through_eigh(features):
    x, y = features
    ours = [t.clone().requires_grad_(True) for t in (*moments(x), *moments(y))]
    naive = [t.clone().requires_grad_(True) for t in (*moments(x), *moments(y))]
    value = loss.frechet_distance(*ours)
    expected = naive_fd(*naive)
    value.backward()
    expected.backward()
    # Both are float64 and exact up to rounding; eigh's backward divides by eigenvalue gaps, which
    # are ≥ 1e-3 of the largest here: 1e-8 relative leaves room for that amplification.
    assert value.item() == pytest.approx(expected.item(), rel=1e-12)
    for a, b in zip(ours, naive):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("kernels", [KERNELS, None], ids=["kernels", "torch_ops"])
def test_the_device_route_gives_the_same_maps(features, kernels):
    x, y = features
    s1, s2 = moments(x)[1], moments(y)[1]
    exact = loss._maps_on_cpu(s1, s2, True, True)
    by_newton_schulz = loss._maps_by_newton_schulz(s1, s2, kernels, True, True)
    # Newton–Schulz stops at a relative step of 1e-12; T = Σ₂ M^−½ adds the conditioning of M
    # (κ ≈ 1e3 here): 1e-8 relative to the largest entry.
    assert by_newton_schulz[0] == pytest.approx(exact[0], rel=1e-10)
    for a, b in zip(by_newton_schulz[1:], exact[1:]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-8 * b.abs().max().item())


def test_the_device_route_differentiates_like_the_exact_one(features):
    x, y = features
    grads = []
    for route in ("exact", KERNELS):
        args = [t.clone().requires_grad_(True) for t in (*moments(x), *moments(y))]
        loss._FrechetDistance.apply(route, *args).backward()
        grads.append([a.grad for a in args])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-8 * b.abs().max().item())


def test_float32_inputs(features):
    x, y = (t.to(torch.float32) for t in features)
    mu, sigma = (t.clone().requires_grad_(True) for t in moments(x))
    value = loss.frechet_distance(mu, sigma, *moments(y))
    value.backward()
    assert value.dtype == torch.float32 and sigma.grad.dtype == torch.float32
    reference = loss.frechet_distance(*(t.double() for t in (*moments(x), *moments(y))))
    assert value.item() == pytest.approx(reference.item(), rel=1e-5)  # float32 rounding of the inputs


def test_value_matches_fastfid_frechet_distance(features):
    x, y = features
    expected = fastfid.frechet_distance(*(t.numpy() for t in (*moments(x), *moments(y))))
    assert loss.frechet_distance(*moments(x), *moments(y)).item() == pytest.approx(expected, rel=1e-12)


def test_a_singular_covariance_cannot_have_a_gradient(rng):
    x = torch.from_numpy(relu_features(rng, 5, 7)).requires_grad_(True)  # 5 samples, dim 7
    y = torch.from_numpy(relu_features(rng, 50, 7))
    with pytest.raises(ValueError, match="singular"):
        loss.frechet_distance(*moments(x), *moments(y))
    with torch.no_grad():  # the value alone is fine
        loss.frechet_distance(*moments(x), *moments(y))


@pytest.mark.parametrize("bad,match", [
    (lambda a: a[:-1], "shape"),
    (lambda a: a.to(torch.int64), "floating point"),
    (lambda a: torch.full_like(a, float("nan")), "NaN"),
])
def test_bad_inputs(features, bad, match):
    x, y = features
    mu, sigma = moments(x)
    with pytest.raises((ValueError, TypeError), match=match):
        loss.frechet_distance(mu, bad(sigma), *moments(y))


# --- the population queue -------------------------------------------------------------------------
def test_queue_statistics_equal_a_recomputation(rng):
    queue = loss._PopulationQueue(capacity=500, refresh_every=10**9)  # no refresh: pure add/evict
    for step in range(60):
        size = [37, 120, 3, 700][step % 4]  # wraps, evicts, and one batch larger than the queue
        queue.add(torch.from_numpy(relu_features(rng, size, 9, offset=100.0)).to(torch.float32))
        contents = queue.contents()
        expected = loss._Moments.of(contents)
        assert queue.count == min(500, queue.count) and contents.shape[0] == queue.count
        # 60 evictions, each exact up to float64 rounding of values ~1e2 with mean 1e2 removed:
        # 1e-10 relative to the largest entry is far above that and far below any real error.
        torch.testing.assert_close(queue.moments.mean, expected.mean, rtol=0, atol=1e-10 * 100)
        scale = expected.comoment.abs().max().item()
        torch.testing.assert_close(queue.moments.comoment, expected.comoment, rtol=0, atol=1e-10 * scale)


def test_queue_refresh_recomputes(rng):
    queue = loss._PopulationQueue(capacity=50, refresh_every=3)
    for _ in range(3):
        queue.add(torch.from_numpy(relu_features(rng, 30, 4)))
    expected = loss._Moments.of(queue.contents())
    assert torch.equal(queue.moments.comoment, expected.comoment)  # bitwise: recomputed


# --- FrechetLoss -----------------------------------------------------------------------------------
@pytest.fixture
def reference(rng):
    y = relu_features(rng, 3000, 6, offset=0.4)
    return fastfid.FeatureStats.from_features(y)


@pytest.mark.parametrize("emulated", [False, True], ids=["cpu", "emulated_cuda"])
def test_loss_is_the_fd_of_the_population(rng, reference, emulated):
    # Under emulated_cuda() the loss takes the CUDA route: the distance kernels' Newton–Schulz and
    # its M^−½ for the gradient, against the same closed form and tolerances (Newton–Schulz stops at
    # a relative step of 1e-12, far below them).
    criterion = loss.FrechetLoss(reference, population=400)
    older = torch.from_numpy(relu_features(rng, 500, 6))
    criterion.fill(older)  # keeps the newest 400
    batch = torch.from_numpy(relu_features(rng, 64, 6)).requires_grad_(True)
    with emulated_cuda() if emulated else contextlib.nullcontext():
        value = criterion(batch)
        if emulated:
            assert _cuda.emulator.counters()["launches"] > 0
    population = torch.cat([older[-400:][64:], batch.detach()])  # the 64 oldest make room
    mu, sigma = moments(population)
    expected = fastfid.frechet_distance(mu.numpy(), sigma.numpy(), reference.mean, reference.cov)
    assert value.item() == pytest.approx(expected, rel=1e-10)
    # ∂FD/∂zᵢ = (2/N)(μ − μ_ref) + (2/(N − 1))(I − T)(zᵢ − μ), the closed form of the notes.
    value.backward()
    _, t, _ = loss._maps_on_cpu(sigma, torch.from_numpy(reference.cov), True, False)
    n = population.shape[0]
    expected_grad = (2 / n) * (mu - torch.from_numpy(reference.mean)) + (2 / (n - 1)) * (batch.detach() - mu) @ (
        torch.eye(6, dtype=torch.float64) - t)
    torch.testing.assert_close(batch.grad, expected_grad, rtol=1e-8, atol=1e-12)
    assert criterion._queues[0].count == 400  # the batch went in


def test_eval_mode_leaves_the_queue_alone(rng, reference):
    criterion = loss.FrechetLoss(reference, population=100).eval()
    criterion.fill(torch.from_numpy(relu_features(rng, 100, 6)))
    before = criterion._queues[0].contents().clone()
    criterion(torch.from_numpy(relu_features(rng, 10, 6)))
    assert torch.equal(criterion._queues[0].contents(), before)


def test_normalized_loss_and_several_representations(rng, reference):
    other = fastfid.FeatureStats.from_features(relu_features(rng, 2000, 4, offset=0.1))
    criterion = loss.FrechetLoss([reference, other], population=200, weights=[1.0, 0.5], normalize=True)
    criterion.fill(torch.from_numpy(relu_features(rng, 200, 6)), torch.from_numpy(relu_features(rng, 200, 4)))
    a = torch.from_numpy(relu_features(rng, 20, 6)).requires_grad_(True)
    b = torch.from_numpy(relu_features(rng, 20, 4)).requires_grad_(True)
    value = criterion(a, b)
    assert value.item() == pytest.approx(1.5)  # each normalised term is 1
    assert len(criterion.last_distances) == 2 and all(fd > 0 for fd in criterion.last_distances)
    value.backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0


def test_loss_errors(rng, reference):
    criterion = loss.FrechetLoss(reference, population=100)
    with pytest.raises(ValueError, match="call fill"):
        criterion(torch.from_numpy(relu_features(rng, 5, 6)))  # 5 features of dim 6: singular
    with pytest.raises(ValueError, match="dim 3"):
        criterion(torch.zeros(10, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="expected 1 feature batch"):
        criterion(torch.zeros(10, 6), torch.zeros(10, 6))
    with pytest.raises(ValueError, match="exceeds the population"):
        criterion(torch.from_numpy(relu_features(rng, 101, 6)))
    with pytest.raises(ValueError, match="weights"):
        loss.FrechetLoss(reference, weights=[1, 2])
    with pytest.raises(ValueError, match="refresh_every"):
        loss.FrechetLoss(reference, refresh_every=0)


def test_state_dict_carries_the_populations(rng, reference, tmp_path):
    criterion = loss.FrechetLoss(reference, population=300)
    criterion.fill(torch.from_numpy(relu_features(rng, 450, 6)))  # wrapped: head mid-buffer
    criterion(torch.from_numpy(relu_features(rng, 40, 6)))
    torch.save(criterion.state_dict(), tmp_path / "loss.pt")
    resumed = loss.FrechetLoss(reference, population=300)
    resumed.load_state_dict(torch.load(tmp_path / "loss.pt"))
    batch = torch.from_numpy(relu_features(rng, 50, 6))
    assert resumed(batch).item() == criterion(batch).item()
    torch.testing.assert_close(resumed._queues[0].contents(), criterion._queues[0].contents(), rtol=0, atol=0)
    torch.testing.assert_close(resumed._queues[0].moments.comoment, criterion._queues[0].moments.comoment)
    fresh = loss.FrechetLoss(reference, population=300)
    fresh.load_state_dict(loss.FrechetLoss(reference, population=300).state_dict())  # an empty one round-trips too
    assert fresh._queues[0].features is None


def test_reference_as_a_pair_or_a_file(rng, reference, tmp_path):
    reference.save(tmp_path / "ref.npz")
    batch = torch.from_numpy(relu_features(rng, 50, 6))
    values = [loss.FrechetLoss(ref, population=50).eval()(batch).item()
              for ref in (reference, (reference.mean, reference.cov), str(tmp_path / "ref.npz"))]
    assert values[0] == pytest.approx(values[1], rel=1e-12) and values[0] == pytest.approx(values[2], rel=1e-12)


def test_under_torch_distributed_the_population_holds_every_rank(rng, reference, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    world, dim = 2, 6
    older = [relu_features(rng, 150, dim) for _ in range(world)]
    batches = [relu_features(rng, 40, dim) for _ in range(world)]
    np.savez(tmp_path / "inputs.npz", population=400, **{f"older_{r}": older[r] for r in range(world)},
             **{f"batch_{r}": batches[r] for r in range(world)})
    reference.save(tmp_path / "reference.npz")
    worker = (Path(__file__).parent / "support" / "distributed_loss_worker.py")
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}",
                    str(worker), str(tmp_path)], check=True, capture_output=True, timeout=120)

    # One process holding everything, ranks in order, gives the same loss and gradients.
    criterion = loss.FrechetLoss(reference, population=400)
    criterion.fill(torch.from_numpy(np.concatenate(older)))
    batch = torch.from_numpy(np.concatenate(batches)).requires_grad_(True)
    value = criterion(batch)
    value.backward()
    for r in range(world):
        result = np.load(tmp_path / f"rank_{r}.npz")
        # The same float64 operations on the same data in the same order, up to gloo's copies.
        assert float(result["value"]) == pytest.approx(value.item(), rel=1e-12)
        np.testing.assert_allclose(result["grad"], batch.grad[40 * r:40 * (r + 1)].numpy(), rtol=1e-10, atol=1e-14)
        np.testing.assert_array_equal(result["queue"], criterion._queues[0].contents().numpy())


def test_the_training_example_lowers_the_fd():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "examples" / "train_frechet_loss.py"
    spec = importlib.util.spec_from_file_location("train_frechet_loss", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    before, after = example.main(steps=300, log_every=10**9)  # half the example's run
    assert after < 0.6 * before  # measured: 36.4 -> about 15 at 300 steps, 1.3 at 600
