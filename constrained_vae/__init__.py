"""constrained-vae: β-VAEs trained as maximise reconstruction subject to KL ≤ ε.

KL and NLL are in nats per sample throughout (see docs/problem.md, "Units"). The public API:

- :class:`KLBudget` — a KL budget ε with its learned multiplier λ for any model and training loop;
- :class:`RunConfig` — every setting of a run; :func:`train` — train one into a run folder (and
  resume it); :func:`load_run` — a trained run restored for evaluation;
- :func:`save_arrays` — your own data as the file ``--dataset arrays`` trains on; :class:`VAE` — the
  model protocol a ``--model module:factory`` of your own follows;
- :func:`objective_settings` and the objectives' settings classes — an objective for your own
  model (``settings.build(model, likelihood).step(batch)``);
- :func:`evaluate_paths` — disentanglement scores of run folders (``RUN/metrics.json``);
- :func:`write_figures` — a run's figures; :func:`write_tradeoff_analysis` — a sweep's ε ↔ β map.

The rooms: :mod:`~constrained_vae.core` (the mathematics), :mod:`~constrained_vae.data`,
:mod:`~constrained_vae.run`, :mod:`~constrained_vae.sweeps`, :mod:`~constrained_vae.evaluation`,
:mod:`~constrained_vae.analysis`, :mod:`~constrained_vae.plots` and :mod:`~constrained_vae.cli`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from constrained_vae.version import __version__

# The public names and the modules that define them, imported when first used: importing one room
# of the package (say the mathematics) does not import the others' dependencies.
_EXPORTS = {
    "KLBudget": "constrained_vae.core.kl_budget",
    "OBJECTIVES": "constrained_vae.core.objectives",
    "CapacitySettings": "constrained_vae.core.objectives",
    "ConstrainedSettings": "constrained_vae.core.objectives",
    "ControlVAESettings": "constrained_vae.core.objectives",
    "FixedBetaSettings": "constrained_vae.core.objectives",
    "GECOSettings": "constrained_vae.core.objectives",
    "objective_settings": "constrained_vae.core.objectives",
    "RunConfig": "constrained_vae.run.settings",
    "save_arrays": "constrained_vae.data.arrays",
    "VAE": "constrained_vae.core.models",
    "VAEOutput": "constrained_vae.core.models",
    "train": "constrained_vae.run.loop",
    "load_run": "constrained_vae.run.loop",
    "evaluate_paths": "constrained_vae.evaluation.scoring",
    "write_figures": "constrained_vae.plots.run_figures",
    "write_tradeoff_analysis": "constrained_vae.plots.tradeoff",
}

if TYPE_CHECKING:
    from constrained_vae.core.kl_budget import KLBudget
    from constrained_vae.core.models import VAE, VAEOutput
    from constrained_vae.core.objectives import (
        OBJECTIVES,
        CapacitySettings,
        ConstrainedSettings,
        ControlVAESettings,
        FixedBetaSettings,
        GECOSettings,
        objective_settings,
    )
    from constrained_vae.data.arrays import save_arrays
    from constrained_vae.evaluation.scoring import evaluate_paths
    from constrained_vae.plots.run_figures import write_figures
    from constrained_vae.plots.tradeoff import write_tradeoff_analysis
    from constrained_vae.run.loop import load_run, train
    from constrained_vae.run.settings import RunConfig


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


__all__ = [
    "OBJECTIVES",
    "VAE",
    "CapacitySettings",
    "ConstrainedSettings",
    "ControlVAESettings",
    "FixedBetaSettings",
    "GECOSettings",
    "KLBudget",
    "RunConfig",
    "VAEOutput",
    "__version__",
    "evaluate_paths",
    "load_run",
    "objective_settings",
    "save_arrays",
    "train",
    "write_figures",
    "write_tradeoff_analysis",
]
