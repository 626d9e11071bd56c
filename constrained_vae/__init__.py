"""constrained-vae: β-VAEs trained as maximise reconstruction subject to KL ≤ ε.

KL and NLL are in nats per sample throughout (see the README, "Units").
"""

__version__ = "0.1.0"
