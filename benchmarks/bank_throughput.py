"""Aggregate training steps per second of a bank of N dSprites runs, against the same runs as solo points.

For each N in ``--members`` and each of eager and compiled (``--compile``), a bank of N members
(dSprites, the conv model, batch 64, constrained ε = 20 and fixed β = 1 alternating, seeds 0…N−1)
trains ``--steps`` steps in a process of its own (``train_bank`` into fresh run folders), stepping its
members by ``--strategy`` (default: the device's). It prints, per bank:

* steady: N × the steps after ``--warmup`` over the members' own ``seconds`` for them (the bank's
  step time; building, writing the folders and compiling left out);
* wall: N × ``--steps`` over the process's whole wall time, start-up included;
* peak memory per member: the device's peak allocation (CUDA) or the process's peak resident set
  (CPU), divided by N.

``--vs-sweep W`` also trains the same N points through ``experiments/sweep.py`` twice, as solo points
(``--bank-size 1 --workers W``, on Ray) and as one bank in the sweep's process (``--bank-size N
--executor local``), and prints each command's aggregate over its wall time: the comparison a user
meets.

    python benchmarks/bank_throughput.py --device cuda --members 1 4 16 42 64 --steps 2000
    python benchmarks/bank_throughput.py --device cpu --members 1 4 --steps 100 --vs-sweep 2

This is a measurement, not a test: on a machine shared with other jobs only numbers taken in the
same run compare.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from constrained_vae.core.objectives import PRECISIONS
from constrained_vae.run import folder
from constrained_vae.run.bank import STRATEGIES
from constrained_vae.run.loop import train_bank
from constrained_vae.run.settings import RunConfig

ROOT = Path(__file__).resolve().parents[1]
LOG_EVERY = 10  # steps per logged row: the steady rate is read between rows


def member_configs(count: int, device: str, steps: int, compile_model: bool, precision: str) -> list[RunConfig]:
    """The bank's members: constrained ε = 20 and fixed β = 1 alternating, seeds 0…count−1."""
    shared = dict(
        dataset="dsprites",
        device=device,
        steps=steps,
        batch_size=64,
        log_every=LOG_EVERY,
        checkpoint_every=max(steps, 1),
        compile=compile_model,
        precision=precision,
    )
    objectives = [{"epsilon": 20.0}, {"beta": 1.0}]
    return [RunConfig(**shared, **objectives[i % 2], seed=i) for i in range(count)]


def train_one_bank(args: argparse.Namespace) -> None:
    """The child process: train one bank and print its figures as one JSON line."""
    configs = member_configs(args.one, args.device[0], args.steps, args.compile_one, args.precision)
    with tempfile.TemporaryDirectory() as scratch:
        run_dirs = [Path(scratch) / f"m{i}" for i in range(len(configs))]
        train_bank(configs, run_dirs, resume=[False] * len(configs), progress=False, strategy=args.strategy)
        rows = folder.read_metrics(run_dirs[0])
    first = next(row for row in rows if row["step"] >= args.warmup)
    steady = len(configs) * (rows[-1]["step"] - first["step"]) / (rows[-1]["seconds"] - first["seconds"])
    if args.device[0] == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"steady": steady, "peak_bytes": peak}))


def timed(command: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - start, done.stdout


def bank_figures(count: int, device: str, compile_model: bool, args: argparse.Namespace) -> str:
    command = [sys.executable, __file__, "--one", str(count), "--device", device, "--steps", str(args.steps)]
    command += ["--warmup", str(args.warmup), "--compile-one" if compile_model else "--no-compile-one"]
    command += ["--precision", args.precision]
    command += ["--strategy", args.strategy] if args.strategy else []
    wall, out = timed(command)
    figures = json.loads(out.strip().splitlines()[-1])
    per_member = figures["peak_bytes"] / count / 2**20
    return (
        f"steady {figures['steady']:8.1f}   wall {count * args.steps / wall:8.1f}   peak/member {per_member:7.1f} MiB"
    )


def sweep_figures(count: int, device: str, workers: int, args: argparse.Namespace) -> str:
    """The same points through sweep.py: solo points on ``workers`` Ray workers, then one bank in-process."""
    grid = ["--beta", "1", "--seeds", "0"] if count == 1 else ["--epsilon", "20", "--beta", "1", "--seeds"]
    grid += [str(seed) for seed in range(count // 2)] if count > 1 else []  # the bank's points, for even N
    base = [sys.executable, str(ROOT / "experiments" / "sweep.py"), "--dataset", "dsprites", "--device", device]
    base += ["--steps", str(args.steps), "--batch-size", "64", "--log-every", str(LOG_EVERY), *grid, "--no-progress"]
    figures = []
    for label, extra in (
        (f"solo points, --workers {workers}", ["--bank-size", "1", "--workers", str(workers)]),
        (f"one bank, --bank-size {count} --executor local", ["--bank-size", str(count), "--executor", "local"]),
    ):
        with tempfile.TemporaryDirectory() as scratch:
            wall, _ = timed([*base, *extra, "--out", str(Path(scratch) / "sweep")])
        figures.append(f"{label}: {count * args.steps / wall:.2f} steps/s ({wall:.0f} s)")
    return "; ".join(figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", action="append", choices=("cpu", "cuda"), help="default: cuda if any, else cpu")
    parser.add_argument("--members", type=int, nargs="+", help="bank sizes (default: 1 4 16 42 64 on CUDA, 1 4 on CPU)")
    parser.add_argument("--steps", type=int, help="steps of every member (default: 2000 on CUDA, 100 on CPU)")
    parser.add_argument("--warmup", type=int, default=50, help="steps before the steady rate (default: 50)")
    parser.add_argument("--compile", choices=("both", "on", "off"), default="both", help="default: both")
    parser.add_argument("--strategy", choices=STRATEGIES, help="how the bank steps (default: the device's)")
    parser.add_argument("--precision", choices=tuple(PRECISIONS), default="fp32", help="the models' (default: fp32)")
    parser.add_argument("--vs-sweep", type=int, metavar="W", help="also the same points through sweep.py")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process: one bank of this many
    parser.add_argument("--compile-one", action=argparse.BooleanOptionalAction, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        train_one_bank(args)
        return
    devices = args.device or ["cuda" if torch.cuda.is_available() else "cpu"]
    compiles = {"both": [False, True], "on": [True], "off": [False]}[args.compile]
    print(f"torch {torch.__version__}; dSprites conv, {args.precision}, batch 64 per member; aggregate steps/s")
    for device in devices:
        steps = args.steps or (2000 if device == "cuda" else 100)
        args.steps, args.warmup = steps, min(args.warmup, steps // 2)
        for count in args.members or ([1, 4, 16, 42, 64] if device == "cuda" else [1, 4]):
            for compile_model in compiles:
                mode = "compiled" if compile_model else "eager"
                print(f"{device} N={count:3d} {mode:8s} {bank_figures(count, device, compile_model, args)}", flush=True)
            if args.vs_sweep:
                print(
                    f"{device} N={count:3d} sweep.py: {sweep_figures(count, device, args.vs_sweep, args)}", flush=True
                )


if __name__ == "__main__":
    main()
