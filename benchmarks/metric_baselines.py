"""Disentanglement scores of reference representations at the published protocol sizes.

On data with dSprites' factors (shape 3, scale 6, orientation 40, pos_x 32, pos_y 32; the
observations are the factor classes, nothing rendered):

- oracle: code j holds one factor, (class + ½)/size with noise of std 0.001, rescaled and permuted;
- rotated oracle: the same information mixed by a random rotation (informative, not disentangled);
- random: 10 codes of N(0, 1) noise, whatever the input (chance).

With ``--rendered``, also a representation read off rendered dSprites images: the sprite's
centre of mass (x, y) and area (takes several minutes: ~2 M images are rendered).

Prints a Markdown table (and the seconds each row took). ``--quick`` cuts the protocol sizes
tenfold for a smoke run; ``--metrics`` scores a subset; ``--dci-predictor forest`` swaps DCI's
published gradient-boosted trees for the faster random forest.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from constrained_vae.data.dsprites import FACTOR_SIZES, DSprites
from constrained_vae.evaluation import metrics
from constrained_vae.evaluation.metrics import DCI_PREDICTORS
from constrained_vae.evaluation.references import (
    FactorGrid,
    oracle_representation,
    random_representation,
    sprite_centroid,
)

COLUMNS = [
    ("betavae_score", "train_accuracy", "BetaVAE train"),
    ("betavae_score", "eval_accuracy", "BetaVAE eval"),
    ("factorvae_score", "train_accuracy", "FactorVAE train"),
    ("factorvae_score", "eval_accuracy", "FactorVAE eval"),
    ("mig", "mig", "MIG"),
    ("dci", "disentanglement", "DCI D"),
    ("dci", "completeness", "DCI C"),
    ("dci", "informativeness", "DCI I (test acc.)"),
    ("sap_score", "sap", "SAP"),
    ("modularity_explicitness", "modularity_score", "Modularity"),
    ("modularity_explicitness", "explicitness_score_train", "Explicitness train"),
    ("modularity_explicitness", "explicitness_score_test", "Explicitness test"),
]


def quick_protocols() -> dict[str, dict[str, int]]:
    """Every count of the published protocols divided by ten."""
    return {
        "betavae_score": dict(num_train=1000, num_eval=500),
        "factorvae_score": dict(num_train=1000, num_eval=500, num_variance_estimate=1000),
        "mig": dict(num_train=1000),
        "dci": dict(num_train=1000, num_test=500),
        "sap_score": dict(num_train=1000, num_test=500),
        "modularity_explicitness": dict(num_train=1000, num_test=500),
    }


def score_row(
    name: str, make_representation, dataset, seed: int, protocols: dict[str, dict]
) -> tuple[str, dict, float]:
    """The metrics of ``protocols`` for one representation (a fresh one per metric, so each is
    reproducible)."""
    started = time.perf_counter()
    scores = {
        metric: metrics.METRICS[metric](make_representation(), dataset, seed=seed, **settings)
        for metric, settings in protocols.items()
    }
    return name, scores, time.perf_counter() - started


def format_row(name: str, scores: dict, seconds: float) -> str:
    cells = [f"{scores[metric][key]:.3f}" for metric, key, _ in COLUMNS if metric in scores]
    return f"| {name} | " + " | ".join(cells) + f" | {seconds:.0f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rendered", action="store_true", help="add the sprite-centroid row on rendered dSprites")
    parser.add_argument("--quick", action="store_true", help="protocol sizes divided by ten")
    parser.add_argument("--metrics", default=",".join(metrics.METRICS), help="comma-separated subset (default: all)")
    parser.add_argument("--dci-predictor", choices=list(DCI_PREDICTORS), default="boosting", help="default: boosting")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    chosen = args.metrics.split(",")
    unknown = sorted(set(chosen) - set(metrics.METRICS))
    if unknown:
        parser.error(f"unknown metric(s) {unknown}; choose from {','.join(metrics.METRICS)}")
    sizes = quick_protocols() if args.quick else {}
    protocols = {metric: sizes.get(metric, {}) for metric in metrics.METRICS if metric in chosen}
    if "dci" in protocols:
        protocols["dci"] = protocols["dci"] | {"predictor": args.dci_predictor}
    grid = FactorGrid(FACTOR_SIZES)
    rows = [
        ("oracle", lambda: oracle_representation(FACTOR_SIZES, seed=1), grid),
        ("rotated oracle", lambda: oracle_representation(FACTOR_SIZES, seed=1, rotate=True), grid),
        ("random (10-D)", lambda: random_representation(10, seed=2), grid),
    ]
    if args.rendered:
        rows.append(("sprite centroid (rendered dSprites)", lambda: sprite_centroid, DSprites()))
    columns = [label for metric, _, label in COLUMNS if metric in protocols]
    described = "published protocol sizes" if not args.quick else "protocol sizes / 10"
    predictor = f", DCI predictor {args.dci_predictor}" if "dci" in protocols else ""
    print(f"dSprites factors {FACTOR_SIZES}, {described}{predictor}, seed {args.seed}\n")
    print("| representation | " + " | ".join(columns) + " | seconds |")
    print("|---" * (len(columns) + 2) + "|")
    for name, make, dataset in rows:
        print(format_row(*score_row(name, make, dataset, args.seed, protocols)), flush=True)
    chance = np.mean([1.0 / s for s in FACTOR_SIZES])
    print(
        f"\nchance: BetaVAE / FactorVAE 1/{len(FACTOR_SIZES)} = {1 / len(FACTOR_SIZES):.3f}; MIG 0; DCI D, C 0; ",
        end="",
    )
    print(f"DCI I = mean of 1/size = {chance:.3f}; SAP 0; explicitness 0.5; modularity: none (noise scores high)")


if __name__ == "__main__":
    main()
