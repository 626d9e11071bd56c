"""A bank: runs of one shape trained side by side in one process, each its own run.

Members share the dataset, model, likelihood, latent size, batch size, optimizer and learning
rate, step count and logging cadence (:func:`bank_key`), and differ in the objective and its
budget and in the seed. Each member is an ordinary :class:`~constrained_vae.run.trainee.Trainee`:
its own parameters and optimizer, its own batch stream and posterior-noise stream, its own
multiplier (any objective and dual rule: their state is the member's own) and its own run folder.

A bank steps its members in one of three ways (:data:`STRATEGIES`):

* ``stacked``: one forward and one backward for all members. The members' parameters are
  stacked (``torch.stack``, differentiable, so each member's gradient lands on its own
  parameters) and the model and likelihood run under ``torch.func.vmap`` over
  ``functional_call``; each member's Lagrangian is its own, their sum is back-propagated once,
  one optimizer steps every member's parameters (with each member's own optimizer state) and each
  member's multiplier takes its step. Everything per member is
  elementwise (Adam, the multiplier rules), so a member's numbers are its solo run's up to the
  rounding of the batched kernels.
* ``sequential``: each member takes its ordinary solo step in turn: bit for bit its solo run.
* ``threaded``: as ``sequential``, the members split between as many threads as the bank has torch
  threads, each thread stepping its members with one torch thread of its own: bit for bit each
  member's solo run at one thread (a sweep's point with ``--cpus-per-run 1``). On CPUs this keeps
  every core busy with whole steps, as one process per core does, in one process.

A bank of one always takes the solo step (:meth:`Optimization.step`).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import torch
from torch import nn
from torch.func import functional_call, vmap

from constrained_vae.core.objectives import StepTerms
from constrained_vae.core.objectives.base import vae_terms
from constrained_vae.data import BatchFn, Dataset
from constrained_vae.errors import ConfigError
from constrained_vae.run import memory
from constrained_vae.run.device import resolve_device
from constrained_vae.run.settings import RunConfig
from constrained_vae.run.trainee import Trainee, check_batch_size, load_run_dataset

Strategy = Literal["stacked", "sequential", "threaded"]
STRATEGIES: tuple[str, ...] = ("stacked", "sequential", "threaded")
MEMBER_SETTINGS = ("seed",)  # run settings (beyond the objective's) that may differ between members
DATASET_SETTINGS = ("dataset", "data_path", "spectrum", "num_samples", "factor_sizes")  # and seed


def bank_key(config: RunConfig) -> tuple[tuple[str, Any], ...]:
    """What members of one bank share: every run setting of the resolved ``config`` but the seed."""
    settings = config.run_settings()
    return tuple((name, repr(value)) for name, value in settings.items() if name not in MEMBER_SETTINGS)


def default_strategy(device: torch.device) -> Strategy:
    """``stacked`` on a GPU (one launch per layer for all members), ``threaded`` on CPUs, where batched
    convolutions run slower than the members' own (docs/sweeps.md, "Run banks")."""
    return "stacked" if device.type == "cuda" else "threaded"


class VAETerms(nn.Module):
    """A VAE and its likelihood as one module: ``(x, noise) -> (NLL, KL)``, the terms of :func:`vae_terms`."""

    def __init__(self, model: nn.Module, likelihood: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.likelihood = likelihood

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return torch.stack(vae_terms(self.model, self.likelihood, x, noise))


class Bank:
    """The members of one bank, and their step (see the module docstring)."""

    def __init__(self, members: Sequence[Trainee], strategy: Strategy | None = None) -> None:
        if not members:
            raise ConfigError("a bank needs at least one run")
        keys = {bank_key(member.config) for member in members}
        if len(keys) > 1:
            raise ConfigError("the runs of a bank must share every setting but the objective and the seed")
        self.members = list(members)
        device = members[0].device
        self.strategy: Strategy = strategy or default_strategy(device)
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown bank strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        self.terms_modules = [VAETerms(member.model, member.likelihood) for member in self.members]
        self._stacked_terms = vmap(self._member_terms, in_dims=(0, 0, 0))
        self.compiled = False
        self._pool: ThreadPoolExecutor | None = None
        self._shared_primal: tuple[tuple[int, ...], torch.optim.Optimizer] | None = None

    @classmethod
    def build(cls, configs: Sequence[RunConfig], strategy: Strategy | None = None) -> Bank:
        """The bank of the resolved ``configs``; members whose data settings agree share one dataset and
        its training path on the device (one copy of a dataset kept there)."""
        datasets: dict[tuple[str, ...], tuple[Dataset, BatchFn]] = {}
        keys = []
        for config in configs:
            key = tuple(repr(getattr(config, name)) for name in (*DATASET_SETTINGS, "seed"))
            if key not in datasets:
                memory.check_data_fits(config)
                dataset = load_run_dataset(config)
                datasets[key] = dataset, dataset.batches(resolve_device(config.device))
            keys.append(key)
        # a step that cannot fit is refused before any model is built (a bank's members are of one shape)
        check_batch_size(configs[0], datasets[keys[0]][0])
        memory.check_step_fits(configs[0], datasets[keys[0]][0].sample_shape, len(configs))
        members = [Trainee.build(config, *datasets[key]) for config, key in zip(configs, keys, strict=True)]
        return cls(members, strategy)

    def _member_terms(self, params: dict[str, torch.Tensor], x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return functional_call(self.terms_modules[0], params, (x, noise))

    def compile(self) -> None:
        """Compile the members' models (sequential, or a bank of one) or the stacked terms (stacked)."""
        if self.strategy == "stacked" and len(self.members) > 1:
            options = {"fallback_random": True, "triton.cudagraphs": self.members[0].device.type == "cuda"}
            self._stacked_terms = torch.compile(self._stacked_terms, options=options)
        else:
            for member in self.members:
                member.compile()
        self.compiled = True

    def drop(self, member: Trainee) -> None:
        """Take ``member`` out of the bank (it diverged); the others go on."""
        index = self.members.index(member)
        del self.members[index]
        del self.terms_modules[index]

    def advance(self, members: Sequence[Trainee]) -> list[StepTerms]:
        """One optimisation step of each of ``members`` (all of the bank's, or those still short of their
        steps) on its next batch; the terms stay on the device."""
        if len(members) == 1 or self.strategy == "sequential":
            return [member.advance() for member in members]
        if self.strategy == "threaded":
            return self._threaded_step(members)
        return self._stacked_step(members)

    def _threaded_step(self, members: Sequence[Trainee]) -> list[StepTerms]:
        if self._pool is None:
            self.threads = torch.get_num_threads()
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="bank")
        if self.threads == 1:
            return [member.advance() for member in members]
        groups = [members[i :: self.threads] for i in range(min(self.threads, len(members)))]
        stepped = list(self._pool.map(_advance_alone, groups))
        terms: list[StepTerms] = [None] * len(members)  # type: ignore[list-item]
        for i, group_terms in enumerate(stepped):
            terms[i :: self.threads] = group_terms
        return terms

    def close(self) -> None:
        """Let the bank's threads go (a threaded bank's; the bank steps no more after this)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def _stacked_step(self, members: Sequence[Trainee]) -> list[StepTerms]:
        if self.compiled and members[0].device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()
        batches = [member.next_batch() for member in members]
        x = torch.stack([batch[0] for batch in batches])
        noise = torch.stack([batch[1] for batch in batches])
        modules = [self.terms_modules[self.members.index(member)] for member in members]
        names = [name for name, _ in modules[0].named_parameters()]
        member_params = [dict(module.named_parameters()) for module in modules]
        stacked = {name: torch.stack([params[name] for params in member_params]) for name in names}
        for member in members:
            member.optimization.zero_grad()
        terms = self._stacked_terms(stacked, x, noise)  # [members, 2]: NLL, KL
        lagrangians = [member.optimization.lagrangians(terms[i, 0], terms[i, 1]) for i, member in enumerate(members)]
        torch.stack([lagrangian.primal.lagrangian for lagrangian in lagrangians]).sum().backward()
        for lagrangian in lagrangians:
            if lagrangian.dual is not None:
                lagrangian.dual.backward()
        self._primal_step(members)
        for member in members:
            member.optimization.update(primal=False)
        return [member.optimization.terms(lagrangian) for member, lagrangian in zip(members, lagrangians, strict=True)]

    def _primal_step(self, members: Sequence[Trainee]) -> None:
        """One step of every member's primal parameters with one optimizer: its state is the members' own.

        The members' optimizers share their type and settings (:func:`bank_key`) and are elementwise
        (Adam, Adagrad, SGD), so one of them over all members' parameters takes each member's own step,
        in one multi-tensor (``foreach``, a GPU's default) update instead of one per member. Its state
        for each parameter is the very dict of that member's optimizer (re-linked every step, since
        loading a checkpoint replaces it), so a member's checkpoint holds its own optimizer state.
        """
        optimizers = [member.optimization.primal_optimizer for member in members]
        key = tuple(id(optimizer) for optimizer in optimizers)
        if self._shared_primal is None or self._shared_primal[0] != key:
            first = optimizers[0]
            params = [p for optimizer in optimizers for group in optimizer.param_groups for p in group["params"]]
            self._shared_primal = key, type(first)(params, **first.defaults)
        shared = self._shared_primal[1]
        for optimizer in optimizers:
            for group in optimizer.param_groups:
                for param in group["params"]:
                    shared.state[param] = optimizer.state[param]
        shared.step()


def _advance_alone(members: Sequence[Trainee]) -> list[StepTerms]:
    """A threaded bank's thread: one step of each of ``members``, with one torch thread."""
    torch.set_num_threads(1)
    return [member.advance() for member in members]
