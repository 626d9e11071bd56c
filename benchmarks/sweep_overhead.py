"""What a sweep on Ray costs: its overhead per point against ``run.py``, and its parallel efficiency.

Every point is a linear-gaussian run (``--steps`` steps, one torch thread), timed as a user
meets it, from the command's start to its exit:

(a) ``run.py`` once per point, one after another (``--threads 1``): the interpreter, torch
    and the data are started afresh for each;
(b) ``sweep.py --workers 1 --cpus-per-run 1`` over the same points, with 1 and with
    ``--points`` points: the difference is the time a point adds to a sweep, the rest the
    sweep's fixed cost (starting Ray in its process, and stopping it);
(c) ``sweep.py --workers 2`` over ``--points`` points, two at a time: the parallel
    efficiency is T(b, all points) / (2 × T(c)), with and without the fixed cost.

Overhead per point = (b)'s time per added point − (a)'s time per point: what handing a point
to Ray costs beyond running it alone (negative when the sweep's warm workers save more than
Ray costs). This is a measurement, not a test: on a machine shared with other jobs the
numbers move; compare only those taken in the same run, and say so.

    python benchmarks/sweep_overhead.py [--points 16] [--steps 2000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN = ["--dataset", "linear-gaussian", "--spectrum", "16,8,4,2,1", "--num-samples", "20000", "--no-progress"]


def timed(script: str, *args: str, cwd: Path, env: dict[str, str]) -> float:
    """Seconds from starting ``experiments/SCRIPT ARGS`` to its exit (which must be 0)."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, str(ROOT / "experiments" / script), *args],
        cwd=cwd,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def betas(points: int) -> list[str]:
    """``points`` β values (one seed each): distinct points of equal cost."""
    return [f"{0.5 + 0.25 * i:g}" for i in range(points)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=16, help="points of the sweeps (default: 16)")
    parser.add_argument("--steps", type=int, default=2000, help="steps of every point (default: 2000)")
    parser.add_argument("--run-py-points", type=int, default=4, help="points timed through run.py (default: 4)")
    args = parser.parse_args()
    run = [*RUN, "--steps", str(args.steps)]
    with (
        tempfile.TemporaryDirectory(prefix="sweep-overhead-") as folder,
        tempfile.TemporaryDirectory(prefix="ray", dir="/tmp") as ray_dir,
    ):
        cwd, env = Path(folder), os.environ | {"RAY_TMPDIR": ray_dir}
        alone = [
            timed("run.py", "--beta", beta, *run, "--threads", "1", "--out", f"run-{beta}", cwd=cwd, env=env)
            for beta in betas(args.run_py_points)
        ]
        serial, parallel = ["--workers", "1", "--cpus-per-run", "1"], ["--workers", "2", "--cpus-per-run", "1"]
        one = timed("sweep.py", "--beta", betas(1)[0], *run, *serial, "--out", "one", cwd=cwd, env=env)
        everything = betas(args.points)
        series = timed("sweep.py", "--beta", *everything, *run, *serial, "--out", "series", cwd=cwd, env=env)
        pairs = timed("sweep.py", "--beta", *everything, *run, *parallel, "--out", "pairs", cwd=cwd, env=env)
    per_run_py = sum(alone) / len(alone)
    per_point = (series - one) / (args.points - 1)
    fixed = one - per_point
    print(f"{os.cpu_count()} CPU cores; linear-gaussian points of {args.steps} steps, one torch thread each")
    print(f"run.py, one process per point:       {per_run_py:.2f} s per point (mean of {len(alone)})")
    print(f"sweep.py --workers 1, per point:     {per_point:.2f} s per point added")
    print(f"sweep.py fixed cost (Ray start/stop): {fixed:.2f} s per sweep")
    print(f"overhead per point against run.py:   {per_point - per_run_py:+.2f} s")
    print(f"{args.points} points: --workers 1 {series:.1f} s, --workers 2 {pairs:.1f} s")
    efficiency, steady = series / (2 * pairs), (series - fixed) / (2 * (pairs - fixed))
    print(f"parallel efficiency, 2 at a time:    {efficiency:.0%} ({steady:.0%} without the fixed cost)")


if __name__ == "__main__":
    main()
