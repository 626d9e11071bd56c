"""What a training step needs in memory, estimated before anything is allocated, against what the device has.

A batch too large for the machine must be refused with a message, not end in the kernel's OOM killer
(which may take other processes with it). The estimate of one step of a bank of N members is

    N · (batch · activations per example · BACKWARD_FACTOR  +  parameters · OPTIMIZER_COPIES · 4 bytes)

where the activations per example are the bytes autograd saves for the backward, measured by a dry
forward of the model on the CPU at batches of 1 and 2 (their difference leaves out the parameters, which
every layer saves whatever the batch), after the parameters were counted on the ``meta`` device (nothing
allocated), so that a model too large to build is refused before it is built. The dataset is not
counted: it is loaded (or, when generated, checked with :func:`generated_data_bytes`) before the check,
so the memory left already excludes it. Allocation failures that slip past the estimate still end in
one line (:func:`constrained_vae.run.loop.out_of_memory`).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from constrained_vae.core.likelihoods import build_likelihood
from constrained_vae.core.models import IMAGE_MODELS, MODELS, build_vae
from constrained_vae.core.objectives.base import vae_terms
from constrained_vae.errors import ResourceError
from constrained_vae.run.device import resolve_device
from constrained_vae.run.settings import GENERATED_DATASET, RunConfig

# The backward holds, beside the saved activations, their gradients (about as large) and a layer's temporaries.
BACKWARD_FACTOR = 2.0
OPTIMIZER_COPIES = 4  # a float32 parameter, its gradient and Adam's two moments
FLOAT32_BYTES = 4


def format_bytes(count: float) -> str:
    """``1.5 GiB``, ``320 MiB``, ``12 KiB``: a byte count in binary units."""
    for unit, size in (("EiB", 2**60), ("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{int(count)} bytes"


def _cgroup_room() -> int | None:
    """Bytes left under this process's cgroup (v2) memory limit, or None where there is none."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else max(0, int(limit) - used)


def available_bytes(device: torch.device | str) -> int | None:
    """The memory a new allocation can take on ``device``: the free memory of a CUDA device
    (``torch.cuda.mem_get_info``), on a CPU the kernel's ``MemAvailable`` (else the free pages), within a
    cgroup's limit. None where it cannot be read."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    free = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if free is None:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    room = _cgroup_room()
    return free if room is None else min(free, room)


def check_fits(needed: float, device: torch.device | str, what: str, advice: str = "") -> None:
    """:class:`ResourceError` when ``needed`` bytes exceed what ``device`` has free; ``what`` says what needs
    them (with the flag that sizes it), ``advice`` how to ask for less."""
    free = available_bytes(device)
    if free is None or needed <= free:
        return
    tail = f"; {advice}" if advice else ""
    raise ResourceError(
        f"{what} needs about {format_bytes(needed)} of memory, more than the {format_bytes(free)} "
        f"available on {torch.device(device).type}{tail}"
    )


def _saved_bytes(model_kind: str, sample_shape: tuple[int, ...], latent_dim: int, likelihood: str, batch: int) -> int:
    """The bytes autograd saves for the backward of one forward (NLL and KL) at ``batch`` examples, on the CPU
    (the sizes are those of any device), leaving torch's random state as it was."""
    storages: dict[int, int] = {}  # a tensor saved by several operations (a ReLU's output, the next layer's input)
    # is held once

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.random.fork_rng(devices=[]):
        model = build_vae(model_kind, sample_shape, latent_dim)
        nll_of = build_likelihood(likelihood, 1.0, False)
        x = torch.zeros(batch, *sample_shape)
        noise = torch.zeros(batch, latent_dim)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            vae_terms(model, nll_of, x, noise)
    return sum(storages.values())


def parameter_count(model_kind: str, sample_shape: tuple[int, ...], latent_dim: int) -> int:
    """The model's parameters, counted on the ``meta`` device (nothing allocated)."""
    with torch.device("meta"):
        model = build_vae(model_kind, sample_shape, latent_dim)
    return sum(parameter.numel() for parameter in model.parameters())


def activation_bytes_per_example(
    model_kind: str, sample_shape: tuple[int, ...], latent_dim: int, likelihood: str
) -> int:
    """The bytes one example adds to what a forward saves for its backward (the parameters left out)."""
    one = _saved_bytes(model_kind, sample_shape, latent_dim, likelihood, 1)
    return max(0, _saved_bytes(model_kind, sample_shape, latent_dim, likelihood, 2) - one)


def step_bytes(
    model_kind: str, sample_shape: tuple[int, ...], latent_dim: int, likelihood: str, batch_size: int, members: int = 1
) -> float:
    """The estimated peak bytes of one training step of a bank of ``members`` (see the module docstring)."""
    activations = activation_bytes_per_example(model_kind, sample_shape, latent_dim, likelihood)
    return members * batch_size * activations * BACKWARD_FACTOR + parameter_bytes(
        model_kind, sample_shape, latent_dim, members
    )


def parameter_bytes(model_kind: str, sample_shape: tuple[int, ...], latent_dim: int, members: int = 1) -> int:
    """The bytes of the members' parameters, their gradients and Adam's moments."""
    return members * parameter_count(model_kind, sample_shape, latent_dim) * OPTIMIZER_COPIES * FLOAT32_BYTES


def check_step_fits(config: RunConfig, sample_shape: tuple[int, ...], members: int = 1) -> None:
    """:class:`ResourceError`, with the estimate, when a step of the resolved ``config`` (a bank of ``members``
    such runs) cannot fit in the memory of its device; checked before the models are built. The estimate is of
    the project's models (:data:`~constrained_vae.core.models.MODELS`); another is not checked."""
    if config.model not in MODELS:  # a model of the user's own: its allocation failures still end in one line
        return
    device = resolve_device(config.device)
    shape = (config.model, sample_shape, config.latent_dim)
    bank = f" for each of the {members} runs of a bank" if members > 1 else ""
    check_fits(
        parameter_bytes(*shape, members),
        device,
        f"the {config.model} model with --latent-dim {config.latent_dim}{bank}",
        "use a smaller --latent-dim",
    )
    per_example = activation_bytes_per_example(*shape, config.likelihood)
    check_fits(
        step_bytes(*shape, config.likelihood, config.batch_size, members),
        device,
        f"a step of --batch-size {config.batch_size}{bank} ({format_bytes(per_example)} of activations an example "
        f"in the {config.model} model, ×{BACKWARD_FACTOR:g} for the backward, plus the parameters and Adam's state)",
        "use a smaller --batch-size",
    )


def smallest_sample_shape(config: RunConfig) -> tuple[int, ...] | None:
    """The shape of an observation of the resolved ``config``'s data, known without reading them: the generated
    data's, or the smallest image a 64×64 model takes (one channel: a lower bound); None where unknown."""
    if config.dataset == GENERATED_DATASET:
        return (len(config.spectrum),)
    return (1, 64, 64) if config.model in IMAGE_MODELS else None


def check_config_fits(config: RunConfig) -> None:
    """:class:`check_data_fits` and, where the observation's shape is known without reading the data,
    :class:`check_step_fits` for one run of the resolved ``config``: for a caller that plans runs (a sweep) and
    refuses before anything is written; the bank checks again with its data and its members."""
    check_data_fits(config)
    shape = smallest_sample_shape(config)
    if shape is not None:
        check_step_fits(config, shape)


def check_data_fits(config: RunConfig) -> None:
    """:class:`ResourceError` when the data generated from ``config`` (``--num-samples`` rows of linear-Gaussian
    data) cannot fit in memory; checked before they are generated."""
    if config.dataset != GENERATED_DATASET:
        return
    needed = generated_data_bytes(config.num_samples, len(config.spectrum))
    what = f"--num-samples {config.num_samples} of {len(config.spectrum)}-dimensional {GENERATED_DATASET} data"
    check_fits(needed, "cpu", what, "use fewer --num-samples")


def generated_data_bytes(num_samples: int, dimensions: int) -> int:
    """The peak bytes of generating ``num_samples`` rows of ``dimensions`` linear-Gaussian data: the
    float64 draws and their product, then the float32 copy the run keeps."""
    return num_samples * dimensions * (8 + 8 + FLOAT32_BYTES)


__all__ = [
    "BACKWARD_FACTOR",
    "activation_bytes_per_example",
    "available_bytes",
    "check_config_fits",
    "check_data_fits",
    "check_fits",
    "check_step_fits",
    "format_bytes",
    "generated_data_bytes",
    "parameter_bytes",
    "parameter_count",
    "step_bytes",
]
