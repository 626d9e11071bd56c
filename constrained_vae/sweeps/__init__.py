"""Sweeps: a grid of ε and/or β values × seeds, one ordinary run folder per point.

    SWEEP/sweep.json        the command, the grid, the run settings given, the points
    SWEEP/eps{E:g}-seed{S}  a constrained run folder (see :mod:`constrained_vae.run.folder`)
    SWEEP/beta{B:g}-seed{S} a fixed-β run folder
    SWEEP/failures.json     {point name: one-line reason} for the points that failed and
                            have not succeeded since (absent when there are none)

The rooms, in the order a sweep uses them:

- :mod:`~constrained_vae.sweeps.grid`: the points and the settings each one trains with;
- :mod:`~constrained_vae.sweeps.plan`: every point checked, what each needs (skip, resume,
  restart, new), the rules for re-running a sweep with another grid;
- :mod:`~constrained_vae.sweeps.runner`: one writer, ``sweep.json`` and ``failures.json``;
- :mod:`~constrained_vae.sweeps.ray_executor`: where the points train (Ray);
- :mod:`~constrained_vae.sweeps.tasks`: one point trained, and how it ended;
- :mod:`~constrained_vae.sweeps.progress` and :mod:`~constrained_vae.sweeps.report`: what the
  user sees while and after it runs;
- :mod:`~constrained_vae.sweeps.study`: the paper-scale study, made of sweeps.

The command line is :mod:`constrained_vae.cli.sweep`; nothing here imports it.
"""
