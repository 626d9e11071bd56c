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
  ``functional_call``; each member's primal and dual Lagrangian is its own, and their sum is
  back-propagated once (cooper detaches λ in the one and the violation in the other). One
  optimizer per kind steps every member's parameters, and one every member's multipliers, each
  with the members' own state (:class:`SharedSteps`); then each multiplier is projected to its
  range. Everything per member is elementwise (Adam, Adagrad, SGD, the multiplier rules), so a
  member's numbers are its solo run's up to the rounding of the batched kernels.
* ``sequential``: each member takes its ordinary solo step in turn: bit for bit its solo run.
* ``threaded``: as ``sequential``, the members split between as many threads as the bank has torch
  threads, each thread stepping its members with one torch thread of its own: bit for bit each
  member's solo run at one thread (a sweep's point with ``--cpus-per-run 1``). On CPUs this keeps
  every core busy with whole steps, as one process per core does, in one process.

A bank of one takes the solo step (:meth:`Optimization.step`), unless it is stacked and compiled
(:meth:`Bank.compile`): then its step is compiled as a bank of many's is.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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

    def __init__(self, model: nn.Module, likelihood: nn.Module, precision: torch.dtype | None) -> None:
        super().__init__()
        self.model = model
        self.likelihood = likelihood
        self.precision = precision

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return torch.stack(vae_terms(self.model, self.likelihood, x, noise, precision=self.precision))


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
        self.terms_modules = [
            VAETerms(member.model, member.likelihood, member.optimization.precision) for member in self.members
        ]
        self._stacked_terms = vmap(self._member_terms, in_dims=(0, 0, 0))
        self._objective = self._stacked_objective
        self._shared_steps = SharedSteps(fused=device.type == "cuda")
        self.compiled = False
        self._pool: ThreadPoolExecutor | None = None

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
        """Compile the stacked step (stacked, a bank of one too), or else each member's model.

        The stacked step compiles to one graph for all members' terms and Lagrangians and one for its
        backward, CUDA graphs on a GPU. The shared optimizers step outside them, fused on a GPU (a few
        launches for all members): compiled, their step over every member's parameters took four times
        as long to compile as the rest of the step for 42 members (docs/benchmarks.md, "Run banks").
        """
        if self.strategy == "stacked":
            options = {"fallback_random": True, "triton.cudagraphs": self.members[0].device.type == "cuda"}
            self._objective = torch.compile(self._stacked_objective, options=options)
        else:
            for member in self.members:
                member.compile()
        self.compiled = True

    @property
    def _stacked_compiled(self) -> bool:
        """Whether the stacked step is compiled (a compiled stacked bank, of one member too)."""
        return self.strategy == "stacked" and self.compiled

    def drop(self, member: Trainee) -> None:
        """Take ``member`` out of the bank (it diverged); the others go on."""
        index = self.members.index(member)
        del self.members[index]
        del self.terms_modules[index]

    def advance(self, members: Sequence[Trainee]) -> list[StepTerms]:
        """One optimisation step of each of ``members`` (all of the bank's, or those still short of their
        steps) on its next batch; the terms stay on the device."""
        if self.strategy == "sequential" or (len(members) == 1 and not self._stacked_compiled):
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
        for member in members:
            member.optimization.zero_grad()
        modules = [self.terms_modules[self.members.index(member)] for member in members]
        objective, rows = self._objective(members, modules, x, noise)
        objective.backward()
        optimizers = [member.optimization.primal_optimizer for member in members]
        optimizers += [optimizer for member in members for optimizer in member.optimization.dual_optimizers]
        for optimizer in self._shared_steps.optimizers(optimizers):
            optimizer.step()
        self._shared_steps.adopt()
        for member in members:
            member.optimization.project_multipliers()
        return [member.optimization.step_terms(*rows[i]) for i, member in enumerate(members)]

    def _stacked_objective(
        self, members: Sequence[Trainee], modules: Sequence[VAETerms], x: torch.Tensor, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The sum of every member's primal and dual Lagrangian on its batch, and each member's detached NLL,
        KL and loss ``[members, 3]``.

        cooper's primal Lagrangian holds λ detached and its dual Lagrangian the violation detached, so one
        backward of the sum gives each parameter and each multiplier the gradient of its own Lagrangian.
        """
        names = [name for name, _ in modules[0].named_parameters()]
        member_params = [dict(module.named_parameters()) for module in modules]
        stacked = {name: torch.stack([params[name] for params in member_params]) for name in names}
        terms = self._stacked_terms(stacked, x, noise)  # [members, 2]: NLL, KL
        total = terms.new_zeros(())
        rows = []
        for i, member in enumerate(members):
            lagrangians = member.optimization.lagrangians(terms[i, 0], terms[i, 1])
            total = total + lagrangians.primal.lagrangian
            if lagrangians.dual is not None and lagrangians.dual.lagrangian is not None:
                total = total + lagrangians.dual.lagrangian
            misc = lagrangians.state.misc
            rows.append(torch.stack([misc["nll"], misc["kl"], lagrangians.primal.lagrangian.detach()]))
        return total, torch.stack(rows)


class SharedSteps:
    """One optimizer for many of one kind and settings, whose state is theirs: a bank steps all its members'
    parameters (and all their multipliers) in one update: a fused or multi-tensor (``foreach``) one on a GPU.

    The optimizers a bank's members hold are elementwise (Adam, Adagrad, SGD for the parameters; SGD and
    :class:`~constrained_vae.core.dual.PIAscent` for the multipliers), so one optimizer over the
    parameters of several, with the same settings, takes each one's own step. Its state for each
    parameter is the very dict of the optimizer that owns the parameter: linked before a step
    (:meth:`optimizers`, again whenever an owner's state was replaced, as loading a checkpoint does) and
    adopted by the owner after the step that made it (:meth:`adopt`), so a member's checkpoint holds
    exactly the optimizer state its own optimizer would have.
    """

    def __init__(self, *, fused: bool = False) -> None:
        """``fused``: the shared optimizers of the kinds torch has a fused kernel for on a GPU (:data:`FUSED`)
        take their step in it (one launch per chunk of parameters; it rounds unlike the owners' own step),
        with the owners' step counts moved to the parameters' device when linked, as the kernel needs."""
        self.fused = fused
        self._shared: list[_Shared] = []
        self._owners: list[torch.optim.Optimizer] = []  # the owners the shared optimizers were made for
        self._groups: list[Any] = []  # and their parameter groups then (loading a checkpoint replaces them)

    def optimizers(self, owners: Sequence[torch.optim.Optimizer]) -> list[torch.optim.Optimizer]:
        """The shared optimizers that step ``owners``' parameters, one per kind and settings, their state linked.

        They are made again only when the owners or their settings change (a member dropped, a checkpoint
        loaded), not at every step.
        """
        groups = [owner.param_groups for owner in owners]
        if not (_same(owners, self._owners) and _same(groups, self._groups)):
            kinds: dict[tuple[Any, ...], list[torch.optim.Optimizer]] = {}
            for owner in owners:
                kinds.setdefault((type(owner), repr(sorted(_settings(owner).items()))), []).append(owner)
            self._shared = [_Shared.of(kind, fused=self.fused and type(kind[0]) in FUSED) for kind in kinds.values()]
            self._owners, self._groups = list(owners), groups
        for one in self._shared:
            one.link()
        return [one.optimizer for one in self._shared]

    def adopt(self) -> None:
        """Give each owner the state a shared optimizer made for its parameters in the step just taken."""
        for one in self._shared:
            one.adopt()


FUSED = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)  # the optimizers torch fuses on a GPU


def _same(these: Sequence[Any], those: Sequence[Any]) -> bool:
    """Whether two sequences hold the very same objects."""
    return len(these) == len(those) and all(a is b for a, b in zip(these, those, strict=True))


def _settings(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The settings ``optimizer`` steps with that its constructor takes (its one parameter group's)."""
    (group,) = optimizer.param_groups
    accepted = inspect.signature(type(optimizer).__init__).parameters
    return {name: value for name, value in group.items() if name in accepted and name != "params"}


@dataclass
class _Shared:
    """A shared optimizer, the optimizers whose parameters it steps, and how far their states are linked."""

    optimizer: torch.optim.Optimizer
    owners: list[torch.optim.Optimizer]
    owner_of: dict[torch.Tensor, torch.optim.Optimizer]
    linked_states: list[Any] = dataclasses.field(default_factory=list)  # each owner's state, as last linked
    linked: int = 0  # the shared optimizer's entries known to the owners

    @classmethod
    def of(cls, owners: list[torch.optim.Optimizer], *, fused: bool) -> _Shared:
        owner_of = {p: owner for owner in owners for group in owner.param_groups for p in group["params"]}
        settings = _settings(owners[0]) | ({"fused": True, "foreach": None} if fused else {})
        return cls(type(owners[0])(list(owner_of), **settings), owners, owner_of)

    def link(self) -> None:
        """Make the shared state the owners' own, unless it already is."""
        if _same(self.linked_states, [owner.state for owner in self.owners]):
            return
        state: defaultdict[torch.Tensor, Any] = defaultdict(dict)
        for owner in self.owners:
            state.update(owner.state)
        (group,) = self.optimizer.param_groups
        if group.get("fused"):  # a loaded state keeps its step counts on the CPU (torch's rule for the owners)
            for param, param_state in state.items():
                step = param_state.get("step")
                if isinstance(step, torch.Tensor) and step.device != param.device:
                    param_state["step"] = step.to(param.device, torch.float32)
        self.optimizer.state = state
        self.linked_states = [owner.state for owner in self.owners]
        self.linked = len(state)

    def adopt(self) -> None:
        if len(self.optimizer.state) == self.linked:
            return
        for param, state in self.optimizer.state.items():
            owner = self.owner_of[param]
            if param not in owner.state:
                owner.state[param] = state
        self.linked = len(self.optimizer.state)


def _advance_alone(members: Sequence[Trainee]) -> list[StepTerms]:
    """A threaded bank's thread: one step of each of ``members``, with one torch thread."""
    torch.set_num_threads(1)
    return [member.advance() for member in members]
