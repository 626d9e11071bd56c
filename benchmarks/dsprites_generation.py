"""How fast the procedural dSprites renders: a training batch, and the whole 737,280-image grid.

python benchmarks/dsprites_generation.py            # batch timing + a timed 1/8 of the grid
python benchmarks/dsprites_generation.py --full     # materialise the whole grid
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from constrained_vae.data.dsprites import DSprites


def ms_per_batch(dataset: DSprites, batch_size: int, repeats: int, seed: int) -> tuple[float, float, float]:
    """Mean, median and standard deviation of ms per ``get`` of a random batch, after a warm-up."""
    rng = np.random.default_rng(seed)
    batches = [torch.from_numpy(rng.integers(0, len(dataset), batch_size)) for _ in range(repeats)]
    for indices in batches[:10]:
        dataset.get(indices)
    times = []
    for indices in batches:
        start = time.perf_counter()
        dataset.get(indices)
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.mean(times)), float(np.median(times)), float(np.std(times))


def seconds_to_materialise(dataset: DSprites, fraction: float) -> tuple[float, int, float]:
    """(seconds, images rendered, seconds scaled to the whole grid) to pack ``fraction`` of it.

    The fraction is taken as equal slices from the start of each shape's block, since the shapes
    cost differently (the heart most); ``fraction = 1`` renders the whole grid in one call.
    """
    if fraction >= 1.0:
        start = time.perf_counter()
        packed = dataset.materialise()
        elapsed = time.perf_counter() - start
        assert packed.shape == (len(dataset), 512)
        return elapsed, len(dataset), elapsed
    num_shapes = dataset.factor_sizes[0]
    block = len(dataset) // num_shapes
    per_shape = max(1, round(block * fraction))
    start = time.perf_counter()
    for shape in range(num_shapes):
        packed = dataset.materialise(start=shape * block, stop=shape * block + per_shape)
        assert packed.shape == (per_shape, 512)
    elapsed = time.perf_counter() - start
    count = per_shape * num_shapes
    return elapsed, count, elapsed * len(dataset) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=500, help="batches timed")
    parser.add_argument("--fraction", type=float, default=0.125, help="share of the grid to materialise")
    parser.add_argument("--full", action="store_true", help="materialise the whole grid (overrides --fraction)")
    args = parser.parse_args()

    dataset = DSprites()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    mean, median, std = ms_per_batch(dataset, args.batch_size, args.repeats, seed=0)
    print(
        f"get(batch of {args.batch_size}): {mean:.3f} ms mean ± {std:.3f} sd, {median:.3f} ms median "
        f"over {args.repeats} batches"
    )
    fraction = 1.0 if args.full else args.fraction
    elapsed, count, whole = seconds_to_materialise(dataset, fraction)
    print(f"materialise {count:,} images: {elapsed:.1f} s ({count / elapsed:,.0f} images/s)")
    label = "measured" if args.full else f"extrapolated from {fraction:g} of the grid"
    print(f"materialise all {len(dataset):,} images: {whole:.1f} s ({label})")


if __name__ == "__main__":
    main()
