"""The primal optimiser of a run, by name (``RunConfig.optimizer``; None is Adam).

``adam``: torch's Adam at its defaults (β₁ 0.9, β₂ 0.999, eps 1e-8), which are
disentanglement_lib's ``vae/AdamOptimizer`` settings (see :mod:`constrained_vae.run.presets`).
``adagrad``: torch's Adagrad at its defaults (initial accumulator 0, eps 1e-10), the
optimiser of the β-VAE paper's 2D-shapes setup (Higgins et al. 2017, Appendix A.2); the
paper does not give its accumulator or eps.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from constrained_vae.errors import ConfigError

OPTIMIZERS = ("adam", "adagrad")  # the primal optimisers by name; None is Adam


def primal_optimizer(params: Iterable[torch.nn.Parameter], name: str | None, lr: float) -> torch.optim.Optimizer:
    """The optimiser ``name`` (None: Adam) over ``params`` at learning rate ``lr`` (per step, in parameter units)."""
    if name is None or name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr)
    raise ConfigError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
