"""Milliseconds per training step (forward, backward, primal and dual update).

Prints one line per (model, batch size): the conv VAE on dSprites batches rendered
on the fly, the MLP VAE on digits, the linear VAE on linear-Gaussian data.
Usage: python benchmarks/train_step.py [--steps 30] [--device cpu]
"""

import argparse
import time

import torch

from constrained_vae.config import RunConfig
from constrained_vae.training import Trainee


def time_steps(config: RunConfig, steps: int, warmup: int = 5) -> tuple[float, float]:
    trainee = Trainee.build(config.resolved())
    for _ in range(warmup):
        trainee.objective.step(trainee.next_batch())
    data_time = step_time = 0.0
    for _ in range(steps):
        t0 = time.perf_counter()
        x = trainee.next_batch()
        t1 = time.perf_counter()
        trainee.objective.step(x)
        if trainee.device.type == "cuda":
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        data_time += t1 - t0
        step_time += t2 - t1
    return 1000 * data_time / steps, 1000 * step_time / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    cases = [("dsprites", b) for b in (32, 64, 128)] + [("digits", 128), ("linear-gaussian", 256)]
    for dataset, batch_size in cases:
        config = RunConfig(epsilon=10.0, dataset=dataset, batch_size=batch_size, device=args.device)
        data_ms, step_ms = time_steps(config, args.steps)
        print(f"{dataset:16s} batch {batch_size:4d}: data {data_ms:7.2f} ms  step {step_ms:7.2f} ms  per step")


if __name__ == "__main__":
    main()
