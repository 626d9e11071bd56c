"""What the study's tests share."""

# 2 β × 2 seeds, then their 2 matched ε × 2 seeds: dSprites runs of 4 steps.
TINY_STUDY_RUNS = [
    "--betas",
    "1",
    "4",
    "--extra-epsilons",
    "--seeds",
    "0",
    "1",
    "--steps",
    "4",
    "--batch-size",
    "8",
    "--log-every",
    "2",
    "--checkpoint-every",
    "2",
]
