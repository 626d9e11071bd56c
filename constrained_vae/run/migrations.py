"""Run folders written by older versions of this package, read as the current version writes them.

Every conversion of an older format lives here, applied once where a file is read
(:func:`upgrade_settings` for ``config.json`` and a checkpoint's numerics,
:func:`upgrade_checkpoint` for the rest of a checkpoint), so that the loop and the objectives
only ever see the current format.
"""

from __future__ import annotations

from typing import Any

import torch

from constrained_vae.run.presets import LOCATELLO_2019, PRESETS, preset_settings

# Settings that were stored (unused) for objectives without a multiplier, and are not now.
_DROPPED_WITHOUT_MULTIPLIER = ("dual_lr", "multiplier_init")
# What each preset's settings were, where they have changed, when sweep records did not yet keep them.
_PRESETS_UNRECORDED: dict[str, dict[str, Any]] = {LOCATELLO_2019: {"model": "conv"}}


def upgrade_settings(values: dict[str, Any]) -> dict[str, Any]:
    """A saved config or checkpoint's numerics, with the settings added since filled as those runs had them.

    Settings that are None are left out (as a current config's numerics leave them out). Runs from
    before ``--precision`` existed computed in float32; runs from
    before ``--dual-update`` existed were constrained runs with plain gradient ascent on λ; a
    fixed-β, capacity or ControlVAE run's dual lr and initial λ were stored then and are not now.
    """
    values = {k: v for k, v in values.items() if v is not None}
    values.setdefault("precision", "fp32")  # runs from before --precision computed in float32
    if values.get("mode") == "constrained" and "dual_update" not in values:
        values["dual_update"] = "gradient"
    if values.get("mode") in ("fixed-beta", "capacity", "controlvae"):
        for name in _DROPPED_WITHOUT_MULTIPLIER:
            values.pop(name, None)
    return values


def recorded_preset(record: dict[str, Any]) -> dict[str, Any] | None:
    """The settings of the preset a sweep record's run settings name, as the sweep recorded them.

    Records from before ``preset_settings`` was kept ran the preset as it was then: the
    ``locatello2019`` preset trained the ``conv`` model. None when the run settings name no preset.
    """
    name = record["run_settings"].get("preset")
    if name not in PRESETS:  # none, or one the run settings' validation refuses
        return None
    if "preset_settings" in record:
        return dict(record["preset_settings"])
    return preset_settings(name) | _PRESETS_UNRECORDED.get(name, {})


def upgrade_checkpoint(state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's state in the current format (a shallow copy; tensors are shared).

    * objectives without extra state once saved none (``problem["extra"]``);
    * the log window was once saved as plain-float sums (``nll``, ``kl``, ``loss`` over ``count``
      steps) instead of one row per step, and then as rows after such sums (``carried`` over
      ``carried_steps`` steps): the sums become that many rows holding their means (so the row
      logged next is read to float32 rounding, not bit for bit);
    * the random streams were once saved otherwise (:func:`upgrade_rng`).
    """
    state = dict(state)
    objective = dict(state["objective"])
    objective["problem"] = {"extra": {}} | dict(objective["problem"])
    state["objective"] = objective
    state["window"] = upgrade_window(state["window"])
    state["rng"] = upgrade_rng(state["rng"])
    return state


def upgrade_rng(rng: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's random streams in the current format: ``noise`` and ``batches``, each with its device.

    The batch generator was once always a CPU one; the posterior noise was once drawn from torch's
    default generators, saved as ``torch`` (the CPU one, the noise of a CPU run) and ``cuda`` (one
    state per visible GPU; the first is taken, the run's when one GPU was visible).
    """
    rng = {"batches_device": "cpu"} | dict(rng)
    if "noise" not in rng:
        cuda = rng.get("cuda")
        if cuda is not None:
            rng |= {"noise": cuda[0] if isinstance(cuda, (list, tuple)) else cuda, "noise_device": "cuda"}
        else:
            rng |= {"noise": rng["torch"], "noise_device": "cpu"}
    return {key: rng[key] for key in ("noise", "noise_device", "batches", "batches_device")}


def upgrade_window(window: dict[str, Any]) -> dict[str, Any]:
    """A saved log window in the current format, ``{"rows": [steps, 4]}`` (NLL, KL, loss, multiplier)."""
    return {"rows": _window_rows(window)}


def _window_rows(window: dict[str, Any]) -> torch.Tensor:
    if "rows" not in window:
        sums, steps, rows = [window["nll"], window["kl"], window["loss"]], int(window["count"]), None
    else:
        carried, steps, rows = window.get("carried"), int(window.get("carried_steps", 0)), window["rows"]
        sums = [float(value) for value in carried[:3]] if steps else []
    if not steps:
        return rows if rows is not None else torch.empty(0, 4)
    dtype = rows.dtype if rows is not None else torch.float32
    means = torch.tensor([[*(value / steps for value in sums), 0.0]] * steps, dtype=dtype)
    return means if rows is None else torch.cat((means, rows))
