"""The loop that never waits for the host: the log window summed on the device, divergence found at
log rows and checkpoints, the batch stream in the checkpoint, the threads and compile settings;
on a CUDA machine, the same checks on the GPU (skipped elsewhere)."""

import numpy as np
import pytest
import torch

from constrained_vae.core.objectives import Optimization, StepTerms
from constrained_vae.errors import ConfigError, TrainingDiverged
from constrained_vae.run import folder
from constrained_vae.run.device import COMPILE_MIN_STEPS, torch_threads, use_compile
from constrained_vae.run.log_window import LogWindow
from constrained_vae.run.loop import resume_config, train
from constrained_vae.run.migrations import upgrade_window
from constrained_vae.run.settings import RunConfig
from constrained_vae.run.trainee import Trainee

CPU = torch.device("cpu")
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def tiny(**overrides) -> RunConfig:
    settings = dict(
        epsilon=2.0,
        dataset="linear-gaussian",
        spectrum=[9.0, 3.0, 1.0],
        num_samples=512,
        steps=20,
        batch_size=32,
        log_every=5,
        checkpoint_every=10,
    )
    return RunConfig(**(settings | overrides))


def conv(**overrides) -> RunConfig:
    settings = dict(dataset="dsprites", epsilon=5.0, batch_size=8, latent_dim=4, steps=12, log_every=3)
    return RunConfig(**(settings | {"checkpoint_every": 10} | overrides))


def numbers(run_dir):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in folder.read_metrics(run_dir)]


def terms(nll: float, kl: float, loss: float, multiplier: float, budget: float | None = 20.0) -> StepTerms:
    t = torch.tensor
    return StepTerms(t(nll), t(kl), t(loss), t(multiplier), None if budget is None else t(budget))


# ---------------------------------------------------------------------------- the log window


def test_the_window_keeps_rows_on_the_device_and_reads_them_once():
    window = LogWindow.empty(CPU, torch.float32, capacity=2)
    for k in (1.0, 2.0, 3.0):  # one more than its capacity: it grows
        window.add(terms(k, 2 * k, 3.0, 0.5 * k))
    reading = window.read(terms(3.0, 6.0, 3.0, 1.5))
    assert (reading.nll, reading.kl, reading.loss) == (2.0, 4.0, 3.0)
    assert (reading.multiplier, reading.budget, reading.finite, reading.steps) == (1.5, 20.0, True, 3)
    assert reading.row(30, 1.23456) == dict(
        step=30, nll=2.0, kl=4.0, loss=3.0, multiplier=1.5, epsilon=20.0, seconds=1.235
    )
    window.add(terms(1.0, 1.0, 1.0, float("inf")))
    window.add(terms(1.0, 1.0, 1.0, 1.0))
    reading = window.read(terms(1.0, 1.0, 1.0, 1.0, budget=None))
    assert not reading.finite and reading.finite_steps == 3 and reading.budget is None
    window.reset()
    assert window.steps == 0


def test_the_window_sums_in_step_order_as_python_floats_did():
    values = torch.rand(37, generator=torch.Generator().manual_seed(0)) * 100
    window = LogWindow.empty(CPU, torch.float32, capacity=8)
    total = 0.0
    for v in values:
        window.add(terms(float(v), 0.0, 0.0, 0.0))
        total += float(v)
    assert window.read(terms(0.0, 0.0, 0.0, 0.0)).nll == total / 37


def test_a_window_resumes_from_its_checkpoint_and_from_older_ones():
    window = LogWindow.empty(CPU, torch.float32, capacity=5)
    for k in (1.0, 2.0):
        window.add(terms(k, k, k, k))
    again = LogWindow.from_state(window.state_dict(), CPU, torch.float32, capacity=1)
    again.add(terms(3.0, 3.0, 3.0, 3.0))
    assert again.read(terms(3.0, 3.0, 3.0, 3.0)).nll == 2.0 and again.steps == 3
    saved = upgrade_window({"nll": 1.0, "kl": 2.0, "loss": 3.0, "count": 2})
    old = LogWindow.from_state(saved, CPU, torch.float32, capacity=5)
    old.add(terms(5.0, 4.0, 3.0, 0.7))
    reading = old.read(terms(5.0, 4.0, 3.0, 0.7))
    assert (reading.nll, reading.kl, reading.loss, reading.steps, reading.finite) == (2.0, 2.0, 2.0, 3, True)


class NoHostRead(torch.Tensor):
    """A step's term that fails if its value is read to the host; every operation on it gives a plain tensor."""

    READS = (
        torch.Tensor.item,
        torch.Tensor.tolist,
        torch.Tensor.__float__,
        torch.Tensor.__bool__,
        torch.Tensor.__int__,
        torch.Tensor.numpy,
        torch.Tensor.__format__,
        torch.Tensor.__repr__,
    )

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in cls.READS:
            raise AssertionError(f"a step's term was read to the host ({func.__name__})")
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **(kwargs or {}))


def test_steps_are_never_read_back_between_log_rows_and_checkpoints(tmp_path, monkeypatch):
    original_step, original_read = Optimization.step, LogWindow.read
    reads = []

    def guarded_step(self, x, noise=None):
        t = original_step(self, x, noise)
        return StepTerms(*(v.as_subclass(NoHostRead) for v in (t.nll, t.kl, t.loss, t.multiplier, t.budget)))

    def counted_read(self, last):
        reads.append(self.steps)
        return original_read(self, last)

    monkeypatch.setattr(Optimization, "step", guarded_step)
    monkeypatch.setattr(LogWindow, "read", counted_read)
    train(tiny(steps=23, log_every=5, checkpoint_every=10), tmp_path / "run", progress=False)
    assert reads == [5, 5, 5, 5, 3]  # rows at 5, 10 (and its checkpoint), 15, 20, and the end at 23
    assert [row["step"] for row in folder.read_metrics(tmp_path / "run")] == [5, 10, 15, 20, 23]


# ---------------------------------------------------------------------------- divergence at the boundaries


def blow_up_at(monkeypatch, step: int) -> None:
    """Make the model's parameters NaN just before the ``step``-th step of this process."""
    original = Optimization.step
    calls = {"n": 0}

    def step_that_blows_up(self, x, noise=None):
        calls["n"] += 1
        if calls["n"] == step:
            with torch.no_grad():
                for p in self.problem.model.parameters():
                    p.fill_(float("nan"))
        return original(self, x, noise)

    monkeypatch.setattr(Optimization, "step", step_that_blows_up)


def test_divergence_is_found_before_the_checkpoint_of_its_window(tmp_path, monkeypatch):
    blow_up_at(monkeypatch, 27)
    with pytest.raises(TrainingDiverged, match=r"at step 27, between steps 26 and 30 .*\(step 20\)"):
        train(tiny(steps=40, log_every=5, checkpoint_every=10), tmp_path / "run", progress=False)
    assert torch.load(tmp_path / "run" / folder.CHECKPOINT_FILE, weights_only=True)["step"] == 20
    assert [row["step"] for row in folder.read_metrics(tmp_path / "run")] == [5, 10, 15, 20, 25]


def test_a_checkpoint_between_log_rows_checks_the_steps_since_the_last_check(tmp_path, monkeypatch):
    blow_up_at(monkeypatch, 6)
    with pytest.raises(TrainingDiverged, match=r"at step 6, between steps 5 and 8 .*\(step 4\)"):
        train(tiny(steps=20, log_every=10, checkpoint_every=4), tmp_path / "run", progress=False)
    assert torch.load(tmp_path / "run" / folder.CHECKPOINT_FILE, weights_only=True)["step"] == 4


# ---------------------------------------------------------------------------- the batch stream


def test_the_batch_and_noise_streams_are_in_the_checkpoint_and_reseeded_when_the_device_kind_changes():
    def draws(trainee: Trainee) -> torch.Tensor:
        return torch.cat(
            [torch.cat([x.flatten(), noise.flatten()]) for x, noise in (trainee.next_batch() for _ in range(3))]
        )

    trainee = Trainee.build(conv().resolved())
    trainee.next_batch()
    state = trainee.state_dict()
    assert state["rng"]["batches_device"] == "cpu" and state["rng"]["noise_device"] == "cpu"
    expected = draws(trainee)
    restored = Trainee.build(conv().resolved())
    restored.load_state_dict(state)
    assert torch.equal(expected, draws(restored))
    state["rng"]["batches_device"] = state["rng"]["noise_device"] = "cuda"  # as if saved on a GPU
    streams = []
    for _ in range(2):  # a new stream, the same on every load
        moved = Trainee.build(conv().resolved())
        moved.load_state_dict(state)
        streams.append(draws(moved))
    assert torch.equal(streams[0], streams[1]) and not torch.equal(streams[0], expected)


def test_resume_of_a_packed_npz_run_continues_bit_for_bit(tmp_path):
    """The dsprites-npz path (packed bits unpacked per batch on the device) resumes exactly on CPU."""
    from constrained_vae.data.dsprites import DSprites

    dsprites = DSprites()
    indices = torch.randint(len(dsprites), (64,), generator=torch.Generator().manual_seed(0))
    factors = dsprites.factors_of(indices)
    values = dsprites.factor_values(factors)
    path = tmp_path / "small.npz"
    np.savez(
        path,
        imgs=dsprites.get(indices)[:, 0].numpy().astype(np.uint8),
        latents_values=np.concatenate([np.ones((64, 1)), values], axis=1),
        latents_classes=np.concatenate([np.zeros((64, 1), dtype=np.int64), factors], axis=1),
    )
    config = conv(dataset="dsprites-npz", data_path=str(path), batch_size=4, steps=4, log_every=1, checkpoint_every=2)
    train(config, tmp_path / "straight", progress=False)
    train(RunConfig(**(vars(config) | {"steps": 3})), tmp_path / "split", progress=False)
    train(resume_config(tmp_path / "split", {"steps": 4}), tmp_path / "split", resume=True, progress=False)
    assert numbers(tmp_path / "split") == numbers(tmp_path / "straight")


# ---------------------------------------------------------------------------- threads and compile


def test_threads_apply_while_training_and_are_restored(tmp_path, monkeypatch):
    seen = []
    original = Optimization.step

    def recording_step(self, x, noise=None):
        seen.append(torch.get_num_threads())
        return original(self, x, noise)

    monkeypatch.setattr(Optimization, "step", recording_step)
    before = torch.get_num_threads()
    with torch_threads(None):
        assert torch.get_num_threads() == before
    train(tiny(threads=1, steps=5), tmp_path / "run", progress=False)
    assert set(seen) == {1} and torch.get_num_threads() == before


def test_threads_and_compile_are_resumable_settings_outside_the_numerics(tmp_path):
    train(tiny(), tmp_path / "run", progress=False)
    config = resume_config(tmp_path / "run", {"threads": 1, "compile": False, "steps": 25})
    assert (config.threads, config.compile) == (1, False)
    assert "threads" not in tiny(threads=2).numerics() and "compile" not in tiny(compile=True).numerics()
    for bad in (dict(threads=0), dict(threads=1.5), dict(compile="yes")):
        with pytest.raises(ConfigError):
            tiny(**bad).validate()


def test_compile_is_on_by_default_only_for_long_cuda_runs():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not use_compile(tiny(steps=10**6), cpu)
    assert not use_compile(tiny(steps=COMPILE_MIN_STEPS - 1), cuda)
    assert use_compile(tiny(steps=COMPILE_MIN_STEPS), cuda)
    assert use_compile(tiny(compile=True), cpu)
    assert not use_compile(tiny(compile=False, steps=10**6), cuda)


@pytest.mark.slow
def test_a_compiled_cpu_run_matches_eager_and_resumes_bit_for_bit(tmp_path):
    train(tiny(), tmp_path / "eager", progress=False)
    train(tiny(compile=True), tmp_path / "compiled", progress=False)
    train(tiny(compile=True, steps=10), tmp_path / "split", progress=False)
    train(resume_config(tmp_path / "split", {"steps": 20}), tmp_path / "split", resume=True, progress=False)
    assert numbers(tmp_path / "split") == numbers(tmp_path / "compiled")
    for eager, compiled in zip(numbers(tmp_path / "eager"), numbers(tmp_path / "compiled"), strict=True):
        assert compiled == pytest.approx(eager, rel=1e-4, abs=1e-6)


# ---------------------------------------------------------------------------- on a GPU


@CUDA
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_cuda_steps_never_synchronise_with_the_host(compiled):
    trainee = Trainee.build(conv(device="cuda").resolved())
    torch._dynamo.utils.counters.clear()
    if compiled:
        trainee.compile()
    for _ in range(5):  # compile and record the CUDA graphs first
        trainee.window.add(trainee.advance())
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(10):
            trainee.window.add(trainee.advance())
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert trainee.window.read(trainee.advance()).finite
    if compiled:  # the steps ran as CUDA graphs, not as kernels launched one by one
        counters = torch._dynamo.utils.counters["inductor"]
        assert not counters["cudagraph_skips"], dict(counters)


@CUDA
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_cuda_resume_gives_the_same_run_up_to_rounding(tmp_path, compiled):
    config = conv(device="cuda", compile=compiled, steps=12, checkpoint_every=6)
    train(config, tmp_path / "straight", progress=False)
    train(RunConfig(**(vars(config) | {"steps": 6})), tmp_path / "split", progress=False)
    train(resume_config(tmp_path / "split", {"steps": 12}), tmp_path / "split", resume=True, progress=False)
    for split, straight in zip(numbers(tmp_path / "split"), numbers(tmp_path / "straight"), strict=True):
        assert split == pytest.approx(straight, rel=1e-3, abs=1e-5)
