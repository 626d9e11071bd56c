"""How fast each multiplier rule and baseline meets a KL budget, and how still it stays there.

For every setting (a ``--dual-update`` rule with its rates, or a baseline objective)
and every budget ε of the dataset's grid, trains one ordinary run into
``OUT/<setting>/eps<ε>`` (finished runs are reused, so the script resumes) and prints
one Markdown table per dataset: the steps until |KL − ε| ≤ 2% ε holds for good (on the
``--log-every`` window means), the tail oscillation of the effective β (std/mean over
the last 10% of steps), the final NLL and, on linear-Gaussian data, the error of the
tail λ against the closed-form β*(ε). GECO is given κ = D(β*(ε)), the optimal NLL at
the same point, and is scored on |NLL − κ| ≤ 2% κ.

Linear-Gaussian data: spectrum 100, 30, 10, 3, 1 (σ = 1), so that the budgets span
β* = 0.1 … 30. dSprites (``--dataset dsprites``, minutes per run on a CPU): ε ∈ {5, 10,
20, 40}.

    python benchmarks/dual_tracking.py --out bench/dual            # linear-Gaussian
    python benchmarks/dual_tracking.py --dataset dsprites --settings gradient log ...
    python benchmarks/dual_tracking.py --out bench/dual --report-only --figure docs/figures/dual_tracking.png
"""

from __future__ import annotations

from pathlib import Path

import torch

from constrained_vae.analysis import tracking
from constrained_vae.cli.common import ArgumentParser
from constrained_vae.core import linear_gaussian
from constrained_vae.plots import tracking as plots_tracking
from constrained_vae.run import folder
from constrained_vae.run.loop import train
from constrained_vae.run.settings import RunConfig

SPECTRUM = [100.0, 30.0, 10.0, 3.0, 1.0]
BETA_STARS = [0.1, 0.3, 1.0, 3.0, 10.0, 30.0]
DSPRITES_EPSILONS = [5.0, 10.0, 20.0, 40.0]
# name: settings added to the run's config (rates in the units of each rule: λ per nat for
# gradient, pi and augmented; log λ per nat for log and geco)
SETTINGS: dict[str, dict] = {
    "gradient-0.02": dict(dual_update="gradient", dual_lr=0.02),
    "gradient-0.1": dict(dual_update="gradient", dual_lr=0.1),
    "gradient-0.5": dict(dual_update="gradient", dual_lr=0.5),
    "gradient-0.002": dict(dual_update="gradient", dual_lr=0.002),
    "log-0.003": dict(dual_update="log", dual_lr=0.003),
    "log-0.01": dict(dual_update="log", dual_lr=0.01),
    "log-0.03": dict(dual_update="log", dual_lr=0.03),
    "pi-0.1-kp2": dict(dual_update="pi", dual_lr=0.1, dual_kp=2.0),
    "pi-0.1-kp10": dict(dual_update="pi", dual_lr=0.1, dual_kp=10.0),
    "augmented-0.1": dict(dual_update="augmented", dual_lr=0.1),
    "augmented-0.5": dict(dual_update="augmented", dual_lr=0.5),
    "gradient+ema-0.1": dict(dual_update="gradient+ema", dual_lr=0.1),
    "log+ema-0.01": dict(dual_update="log+ema", dual_lr=0.01),
    "log+ema-0.03": dict(dual_update="log+ema", dual_lr=0.03),
    "pi+ema-0.1-kp10": dict(dual_update="pi+ema", dual_lr=0.1, dual_kp=10.0),
    "capacity": dict(objective="capacity"),
    "controlvae": dict(objective="controlvae"),
    "geco": dict(objective="geco", dual_lr=0.01),
    "geco-0.001": dict(objective="geco", dual_lr=0.001),
}


def budgets(dataset: str, epsilons: list[float] | None = None) -> list[tuple[float, float | None]]:
    """(ε, β*(ε) or None) for the dataset's grid (``epsilons`` replaces the dSprites one)."""
    if dataset == "linear-gaussian":
        return [(round(linear_gaussian.rate(b, SPECTRUM), 4), b) for b in BETA_STARS]
    return [(eps, None) for eps in epsilons or DSPRITES_EPSILONS]


def point_config(dataset: str, setting: dict, epsilon: float, beta_star: float | None, steps: int | None) -> RunConfig:
    settings = dict(setting, dataset=dataset, steps=steps, seed=0, log_every=20 if dataset == "linear-gaussian" else 25)
    if dataset == "linear-gaussian":
        settings["spectrum"] = SPECTRUM
    if settings.get("objective") == "geco":
        settings["kappa"] = round(linear_gaussian.distortion(beta_star, SPECTRUM), 4) if beta_star else epsilon
    else:
        settings["epsilon"] = epsilon
    return RunConfig(**settings)


def main() -> None:
    parser = ArgumentParser(prog="benchmarks/dual_tracking.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=("linear-gaussian", "dsprites"), default="linear-gaussian")
    parser.add_argument("--out", default="bench/dual_tracking", help="folder of the runs (reused when re-run)")
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS), metavar="NAME")
    parser.add_argument("--steps", type=int, help="steps per run (default: the dataset's)")
    parser.add_argument("--epsilons", type=float, nargs="+", help="dsprites only: these budgets instead of 5 10 20 40")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--report-only", action="store_true", help="train nothing; report the finished runs")
    parser.add_argument("--figure", help="write λ(t) and KL(t) at the tightest and loosest budget here (PNG/PDF)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out) / args.dataset
    results: list[tracking.Tracking] = []
    for name in args.settings:
        for epsilon, beta_star in budgets(args.dataset, args.epsilons):
            run_dir = out / name / f"eps{epsilon:g}"
            if not args.report_only and not (run_dir / folder.SUMMARY_FILE).exists():
                config = point_config(args.dataset, SETTINGS[name], epsilon, beta_star, args.steps)
                train(config, run_dir, resume=folder.is_started(run_dir), progress=False)
            if (run_dir / folder.SUMMARY_FILE).exists():
                results.append(tracking.track(run_dir, beta_star, setting=name))
    print(tracking.markdown_table(results))
    print()
    print(tracking.summary_table(results))
    if args.figure:
        grid = budgets(args.dataset, args.epsilons)
        tight, loose = min(grid)[0], max(grid)[0]
        folders = {name: (out / name / f"eps{tight:g}", out / name / f"eps{loose:g}") for name in args.settings}
        plots_tracking.write_figure(folders, (tight, loose), args.figure)
        print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
