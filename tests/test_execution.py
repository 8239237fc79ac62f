"""How the feature network runs (fastfid.extraction.execution): a mode is used only after its
features of a real batch matched eager's within 1e-6, the fastest verified mode is kept, a job too
small to repay a trial tries nothing, and wrong values from a mode are caught, not used."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastfid  # noqa: E402
from fastfid.extraction import FeatureExtractor  # noqa: E402
from fastfid.extraction import execution as execution_module  # noqa: E402
from fastfid.extraction.execution import TOLERANCE, Execution  # noqa: E402


class SmallNet(torch.nn.Module):
    """Convolutions, a batch norm and a pool: what channels-last and freezing rewrite."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.layers = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, stride=2), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, stride=2), torch.nn.ReLU())
        self.requires_grad_(False)

    def forward(self, x):
        return self.layers(x).mean(dim=(2, 3))


def eager(network, images):
    with torch.no_grad():
        return network(images)


def relative(a, b) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.fixture
def batches():
    generator = torch.Generator().manual_seed(1)
    return [torch.rand(8, 3, 32, 32, generator=generator) for _ in range(12)]


def run(extractor, batches):
    return [extractor(batch)[0] for batch in batches]


def corrupting(monkeypatch, mode: str, scale: float = 1e-5):
    """The fault hook: ``mode``'s runner returns features off by ``scale`` relative (a wrong value,
    not an error), as a miscompiled graph would."""
    original = execution_module._Runner.__call__

    def call(self, images, logits):
        features, class_logits = original(self, images, logits)
        return (features * (1 + scale) if self.mode == mode else features), class_logits

    monkeypatch.setattr(execution_module._Runner, "__call__", call)


def test_without_a_plan_the_network_runs_eager(batches, monkeypatch):
    monkeypatch.setattr(Execution, "_try", lambda *args: pytest.fail("a mode was tried without a plan"))
    extractor = FeatureExtractor(SmallNet(), device="cpu", execution="auto")
    assert extractor.execution.chosen == "eager"
    extractor(batches[0])
    assert extractor.execution.trials == {} and extractor.execution.chosen == "eager"


def test_a_job_too_small_to_repay_a_trial_tries_nothing(batches):
    extractor = FeatureExtractor(SmallNet(), device="cpu", execution="auto")
    extractor.plan(images=24, batch_size=8)
    outputs = run(extractor, batches[:3])
    assert extractor.execution.chosen == "eager"
    assert all(trial.note.startswith("not tried") for trial in extractor.execution.trials.values())
    for batch, output in zip(batches, outputs):
        assert torch.equal(output, eager(extractor.model, batch))  # eager itself: the same bits


def test_auto_keeps_the_fastest_verified_mode_at_eager_numbers(batches):
    network = SmallNet()
    extractor = FeatureExtractor(network, device="cpu", execution="auto")
    extractor.plan(images=8 * 400, batch_size=8)  # enough ahead for channels-last and frozen, not a compile
    outputs = run(extractor, batches)
    execution = extractor.execution
    assert execution.chosen in ("eager", "channels-last", "frozen"), execution.report()
    timed = {mode: trial.seconds for mode, trial in execution.trials.items() if trial.seconds is not None}
    assert set(timed) == {"eager", "channels-last", "frozen"}, execution.report()
    assert timed[execution.chosen] == min(timed.values())
    assert execution.trials["compiled"].note.startswith("not tried")
    for mode in ("channels-last", "frozen"):
        assert 0 <= execution.trials[mode].error <= TOLERANCE
    # Every batch, from the trials and after, is eager's within the tolerance the modes were held to.
    for batch, output in zip(batches, outputs):
        assert relative(output, eager(network, batch)) <= TOLERANCE


@pytest.mark.parametrize("mode", ["channels-last", "frozen"])
def test_a_mode_giving_wrong_values_is_never_used(batches, monkeypatch, mode):
    corrupting(monkeypatch, mode)
    network = SmallNet()
    extractor = FeatureExtractor(network, device="cpu", execution="auto")
    extractor.plan(images=8 * 400, batch_size=8)
    outputs = run(extractor, batches)
    trial = extractor.execution.trials[mode]
    assert "above 1e-06" in trial.note and trial.error == pytest.approx(1e-5, rel=1e-2)
    assert extractor.execution.chosen != mode
    for batch, output in zip(batches, outputs):
        assert relative(output, eager(network, batch)) <= TOLERANCE  # the corruption (1e-5) reached no batch


def test_a_forced_mode_that_fails_its_check_warns_and_runs_eager(batches, monkeypatch):
    corrupting(monkeypatch, "frozen")
    monkeypatch.setenv("FASTFID_EXECUTION", "frozen")
    network = SmallNet()
    extractor = FeatureExtractor(network, device="cpu")
    with pytest.warns(RuntimeWarning, match=r"execution 'frozen' was not used on cpu: features 1e-05 relative"):
        outputs = run(extractor, batches[:3])
    assert extractor.execution.chosen == "eager"
    for batch, output in zip(batches, outputs):
        assert torch.equal(output, eager(network, batch))


def test_a_mode_that_cannot_be_built_is_skipped_with_the_reason(batches, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no tracing here\nsecond line")

    monkeypatch.setattr(torch.jit, "trace", broken)
    extractor = FeatureExtractor(SmallNet(), device="cpu", execution="frozen")
    with pytest.warns(RuntimeWarning, match="failed to build: RuntimeError: no tracing here; the network runs eager"):
        extractor(batches[0])
    assert extractor.execution.chosen == "eager"


def test_a_mode_failing_after_its_trial_hands_the_job_to_eager(batches, monkeypatch):
    network = SmallNet()
    extractor = FeatureExtractor(network, device="cpu", execution="frozen")
    run(extractor, batches[:2])
    graph = extractor.execution._graph
    monkeypatch.setattr(graph, "graph", lambda images: (_ for _ in ()).throw(RuntimeError("lost the device")))
    with pytest.warns(RuntimeWarning, match=r"execution frozen failed on cpu \(RuntimeError: lost the device\); "
                                            "the network runs eager from now on"):
        features = extractor(batches[2])[0]
    assert torch.equal(features, eager(network, batches[2])) and extractor.execution.chosen == "eager"
    assert torch.equal(extractor(batches[3])[0], eager(network, batches[3]))


def test_a_graph_serves_only_its_shape(batches, monkeypatch):
    network = SmallNet()
    extractor = FeatureExtractor(network, device="cpu", execution="frozen")
    run(extractor, batches[:2])
    assert extractor.execution.chosen == "frozen"
    calls = []
    graph = extractor.execution._graph
    monkeypatch.setattr(graph, "graph", lambda images, inner=graph.graph: calls.append(images.shape) or inner(images))
    extractor(batches[2])
    shorter = batches[3][:3]  # a job's last batch
    assert relative(extractor(shorter)[0], eager(network, shorter)) <= TOLERANCE
    assert calls == [batches[2].shape]


def test_compiled_matches_eager(batches):
    pytest.importorskip("torch._inductor")
    network = SmallNet()
    extractor = FeatureExtractor(network, device="cpu", execution="compiled")
    outputs = run(extractor, batches[:2])
    assert extractor.execution.chosen == "compiled", extractor.execution.report()
    for batch, output in zip(batches, outputs):
        assert relative(output, eager(network, batch)) <= TOLERANCE


def test_an_unknown_mode_is_refused(monkeypatch):
    with pytest.raises(ValueError, match=r"execution must be one of .*'fast'"):
        FeatureExtractor(SmallNet(), device="cpu", execution="fast")
    monkeypatch.setenv("FASTFID_EXECUTION", "jit")
    with pytest.raises(ValueError, match="FASTFID_EXECUTION"):
        FeatureExtractor(SmallNet(), device="cpu")


def test_cuda_runs_without_tf32_unless_asked():
    # torch lets cuDNN convolutions use TF32 by default (1e-3 off float32): fastfid's network calls don't.
    device = torch.device("cuda")
    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = True
    try:
        with Execution(SmallNet(), device)._numerics():
            assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
            assert torch.backends.cudnn.enabled
        with Execution(SmallNet(), device, tf32=True)._numerics():
            assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32  # the caller's setting is back
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def test_the_fid_inception_frozen_gives_eager_statistics_and_scores(tmp_path, monkeypatch):
    """The job's path: a folder through the FID Inception, frozen (its features, and its logits for
    the Inception Score), against the same jobs run eager."""
    from PIL import Image

    from support.peers import calibrated_state_dict

    weights = tmp_path / "w.pth"
    torch.save(calibrated_state_dict(), weights)
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    options = dict(weights=weights, device="cpu", batch_size=4, num_workers=0, progress=False)
    results = {}
    for mode in ("eager", "frozen"):
        monkeypatch.setenv("FASTFID_EXECUTION", mode)
        results[mode] = (fastfid.compute_stats(folder, **options),
                         fastfid.inception_score(folder, splits=2, **options))
    (eager_stats, eager_score), (frozen_stats, frozen_score) = results["eager"], results["frozen"]
    # Features within 1e-6 relative move the mean by as much, the covariance by about twice that.
    scale = np.abs(eager_stats.mean).max()
    np.testing.assert_allclose(frozen_stats.mean, eager_stats.mean, rtol=0, atol=1e-6 * scale)
    np.testing.assert_allclose(frozen_stats.cov, eager_stats.cov, rtol=0, atol=4e-6 * np.abs(eager_stats.cov).max())
    # Logits of a few units within 1e-6 relative: softmax probabilities and the score within ~1e-5.
    assert frozen_score.mean == pytest.approx(eager_score.mean, rel=1e-5) and eager_score.mean > 1.0001
