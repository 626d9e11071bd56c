"""Where and how a run computes: its device, its conv layout, whether it compiles, its CPU threads.

None of these change what a run computes, only its floating-point rounding (and its speed);
``docs/benchmarks.md`` holds the measurements behind each rule.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from constrained_vae.core.models import DLIB_CONV
from constrained_vae.errors import ConfigError
from constrained_vae.run.settings import RunConfig

# A CUDA run compiles when it is long enough to repay compiling (tens of seconds) with faster steps
# (docs/benchmarks.md, "torch.compile").
COMPILE_MIN_STEPS = 50_000


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is available")
    return torch.device(name)


def model_memory_format(config: RunConfig, device: torch.device) -> torch.memory_format:
    """The layout of the model's conv weights (and so of its activations): channels-last for the conv
    VAEs on CPU, where oneDNN runs their step faster (docs/benchmarks.md, "Channels-last"), else torch's
    default."""
    if config.model in ("conv", DLIB_CONV) and device.type == "cpu":
        return torch.channels_last
    return torch.contiguous_format


def use_compile(config: RunConfig, device: torch.device) -> bool:
    """Whether a run compiles its model: ``config.compile`` when set, else only a CUDA run of at
    least :data:`COMPILE_MIN_STEPS` steps (the paper's scale). CPU runs stay eager: compiling gains
    too little there to repay its time (docs/benchmarks.md, "torch.compile")."""
    if config.compile is not None:
        return config.compile
    return device.type == "cuda" and config.steps >= COMPILE_MIN_STEPS


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """``threads`` torch CPU threads inside the block (torch's setting unchanged for None), the previous after."""
    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
