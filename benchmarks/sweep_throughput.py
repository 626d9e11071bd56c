"""Aggregate training throughput of N dSprites runs sharing one device: the runs-per-GPU table.

For each N in ``--runs``, ``experiments/sweep.py`` (or, where Ray is not installed, N ``experiments/run.py``
processes started together) trains N points (fixed β = 1, 2, …, one seed
each, ``--steps`` steps) at once on ``--device``: on CUDA each point asks Ray for 1/N of the GPU
(``--gpus-per-run 1/N``) and ``--cpus-per-run`` CPUs; on CPU each gets cores/N (``--workers N``).
From every point's ``metrics.csv`` it takes the steady rate after ``--warmup`` steps (the point's
own ``seconds`` column, so start-up and compiling are left out) and prints, per N: the sum of those
rates (aggregate steps/s while all N train together), the slowest point's rate, and the sweep's
wall time from the command's start to its exit.

    python benchmarks/sweep_throughput.py --device cuda --runs 1 4 8 --steps 3000
    python benchmarks/sweep_throughput.py --device cpu --runs 1 2 --steps 200

This is a measurement, not a test: the aggregate is only meaningful when every point trained
for the whole span (N no larger than what the device and ``--cpus-per-run`` can hold at once), and
on a shared machine only numbers taken in the same run compare. Extra flags go to every point
(``--compile``, ``--batch-size``, …).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from constrained_vae.run import folder

ROOT = Path(__file__).resolve().parents[1]


def steady_rate(run_dir: Path, warmup: int) -> float:
    """Steps per second of a run after its first ``warmup`` steps, from its ``metrics.csv``."""
    rows = folder.read_metrics(run_dir)
    first = next(row for row in rows if row["step"] >= warmup)
    return (rows[-1]["step"] - first["step"]) / (rows[-1]["seconds"] - first["seconds"])


def sweep_of(count: int, device: str, cpus_per_run: float, steps: int, extra: list[str], out: Path) -> float:
    """Train ``count`` points at once with the sweep script; its wall time in seconds."""
    resources = (
        ["--gpus-per-run", f"{1 / count:.6g}", "--cpus-per-run", f"{cpus_per_run:g}"]
        if device == "cuda"
        else ["--workers", str(count)]
    )
    betas = [f"{beta:g}" for beta in range(1, count + 1)]
    command = [
        sys.executable,
        str(ROOT / "experiments" / "sweep.py"),
        "--dataset",
        "dsprites",
        "--beta",
        *betas,
        "--steps",
        str(steps),
        "--device",
        device,
        "--log-every",
        "25",
        "--checkpoint-every",
        str(steps),
        *resources,
        "--no-progress",
        "--out",
        str(out),
        *extra,
    ]
    start = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the sweep of {count} runs failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return time.perf_counter() - start


def processes_of(count: int, device: str, steps: int, extra: list[str], out: Path) -> float:
    """Without Ray: ``count`` ``run.py`` processes at once (the same points); their wall time in seconds."""
    start = time.perf_counter()
    running = []
    for beta in range(1, count + 1):
        command = [sys.executable, str(ROOT / "experiments" / "run.py"), "--dataset", "dsprites", "--beta", str(beta)]
        command += ["--steps", str(steps), "--device", device, "--log-every", "25", "--checkpoint-every", str(steps)]
        command += ["--no-progress", "--out", str(out / f"beta{beta}-seed0"), *extra]
        running.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    for process in running:
        _, err = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"a run of {count} at once failed (exit {process.returncode}):\n{err[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda", help="default: cuda")
    parser.add_argument("--runs", type=int, nargs="+", default=[1, 4, 8], help="runs at once (default: 1 4 8)")
    parser.add_argument("--steps", type=int, default=3000, help="steps of every run (default: 3000)")
    parser.add_argument("--warmup", type=int, default=500, help="steps before the steady rate (default: 500)")
    parser.add_argument("--cpus-per-run", type=float, default=1.0, help="CPUs of each run on CUDA (default: 1)")
    args, extra = parser.parse_known_args()
    if args.warmup >= args.steps:
        parser.error("--warmup must be below --steps")
    on_ray = importlib.util.find_spec("ray") is not None
    how = "points of experiments/sweep.py on Ray" if on_ray else "experiments/run.py processes at once (no Ray here)"
    print(f"{os.cpu_count()} CPU cores; dSprites, batch 64 unless given; {args.steps} steps per run on {args.device}")
    print(f"the runs: {how}")
    print(f"{'runs':>4}  {'aggregate steps/s':>17}  {'slowest run':>11}  {'wall s':>7}")
    with tempfile.TemporaryDirectory(prefix="sweep-throughput-") as folder:
        for count in args.runs:
            out = Path(folder) / f"runs{count}"
            if on_ray:
                wall = sweep_of(count, args.device, args.cpus_per_run, args.steps, extra, out)
            else:
                wall = processes_of(count, args.device, args.steps, extra, out)
            rates = [steady_rate(run_dir, args.warmup) for run_dir in sorted(out.glob("beta*-seed0"))]
            print(f"{count:>4}  {sum(rates):>17.1f}  {min(rates):>11.1f}  {wall:>7.1f}", flush=True)


if __name__ == "__main__":
    main()
