"""Sparsity in any training loop: masks computed by prunekit's criteria, kept exact by tensor and optimizer hooks.

The lifecycle follows ``torch.ao.pruning``: prepare (construct) → ``attach(optimizer)`` → ``step()`` after each
optimizer step → ``squash()`` at the end::

    sp = Sparsifier(model, method="global", schedule=AGP(0, 1000, 100, 0.0, 0.9))
    sp.attach(optimizer)
    for x, y in data:
        loss_fn(model(x), y).backward()
        optimizer.step(); optimizer.zero_grad()
        sp.step()                      # advances the schedule; recomputes masks at its update steps
    masks = sp.squash()                # weights multiplied by the masks, hooks removed

- Criteria are the existing ones: ``method`` is any of :data:`~prunekit.pruning.unstructured.METHODS`
  (``prune_unstructured`` computes the masks; ``method_kwargs`` such as ``min_threshold``, ``seed``,
  ``allow_empty_layers`` go to it) or an N:M pattern (``"2:4"``, or ``"nm"`` with ``n=``, ``m=``;
  :func:`~prunekit.pruning.nm.nm_masks`, fixed once at construction).
- The schedule (:mod:`prunekit.pruning.schedules`) gives the target sparsity of each step; ``schedule=None`` means
  ``OneShot(ratio)``. Masks only grow: every recomputation is intersected with the current masks, so a pruned weight
  never comes back (ranking sees pruned weights as exact zeros, so the counts stay exact for the magnitude
  criteria; any excess is reported in ``notes``).
- Exact zeros with any optimizer: ``Tensor.register_post_accumulate_grad_hook`` zeroes the masked gradient entries
  after every accumulation (gradient accumulation and autocast included), so momentum and Adam moments of
  pruned weights stay 0 (under DDP the all-reduce may write ``.grad`` after the hook: call
  :meth:`Sparsifier.mask_gradients` before the step to keep that state at 0 too; the weights stay exact either
  way); ``Optimizer.register_step_post_hook`` re-applies the masks to the weights after every
  ``optimizer.step()`` (so weight decay, AdamW's decoupled decay or a resumed state cannot revive a weight). When
  masks grow, the optimizer state entries (momentum, ``exp_avg``, ``exp_avg_sq``, ...) of newly pruned weights are
  zeroed too. Under a ``GradScaler`` a skipped step changes no weight, so nothing is needed.
- ``state_dict()`` holds the step, the target in force and the masks (bool tensors) — plain tensors and primitives,
  so ``torch.save`` + ``torch.load(weights_only=True)`` round-trips it. To resume, rebuild model, optimizer and
  Sparsifier as before, then load the three state dicts (the model's after constructing the Sparsifier).

:class:`SparsifierHook` plugs a Sparsifier into prunekit's :class:`~prunekit.engine.trainer.Trainer`
(``hooks=[SparsifierHook(sp)]``): it attaches to the trainer's optimizer, steps after every optimizer step, lets
the trainer save the masks with every checkpoint and restores the schedule position on ``resume``.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Mapping

import torch
import torch.nn as nn

from ..engine.hooks import Hook
from ..errors import CheckpointError, PrunekitError, UnknownNameError
from .masks import Masks, check_masks, layer_sparsity, mask_counts
from .nm import DEFAULT_KINDS as NM_KINDS
from .nm import check_nm, nm_masks
from .schedules import OneShot, Schedule
from .scope import Scope, make_scope
from .unstructured import DEFAULT_KINDS, METHODS, prune_unstructured

__all__ = ["MaskHook", "Sparsifier", "SparsifierHook"]

_NM = re.compile(r"^(\d+):(\d+)$")
STATE_VERSION = 1


def _as_scope(scope: Scope | str | Iterable[str] | None, default: tuple[str, ...]) -> Scope | None:
    if scope is None or isinstance(scope, Scope):
        return scope
    return make_scope(scope, default_kinds=default)


class Sparsifier:
    """Weight masks for a model trained by any loop; see the module docstring.

    ``method``: a weight-level criterion (``layerwise``, ``global``, ``per-kind``, ``gp``, ``gpmt``, ``random``) or
    an N:M pattern (``"2:4"``; ``"nm"`` with ``n``/``m``). ``ratio``: the sparsity of a one-shot prune (the same as
    ``schedule=OneShot(ratio)``). ``schedule``: a :class:`~prunekit.pruning.schedules.Schedule` or any callable
    ``step -> sparsity``. ``scope``: a :class:`Scope`, or kinds such as ``"conv,linear"`` (default: the method's).
    The masks of step 0 are computed and applied at construction.

    >>> import torch, torch.nn as nn, prunekit
    >>> model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    >>> opt = torch.optim.AdamW(model.parameters(), lr=1e-2)      # decoupled weight decay cannot revive weights
    >>> sp = prunekit.Sparsifier(model, method="layerwise", schedule=prunekit.AGP(0, 8, 2, 0.0, 0.75)).attach(opt)
    >>> x, y = torch.randn(64, 16), torch.randint(0, 4, (64,))
    >>> for step in range(10):                                     # any training loop
    ...     nn.functional.cross_entropy(model(x), y).backward()
    ...     opt.step(); opt.zero_grad(); _ = sp.step()
    >>> st = sp.sparsity()
    >>> st["sparsity"], st["revived"]                              # 0.75 of 512 + 128 weights, none came back
    (0.75, 0)
    >>> sorted(sp.squash())                                        # bake the masks in, remove the hooks
    ['0.weight', '2.weight']
    """

    def __init__(self, model: nn.Module, method: str = "global", ratio: float | None = None,
                 schedule: Schedule | Callable[[int], float] | None = None,
                 scope: Scope | str | Iterable[str] | None = None, **method_kwargs: Any):
        self.model = model
        self.method_kwargs = dict(method_kwargs)
        self.nm: tuple[int, int] | None = None
        hit = _NM.match(str(method).strip())
        if hit or method == "nm":
            if hit:
                n, m = int(hit.group(1)), int(hit.group(2))
                for key in ("n", "m"):
                    if key in self.method_kwargs and self.method_kwargs.pop(key) != (n if key == "n" else m):
                        raise PrunekitError(f"method {method!r} contradicts {key}= given with it")
            else:
                n, m = self.method_kwargs.pop("n", 2), self.method_kwargs.pop("m", 4)
            self.nm = check_nm(n, m)
            if self.method_kwargs:
                raise PrunekitError(f"N:M sparsity takes no options {', '.join(sorted(self.method_kwargs))}")
            if ratio is not None or schedule is not None:
                raise PrunekitError(f"N:M sparsity ({self.nm[0]}:{self.nm[1]}) has a fixed sparsity of "
                                    f"{1 - self.nm[0] / self.nm[1]:g} per eligible layer: give no ratio or "
                                    "schedule (construct the Sparsifier when the N:M masks should start)")
            self.method = f"{self.nm[0]}:{self.nm[1]}"
            default_kinds = NM_KINDS
        elif method in METHODS:
            self.method = method
            default_kinds = DEFAULT_KINDS[method]
        else:
            raise UnknownNameError(f"unknown sparsifier method {method!r}; valid: {', '.join(METHODS)}, "
                                   "N:M such as '2:4', or 'nm'")
        self.scope = _as_scope(scope, default_kinds)
        if self.nm is None:
            if schedule is None:
                if ratio is None:
                    raise PrunekitError("give the Sparsifier a ratio (one-shot) or a schedule")
                schedule = OneShot(ratio)
            elif ratio is not None and abs(float(getattr(schedule, "final", ratio)) - float(ratio)) > 1e-12:
                raise PrunekitError(f"ratio {ratio} contradicts the schedule's final sparsity "
                                    f"{schedule.final}; give one of them")
            if not callable(schedule):
                raise PrunekitError(f"schedule must be a Schedule or a callable step -> sparsity, got {schedule!r}")
        self.schedule = schedule
        self._init_state(model)
        if self.nm is not None:
            res = nm_masks(model, *self.nm, scope=self.scope)
            self.report, self.notes = res, list(res.notes)
            self._target = 1.0 - self.nm[0] / self.nm[1]
            self._set_masks(res.masks)
        else:
            self._update(self._schedule_at(0), initial=True)

    def _init_state(self, model: nn.Module) -> None:
        self.model = model
        self.notes: list[str] = []
        self.report: Any = None
        self._step = 0
        self._target = 0.0
        self._masks: Masks = {}
        self._pruned: dict[str, torch.Tensor] = {}  # name -> ~mask on the parameter's device
        self._params = {n: p for n, p in model.named_parameters()}
        self._grad_handles: list[Any] = []
        self._optimizers: list[tuple[torch.optim.Optimizer, Any, bool]] = []
        self._squashed = False
        self._in_step = False

    @classmethod
    def from_masks(cls, model: nn.Module, masks: Mapping[str, torch.Tensor]) -> "Sparsifier":
        """A Sparsifier holding fixed ``masks`` (no criterion, no schedule; :meth:`step` changes nothing): what
        prunekit's :class:`~prunekit.engine.trainer.Trainer` uses (through :class:`MaskHook`) to keep a pruned
        model's weights at exactly zero, and what a user's loop can attach to finetune a pruned model.

        >>> import torch.nn as nn, prunekit
        >>> model = nn.Linear(4, 2)
        >>> sp = prunekit.Sparsifier.from_masks(model, {"weight": model.weight.abs() > 0.3})
        >>> sp.method, sp.step(), sp.sparsity()["revived"]
        ('fixed', False, 0)
        """
        self = cls.__new__(cls)
        self.method, self.method_kwargs, self.nm, self.scope, self.schedule = "fixed", {}, None, None, None
        self._init_state(model)
        self._set_masks(masks)
        pruned, total = mask_counts(self._masks)
        self._target = pruned / total if total else 0.0
        return self

    # ---------------------------------------------------------------------------------------------- properties
    @property
    def masks(self) -> Masks:
        """Parameter name -> bool tensor (True = kept), on the parameters' devices."""
        return dict(self._masks)

    @property
    def step_count(self) -> int:
        """How many times :meth:`step` has run (the schedule position)."""
        return self._step

    @property
    def target(self) -> float:
        """The target sparsity of the masks in force."""
        return self._target

    def __repr__(self) -> str:
        return (f"Sparsifier(method={self.method!r}, schedule={self.schedule!r}, step={self._step}, "
                f"target={self._target:.4g}, layers={len(self._masks)})")

    # ------------------------------------------------------------------------------------------------- masks
    def _schedule_at(self, step: int) -> float:
        t = float(self.schedule(step))
        if not 0.0 <= t <= 1.0:
            raise PrunekitError(f"schedule gave sparsity {t} at step {step}; must be in [0, 1]")
        return t

    def _set_masks(self, masks: Mapping[str, torch.Tensor]) -> list[str]:
        """Install ``masks`` (new dict), zero the weights and the optimizer state they prune; return names changed."""
        check_masks(self.model, masks)
        changed = []
        new: Masks = {}
        for name, m in masks.items():
            p = self._params[name]
            m = m.to(device=p.device, dtype=torch.bool)
            old = self._masks.get(name)
            if old is None or not torch.equal(old, m):
                changed.append(name)
            new[name] = m
        self._masks = new
        self._pruned = {name: ~m for name, m in new.items()}
        self.apply()
        self._zero_optimizer_state(changed)
        return changed

    def _sync_device(self) -> None:
        """Follow the parameters if the model was moved (``model.to(device)`` keeps the Parameter objects)."""
        for name, pr in list(self._pruned.items()):
            p = self._params[name]
            if pr.device != p.device:
                self._masks[name] = self._masks[name].to(p.device)
                self._pruned[name] = ~self._masks[name]

    @torch.no_grad()
    def apply(self) -> None:
        """Set every pruned weight to exactly +0.0 (what the optimizer hook does after each step)."""
        for name, pr in self._pruned.items():
            p = self._params[name]
            if pr.device != p.device:
                self._sync_device()
                pr = self._pruned[name]
            p.masked_fill_(pr, 0.0)

    @torch.no_grad()
    def mask_gradients(self) -> None:
        """Zero the gradient entries of pruned weights (what the gradient hooks do after each accumulation)."""
        for name, pr in self._pruned.items():
            g = self._params[name].grad
            if g is not None:
                g.masked_fill_(pr if pr.device == g.device else pr.to(g.device), 0.0)

    @torch.no_grad()
    def _zero_optimizer_state(self, names: Iterable[str]) -> None:
        for opt, _, _ in self._optimizers:
            for name in names:
                p = self._params[name]
                st = opt.state.get(p)
                if not st:
                    continue
                pr = self._pruned[name]
                for v in st.values():
                    if torch.is_tensor(v) and v.shape == p.shape:
                        v.masked_fill_(pr.to(v.device), 0)

    def _update(self, target: float, initial: bool = False) -> bool:
        """Recompute masks at ``target`` with the criterion, intersected with the current ones."""
        self.apply()  # pruned weights are exact zeros: the magnitude ranking takes them first
        res = prune_unstructured(self.model, self.method, target, scope=self.scope, apply=False,
                                 **self.method_kwargs)
        merged: Masks = {}
        for name, m in res.masks.items():
            old = self._masks.get(name)
            m = m.to(self._params[name].device)
            merged[name] = m if old is None else (m & old)
        extra = mask_counts(merged)[0] - res.report.total_pruned
        if extra > 0:
            self.notes.append(f"step {self._step}: {extra:,} weights beyond the target stay pruned (masks only "
                              f"grow; {self.method} chose some weights pruned earlier to keep)")
        self.report = res.report
        self._target = target
        changed = self._set_masks(merged)
        return bool(changed) and not initial

    # --------------------------------------------------------------------------------------------- lifecycle
    def _grad_hook(self, name: str) -> Callable[[torch.Tensor], None]:
        def hook(p: torch.Tensor) -> None:
            pr = self._pruned.get(name)
            if pr is not None and p.grad is not None:
                with torch.no_grad():
                    p.grad.masked_fill_(pr if pr.device == p.grad.device else pr.to(p.grad.device), 0.0)
        return hook

    def _step_hook(self, auto_step: bool) -> Callable[..., None]:
        def hook(optimizer, args, kwargs) -> None:
            self.apply()
            if auto_step and not self._in_step:
                self.step()
        return hook

    def attach(self, optimizer: torch.optim.Optimizer | None = None, auto_step: bool = False) -> "Sparsifier":
        """Keep pruned weights exactly zero from now on: gradient hooks on the masked parameters and, for
        ``optimizer``, a step post-hook that re-applies the masks after every ``optimizer.step()``.

        ``auto_step``: also call :meth:`step` after every ``optimizer.step()`` (then do not call it yourself).
        Attaching to several optimizers is allowed; attaching to the same one twice is a no-op. Returns self.
        """
        if self._squashed:
            raise PrunekitError("this Sparsifier was squashed; create a new one")
        self._sync_device()
        if not self._grad_handles:
            for name in self._masks:
                p = self._params[name]
                if not hasattr(p, "register_post_accumulate_grad_hook"):  # pragma: no cover - torch < 2.1
                    raise PrunekitError("Sparsifier needs torch >= 2.1 (Tensor.register_post_accumulate_grad_hook)")
                self._grad_handles.append(p.register_post_accumulate_grad_hook(self._grad_hook(name)))
        if optimizer is not None and not any(o is optimizer for o, _, _ in self._optimizers):
            handle = optimizer.register_step_post_hook(self._step_hook(auto_step))
            self._optimizers.append((optimizer, handle, auto_step))
            self._zero_optimizer_state(self._masks)
        self.apply()
        return self

    @property
    def attached(self) -> bool:
        return bool(self._grad_handles or self._optimizers)

    def step(self) -> bool:
        """Advance the schedule by one step; recompute (grow) the masks when its target rises. Returns whether
        the masks changed."""
        if self._squashed:
            raise PrunekitError("this Sparsifier was squashed; create a new one")
        self._in_step = True
        try:
            self._step += 1
            if self.nm is not None or self.schedule is None:  # N:M and fixed masks do not change
                return False
            t = self._schedule_at(self._step)
            if t > self._target:
                return self._update(t)
            return False
        finally:
            self._in_step = False

    def remove(self) -> None:
        """Detach every hook (gradient and optimizer); the masks are kept and the weights left as they are."""
        for h in self._grad_handles:
            h.remove()
        for _, h, _ in self._optimizers:
            h.remove()
        self._grad_handles = []
        self._optimizers = []

    def squash(self) -> Masks:
        """Bake the masks in (pruned weights set to 0.0), remove every hook, and return the masks (CPU)."""
        self.apply()
        self.remove()
        self._squashed = True
        return {k: v.detach().to("cpu") for k, v in self._masks.items()}

    # --------------------------------------------------------------------------------------------- reporting
    def sparsity(self) -> dict[str, Any]:
        """``{"step", "target", "sparsity", "pruned", "total", "revived", "layers": {name: fraction}}``.

        ``sparsity`` is the pruned fraction of the masked weights; ``revived`` counts pruned positions whose weight
        is not exactly 0.0 (always 0 while attached or after :meth:`apply`)."""
        pruned, total = mask_counts(self._masks)
        with torch.no_grad():
            revived = sum(int((self._params[name].detach()[pr.to(self._params[name].device)] != 0).sum())
                          for name, pr in self._pruned.items())
        return {"step": self._step, "target": self._target, "sparsity": pruned / total if total else 0.0,
                "pruned": pruned, "total": total, "revived": revived, "layers": layer_sparsity(self._masks)}

    # -------------------------------------------------------------------------------------------- state dict
    def _schedule_desc(self) -> Any:
        to_dict = getattr(self.schedule, "to_dict", None)
        return to_dict() if callable(to_dict) else None

    def state_dict(self) -> dict[str, Any]:
        """Step, target and masks (CPU bool tensors) plus the method/schedule description: tensors and primitives
        only (``torch.load(..., weights_only=True)`` reads it)."""
        return {"version": STATE_VERSION, "method": self.method, "step": self._step, "target": self._target,
                "schedule": self._schedule_desc(),
                "masks": {k: v.detach().to("cpu").clone() for k, v in self._masks.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume: restore the step, target and masks (applied to the weights at once, and to the optimizer state
        of the attached optimizers). The method must be the same; the masks must match the model's parameters."""
        if self._squashed:
            raise PrunekitError("this Sparsifier was squashed; create a new one")
        for key in ("method", "step", "target", "masks"):
            if key not in state:
                raise CheckpointError(f"sparsifier state has no {key!r} entry")
        if state["method"] != self.method:
            raise CheckpointError(f"sparsifier state is for method {state['method']!r}, not {self.method!r}")
        masks = dict(state["masks"])
        if set(masks) != set(self._masks):
            raise CheckpointError("sparsifier state masks other layers than this Sparsifier's scope: "
                                  f"{sorted(set(masks) ^ set(self._masks))[:5]}")
        if self._schedule_desc() is not None and state.get("schedule") not in (None, self._schedule_desc()):
            raise CheckpointError(f"sparsifier state was saved with schedule {state['schedule']}, this Sparsifier "
                                  f"has {self._schedule_desc()}")
        self._restore(int(state["step"]), float(state["target"]), masks)

    def _restore(self, step: int, target: float, masks: Mapping[str, torch.Tensor]) -> None:
        self._step, self._target = step, target
        self._masks = {}
        self._set_masks(masks)


class SparsifierHook(Hook):
    """Runs a :class:`Sparsifier` inside prunekit's :class:`~prunekit.engine.trainer.Trainer`.

    ``on_fit_start``: attach to ``trainer.optimizer`` (on ``resume``: restore the step and masks the trainer
    saved); ``after_backward``: mask the gradients once more (as :class:`MaskHook`; under
    DDP the all-reduced gradient is written after the tensor hooks ran); ``after_step``: :meth:`Sparsifier.step`.
    The current masks are ``trainer.masks``, so every checkpoint the trainer writes carries them; each epoch's log
    row gets ``sparsifier_step``/``sparsifier_target``/``sparsity``.
    Do not also pass ``masks=`` to the trainer: the Sparsifier owns the masks.
    """

    def __init__(self, sparsifier: Sparsifier):
        self.sparsifier = sparsifier

    def on_fit_start(self, trainer) -> None:
        sp = self.sparsifier
        if any(isinstance(h, MaskHook) for h in trainer.hooks):
            raise PrunekitError("a Trainer with masks= and a SparsifierHook: the Sparsifier owns the masks; "
                                "prune with the Sparsifier only (or train with the fixed masks only)")
        last = trainer.history[-1] if trainer.history else {}
        if "sparsifier_step" in last and trainer.masks:  # resumed run: continue where the saved epoch ended
            sp._restore(int(last["sparsifier_step"]), float(last["sparsifier_target"]), trainer.masks)
        sp.attach(trainer.optimizer)
        trainer.masks = sp.masks

    def after_backward(self, trainer) -> None:
        # again after backward: under DDP the gradient hooks may run before the all-reduce writes .grad
        self.sparsifier.mask_gradients()

    def after_step(self, trainer) -> None:
        if self.sparsifier.step():
            trainer.masks = self.sparsifier.masks

    def on_epoch_end(self, trainer, epoch: int, metrics: dict[str, Any]) -> None:
        sp = self.sparsifier
        metrics["sparsifier_step"] = sp.step_count
        metrics["sparsifier_target"] = sp.target
        metrics["sparsity"] = sp.sparsity()["sparsity"]


class MaskHook(Hook):
    """Keeps masked weights at exactly 0.0 during prunekit's training, through a fixed-mask :class:`Sparsifier`
    (:meth:`Sparsifier.from_masks`: the same object a user's own loop attaches).

    Gradients are masked before the step (so momentum/Adam state of pruned weights stays 0) and the weights are
    multiplied by the mask after the step (so weight decay, AdamW's decoupled decay, or a resumed optimizer state
    can never move them). Works the same under AMP and DDP: every rank applies the same mask.
    """

    def __init__(self, masks: Mapping[str, torch.Tensor]):
        self.masks = dict(masks)
        self.sparsifier: Sparsifier | None = None

    def set_masks(self, masks: Mapping[str, torch.Tensor]) -> None:
        """Replace the enforced masks (e.g. with those of a resumed run)."""
        self.masks = dict(masks)
        self.sparsifier = None

    def _sparsifier(self, model: nn.Module) -> Sparsifier:
        if self.sparsifier is None or self.sparsifier.model is not model:
            self.sparsifier = Sparsifier.from_masks(model, self.masks)  # checks the masks, applies them
        return self.sparsifier

    def on_fit_start(self, trainer) -> None:
        self.sparsifier = None
        self._sparsifier(trainer.module).apply()

    def after_backward(self, trainer) -> None:
        self._sparsifier(trainer.module).mask_gradients()

    def after_step(self, trainer) -> None:
        self._sparsifier(trainer.module).apply()
