"""fastfid.loss.SpaceFrechetLoss: FD from images through the networks of named spaces, with the
gradient checked by finite differences in float64."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
for _library in ("timm", "open_clip", "safetensors"):
    pytest.importorskip(_library, reason=f"{_library} is not installed (pip install 'fastfid[spaces]' and the test extras)")

import fastfid  # noqa: E402
import support.spaces as support  # noqa: E402
from fastfid.loss import FrechetLoss, SpaceFrechetLoss  # noqa: E402
from fastfid.models import spaces as registry  # noqa: E402

NAMES = ["dinov2-vit-l14", "clip-vit-l-14"]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("space_loss")
    for name in ("dinov2", "clip"):
        (root / name).mkdir()
    dinov2, clip = support.dinov2_case(root / "dinov2"), support.clip_case(root / "clip")
    return {"dinov2-vit-l14": dinov2, "clip-vit-l-14": clip}


@pytest.fixture
def loss_setup(made, monkeypatch):
    for name, case in made.items():
        monkeypatch.setitem(registry.SPACES, name, case.space)
    weights = {name: str(case.weights) for name, case in made.items()}
    generator = torch.Generator().manual_seed(0)
    real = torch.rand(80, 3, 40, 48, generator=generator)
    reference = fastfid.compute_stats(real, model=NAMES, weights=weights, device="cpu", progress=False, batch_size=40)
    return reference, weights, generator


def test_the_loss_is_frechet_loss_on_the_networks_features_and_its_gradient_is_right(loss_setup):
    reference, weights, generator = loss_setup
    loss = SpaceFrechetLoss(reference, population=200, network_weights=weights)
    population = torch.rand(90, 3, 40, 48, generator=generator)  # more than d = 64 features per space
    loss.fill(population)
    loss.eval()  # the population stays as it is between the calls below
    images = torch.rand(6, 3, 40, 48, generator=generator)
    value = loss(images)
    # FrechetLoss on the same features: the images' loss is that loss, through the networks
    plain = FrechetLoss([reference[name] for name in NAMES], population=200).eval()
    plain.fill(*loss.features(population))
    assert float(plain(*[f.detach() for f in loss.features(images)])) == pytest.approx(float(value), rel=1e-12)
    assert set(loss.last_distances) == set(NAMES) and all(v > 0 for v in loss.last_distances.values())
    assert float(value) == pytest.approx(sum(loss.last_distances.values()), rel=1e-12)

    # float64 networks: a central difference along a random direction against autograd. Pixels in
    # [0.25, 0.75] keep the bicubic's overshoot off its clamp to [0, 1], where the loss has kinks (with
    # [0, 1] pixels the difference converges only as O(step)).
    loss.double()
    x = (0.25 + 0.5 * images).double().requires_grad_(True)
    loss(x).backward()
    direction = torch.randn(x.shape, generator=generator, dtype=torch.float64)
    step = 1e-5
    with torch.no_grad():
        numeric = (loss(x + step * direction) - loss(x - step * direction)) / (2 * step)
    analytic = (x.grad * direction).sum()
    assert float(analytic.abs()) > 1e-6  # the gradient reaches the pixels
    # O(step²) truncation: 1e-8 … 6e-7 relative measured (shrinking 100× per 10× smaller step), so
    # the gradient is exact to that; a missing term (the resize, a network's norm) would be O(1)
    assert float(analytic) == pytest.approx(float(numeric), rel=1e-5)


def test_checkpoints_hold_the_populations_not_the_networks(loss_setup):
    reference, weights, generator = loss_setup
    loss = SpaceFrechetLoss(reference, population=200, network_weights=weights)
    loss.fill(torch.rand(90, 3, 40, 48, generator=generator))
    state = loss.state_dict()
    assert not any(key.startswith("networks.") for key in state)
    again = SpaceFrechetLoss(reference, population=200, network_weights=weights)
    again.load_state_dict(state)
    images = torch.rand(4, 3, 40, 48, generator=generator)
    loss.eval(), again.eval()
    assert float(again(images)) == float(loss(images))


def test_bad_arguments_are_named(loss_setup):
    reference, weights, _ = loss_setup
    with pytest.raises(ValueError, match="the reference holds no statistics of siglip-so400m"):
        SpaceFrechetLoss(reference, spaces=["siglip-so400m"], network_weights=weights)
    with pytest.raises(ValueError, match="runs through PIL on the host"):
        SpaceFrechetLoss(fastfid.SpaceStats({"inception": reference["dinov2-vit-l14"]}), resize="clean")
    loss = SpaceFrechetLoss(reference, population=200, network_weights=weights)
    with pytest.raises(ValueError, match=r"images must be a float tensor \(N, 3, H, W\)"):
        loss(torch.rand(2, 40, 48, 3))
