"""Training steps per second: the project's loop against a minimal loop on the same model.

For each device (CPU, and CUDA when there is one) and each objective (constrained ε = 20,
fixed β = 1) on dSprites batches of 64, interleaved ``--repeats`` times (a, b, a, b, …):

(a) the project's loop: ``train()`` into a fresh run folder, logging every 25 steps
    and checkpointing every 500 as a real run does; steps/s over the wall time of the whole
    call (building, writing the folder and compiling included), and "steady" steps/s from the
    run's own ``seconds`` column after its first ``--warmup`` steps;
(b) a minimal loop on the same model and likelihood: ``--steps`` batches already made on the
    device, Adam, λ updated on the device, nothing read back until the end.

It prints the median steps/s of each and the ratio a/b (steady, and over the wall time). This is
a measurement, not a test: on a machine shared with other jobs, compare only numbers taken in the
same run, and say so.

    python benchmarks/train_step.py [--device cpu] [--steps 200] [--repeats 3] [--threads 1] [--compile] [--model conv]
        [--precision bf16]

``--memory-format`` times only (b), with the conv model and its batches contiguous and channels-last in
turn: the measurement behind the project's channels-last choice on CPU.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from constrained_vae.core.models import IMAGE_MODELS
from constrained_vae.core.objectives import PRECISIONS, vae_terms
from constrained_vae.run import folder
from constrained_vae.run.device import torch_threads, use_compile
from constrained_vae.run.loop import train
from constrained_vae.run.settings import RunConfig
from constrained_vae.run.trainee import Trainee

OBJECTIVES = {"constrained": {"epsilon": 20.0}, "fixed-beta": {"beta": 1.0}}


def project_loop(config: RunConfig, run_dir: Path, warmup: int) -> tuple[float, float]:
    """(steps/s over the wall time of ``train``, steady steps/s after ``warmup`` steps)."""
    start = time.perf_counter()
    train(config, run_dir, progress=False)
    wall = time.perf_counter() - start
    rows = folder.read_metrics(run_dir)
    first = next(row for row in rows if row["step"] >= warmup)
    steady = (rows[-1]["step"] - first["step"]) / (rows[-1]["seconds"] - first["seconds"])
    return config.steps / wall, steady


def minimal_loop(config: RunConfig, compile_model: bool, memory_format: torch.memory_format | None = None) -> float:
    """Steps/s of a plain loop on the run's model, data already on the device (after 10 warm-up steps).

    ``memory_format`` lays the model and its batches out in that format instead of the project's choice.
    """
    trainee = Trainee.build(config.resolved())
    if memory_format is not None:
        trainee.model.to(memory_format=memory_format)
    if compile_model:
        trainee.compile()
    model, likelihood, config = trainee.model, trainee.likelihood, trainee.config
    data = [trainee.next_batch()[0] for _ in range(16)]
    data = [batch.contiguous(memory_format=memory_format) for batch in data] if memory_format else data
    optimizer = torch.optim.Adam(list(model.parameters()) + list(likelihood.parameters()), lr=config.lr)
    multiplier = torch.ones((), device=trainee.device)

    def step(x: torch.Tensor) -> None:
        nonlocal multiplier
        if trainee.compiled and trainee.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()
        nll, kl = vae_terms(model, likelihood, x, precision=PRECISIONS[config.precision])
        loss = nll + config.beta * kl if config.beta is not None else nll + multiplier * (kl - config.epsilon)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if config.epsilon is not None:
            multiplier = torch.relu(multiplier + config.dual_lr * (kl.detach() - config.epsilon))

    for i in range(10):
        step(data[i % len(data)])
    synchronise(trainee.device)
    start = time.perf_counter()
    for i in range(config.steps):
        step(data[i % len(data)])
    synchronise(trainee.device)
    return config.steps / (time.perf_counter() - start)


def compare_memory_formats(config: RunConfig, repeats: int) -> None:
    """(b) with the conv model and batches contiguous, then channels-last, alternating ``repeats`` times."""
    formats = {"contiguous": torch.contiguous_format, "channels-last": torch.channels_last}
    rates: dict[str, list[float]] = {name: [] for name in formats}
    for repeat in range(repeats):
        for name, memory_format in formats.items():
            rates[name].append(minimal_loop(config, False, memory_format))
            print(f"  {config.device} repeat {repeat + 1}: (b) {name} {rates[name][-1]:.2f}", flush=True)
    contiguous, channels_last = (statistics.median(rates[name]) for name in formats)
    paired = [cl / c for cl, c in zip(rates["channels-last"], rates["contiguous"], strict=True)]
    print(
        f"{config.device} {config.steps} steps × {repeats}: (b) contiguous {contiguous:.2f}, channels-last "
        f"{channels_last:.2f}   channels-last / contiguous {channels_last / contiguous:.2f} (median), "
        f"{min(paired):.2f}–{max(paired):.2f} (paired)",
        flush=True,
    )


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", action="append", choices=("cpu", "cuda"), help="default: cpu, and cuda if any")
    parser.add_argument("--steps", type=int, help="steps per timing (default: 200 on CPU, 3000 on CUDA)")
    parser.add_argument("--warmup", type=int, default=50, help="steps before the steady rate of (a) (default: 50)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions (default: 3)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's, one per core)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, help="default: the project's per device")
    parser.add_argument("--objective", action="append", choices=tuple(OBJECTIVES), help="default: both")
    parser.add_argument("--model", choices=IMAGE_MODELS, default="conv", help="the dSprites model (default: conv)")
    parser.add_argument("--precision", choices=tuple(PRECISIONS), default="fp32", help="the model's (default: fp32)")
    parser.add_argument(
        "--memory-format",
        action="store_true",
        help="instead: time (b) with the conv model contiguous and "
        "channels-last, alternating, and print their ratio (eager)",
    )
    args = parser.parse_args()
    devices = args.device or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    with torch_threads(args.threads):
        threads = torch.get_num_threads()
        setup = f"dSprites, {args.model}, {args.precision}, batch 64"
        print(f"torch {torch.__version__}, {threads} CPU threads; {setup}; steps/s")
        for device in devices:
            steps = args.steps or (3000 if device == "cuda" else 200)
            for objective in args.objective or list(OBJECTIVES):
                config = RunConfig(
                    dataset="dsprites",
                    model=args.model,
                    precision=args.precision,
                    steps=steps,
                    device=device,
                    compile=args.compile,
                    threads=args.threads,
                    **OBJECTIVES[objective],
                )
                if args.memory_format:
                    compare_memory_formats(config, args.repeats)
                    continue
                compiled = use_compile(config, torch.device(device))
                project, steady, minimal = [], [], []
                for repeat in range(args.repeats):
                    with tempfile.TemporaryDirectory() as folder:
                        wall_rate, steady_rate = project_loop(config, Path(folder) / "run", args.warmup)
                    project.append(wall_rate)
                    steady.append(steady_rate)
                    minimal.append(minimal_loop(config, compiled))
                    print(
                        f"  {device} {objective} repeat {repeat + 1}: (a) {wall_rate:.2f} wall, {steady_rate:.2f} "
                        f"steady; (b) {minimal[-1]:.2f}",
                        flush=True,
                    )
                a, a_steady, b = (statistics.median(v) for v in (project, steady, minimal))
                print(
                    f"{device} {objective:11s} compile={compiled!s:5s} {steps} steps × {args.repeats}: "
                    f"(a) project {a_steady:8.2f} steady, {a:8.2f} wall   (b) minimal {b:8.2f}   "
                    f"a/b {a_steady / b:.2f} steady, {a / b:.2f} wall",
                    flush=True,
                )


if __name__ == "__main__":
    main()
