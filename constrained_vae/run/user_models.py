"""Models of your own, named by import path: ``--model package.module:factory``.

The factory is called as ``factory(sample_shape, latent_dim)`` (the dataset's observation shape,
e.g. ``(1, 64, 64)`` or ``(12,)``, and ``--latent-dim``) and returns a module with the protocol of
:class:`~constrained_vae.core.models.VAE`, which every part of a run uses:

* ``encode(x) -> (mu, log_var)``: the Gaussian posterior q(z|x), each ``[n, latent_dim]``;
* ``decode(z) -> output``: logits (Bernoulli likelihood) or the mean (Gaussian) of p(x|z),
  ``[n, *sample_shape]``;
* ``forward(x, noise) -> VAEOutput(mu, log_var, z, decoded)`` with z = μ + σ·noise (``noise``
  ~ N(0, I) ``[n, latent_dim]``, drawn by the run so that it resumes exactly);
* ``latent_dim``: the number of latent dimensions.

``VAE(encoder, decoder, latent_dim)`` built of your own encoder and decoder has all four. The run
folder's ``config.json`` records the import path; the checkpoint holds the module's
``state_dict`` (tensors only), so a resume, a sweep's worker, the scores and the figures rebuild
the model by importing the factory again: it must be importable where they run (installed, or on
``PYTHONPATH``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from torch import nn

from constrained_vae.core.checks import check_choice
from constrained_vae.core.models import MODELS, build_vae
from constrained_vae.errors import ConfigError

PROTOCOL = ("encode", "decode", "forward", "latent_dim")


def is_import_path(name: str) -> bool:
    """``package.module:factory`` names a model of your own; a built-in model's name has no colon."""
    return ":" in name


def import_path(factory: Callable[..., Any]) -> str:
    """The ``module:qualified.name`` of ``factory``, as ``--model`` takes it."""
    module, name = getattr(factory, "__module__", None), getattr(factory, "__qualname__", None)
    if not module or not name or "<" in name or module == "__main__":
        raise ConfigError(
            f"{factory!r} has no import path a run folder could record (define it at the top level of an "
            "importable module, not in __main__ or inside a function)"
        )
    return f"{module}:{name}"


def load_factory(path: str) -> Callable[..., nn.Module]:
    """The factory that ``path`` (``package.module:factory``) names; ConfigError if it cannot be imported."""
    module_name, _, name = path.partition(":")
    if not module_name or not name:
        raise ConfigError(f"--model {path!r}: a model of your own is named package.module:factory")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as error:  # any failure of the user's module is theirs to see, in one line
        raise ConfigError(f"--model {path}: cannot import {module_name} ({type(error).__name__}: {error})") from None
    for part in name.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"--model {path}: {module_name} has no {name}")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"--model {path}: {name} is not callable (it must build the model)")
    return target


def check_model_name(name: str) -> None:
    """ConfigError unless ``name`` is a built-in model or an importable factory."""
    if is_import_path(name):
        load_factory(name)
    else:
        check_choice("model", name, MODELS)


def build_model(name: str, sample_shape: tuple[int, ...], latent_dim: int) -> nn.Module:
    """The model ``name`` for observations of ``sample_shape`` with ``latent_dim`` latents (module docstring)."""
    if not is_import_path(name):
        return build_vae(name, sample_shape, latent_dim)  # type: ignore[arg-type]
    try:
        model = load_factory(name)(tuple(sample_shape), latent_dim)
    except ConfigError:
        raise
    except Exception as error:
        raise ConfigError(
            f"--model {name}: factory(sample_shape={tuple(sample_shape)}, latent_dim={latent_dim}) failed "
            f"({type(error).__name__}: {error})"
        ) from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"--model {name}: the factory returned {type(model).__name__}, not a torch nn.Module")
    missing = [attribute for attribute in PROTOCOL if not hasattr(model, attribute)]
    if missing:
        raise ConfigError(
            f"--model {name}: the model lacks {', '.join(missing)} (a model has encode, decode, forward(x, noise) "
            "and latent_dim, as constrained_vae.VAE)"
        )
    if model.latent_dim != latent_dim:
        raise ConfigError(f"--model {name}: the model has latent_dim {model.latent_dim}, the run {latent_dim}")
    return model
