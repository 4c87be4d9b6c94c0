"""PyTorch Lightning callbacks: weight-level sparsity through a Sparsifier, and structured pruning inside a fit.

``SparsityCallback`` runs a :class:`~prunekit.pruning.sparsifier.Sparsifier` in ``trainer.fit``::

    from prunekit.integrations.lightning import SparsityCallback
    from prunekit.pruning import AGP

    cb = SparsityCallback(method="gp", schedule=AGP(start_step=0, end_step=300, frequency=30, final=0.8))
    trainer = L.Trainer(max_epochs=10, callbacks=[cb], accumulate_grad_batches=2)
    trainer.fit(module)                       # later: trainer.fit(module, ckpt_path="last.ckpt") resumes exactly

- ``setup``: the Sparsifier is built on the LightningModule (or its attribute ``attr``) and the masks of step 0 are
  applied; on ``ckpt_path`` its state (step, target, masks) comes back from the checkpoint (``state_dict`` /
  ``load_state_dict`` of the callback) after the weights.
- ``on_fit_start``: attached to every optimizer ``configure_optimizers`` built that updates a masked weight; under
  torch.distributed (``strategy="ddp"``) every rank takes rank 0's masks. The configuration is checked here,
  before the first step: no optimizer over the masked weights, or a schedule that ends after the run's last
  optimizer step (``trainer.estimated_stepping_batches``), is a :class:`~prunekit.errors.PrunekitError`.
- The schedule counts optimizer steps: the Sparsifier is stepped until it equals ``trainer.global_step`` after each
  batch, so gradient accumulation (``accumulate_grad_batches``) and manual optimization count right.
  ``on_before_optimizer_step`` masks the gradients once more (after DDP's all-reduce, before clipping).
- Logged through the LightningModule (``self.log``): ``sparsity/total`` and ``sparsity/target`` every step;
  per layer ``sparsity/<param name>`` (``log_layers``) and ``sparsity/revived`` at each epoch end.
- ``squash=True``: the masks are baked in and the hooks removed at the end of fit (``callback.masks`` keeps them).

``StructuredPruningCallback`` removes channels with :func:`prunekit.prune_structured` at the start of epoch
``at_epoch`` (0: before the optimizers are built), swaps the pruned module in, rebuilds the optimizers and LR
schedulers through ``configure_optimizers`` (``trainer.strategy.setup_optimizers``) and, with ``save_to``,
saves the pruned model at the end of fit in prunekit's format (:func:`prunekit.save_model`).

Needs ``pip install 'prunekit[lightning]'`` (the ``lightning`` package, ``lightning.pytorch``).
"""
from __future__ import annotations

import copy
import logging
import os
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
import torch.nn as nn

from ..errors import CheckpointError, PrunekitError
from ..pruning.schedules import Schedule
from ..pruning.scope import Scope
from ..pruning.sparsifier import Sparsifier
from ._common import SparsifierSpec, advance_to, attach, broadcast_masks, check_masked_zero, require, sparsity_logs

_L = require("lightning.pytorch", "lightning", "prunekit.integrations.lightning")
from lightning.pytorch.callbacks import Callback  # noqa: E402  (after the check that names the extra)
from lightning.pytorch.core.optimizer import _MockOptimizer  # noqa: E402

__all__ = ["SparsityCallback", "StructuredPruningCallback"]

log = logging.getLogger(__name__)


def _module(pl_module: nn.Module, attr: str | None, who: str) -> nn.Module:
    if attr is None:
        return pl_module
    mod = pl_module
    for part in attr.split("."):
        mod = getattr(mod, part, None)
        if mod is None:
            raise PrunekitError(f"{who}: the LightningModule has no attribute {attr!r}")
    if not isinstance(mod, nn.Module):
        raise PrunekitError(f"{who}: {attr!r} of the LightningModule is a {type(mod).__name__}, not an nn.Module")
    return mod


def _set_module(pl_module: nn.Module, attr: str, new: nn.Module) -> None:
    parent_path, _, name = attr.rpartition(".")
    parent = _module(pl_module, parent_path or None, "StructuredPruningCallback")
    setattr(parent, name, new)


def _real_optimizers(trainer: Any) -> list[torch.optim.Optimizer]:
    return [o for o in trainer.optimizers if not isinstance(o, _MockOptimizer)]


class SparsityCallback(Callback):
    """Weight-level sparsity (any prunekit method and schedule, N:M included) in a Lightning ``fit``.

    ``method`` / ``ratio`` / ``schedule`` / ``scope`` / ``**method_kwargs``: as
    :class:`~prunekit.pruning.sparsifier.Sparsifier` (schedule steps are optimizer steps, ``trainer.global_step``).
    ``attr``: prune this attribute of the LightningModule (default: the whole module). ``calibration_data``: the
    batches of a calibrated method (``wanda``, ``sparsegpt``), which prunes once at ``setup`` (``ratio`` or ``n``,
    ``m``) and then holds its masks. ``squash``: bake the masks in at the end of fit.
    ``log_layers``: log every layer's sparsity too. See the module docstring for the lifecycle.
    """

    def __init__(self, method: str = "global", ratio: float | None = None,
                 schedule: Schedule | Callable[[int], float] | None = None,
                 scope: Scope | str | Iterable[str] | None = None, *, attr: str | None = None,
                 calibration_data: Any = None, squash: bool = False, log_layers: bool = True,
                 log_prefix: str = "sparsity", **method_kwargs: Any):
        self.spec = SparsifierSpec(method=method, ratio=ratio, schedule=schedule, scope=scope,
                                   calibration_data=calibration_data, method_kwargs=dict(method_kwargs))
        self.attr = attr
        self.squash = bool(squash)
        self.log_layers = bool(log_layers)
        self.log_prefix = log_prefix
        self.sparsifier: Sparsifier | None = None
        self.masks: dict[str, torch.Tensor] | None = None  # the squashed masks (CPU), with squash=True
        self._logs: dict[str, float] | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(method=self.spec.method, attr=self.attr)

    # ------------------------------------------------------------------------------------------------ lifecycle
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Build the Sparsifier on the model (before a checkpoint's weights and state are restored)."""
        if stage != "fit":
            return
        model = _module(pl_module, self.attr, "SparsityCallback")
        if self.sparsifier is None or self.sparsifier.model is not model or not self.sparsifier.attached:
            self.sparsifier = self.spec.build(model)
        self._logs = None

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        """Check the configuration and attach to the optimizers (one error here, never mid-run)."""
        sp = self._sp()
        total = trainer.estimated_stepping_batches
        why = f"max_steps={trainer.max_steps}, max_epochs={trainer.max_epochs}, " \
              f"accumulate_grad_batches={trainer.accumulate_grad_batches}"
        self.spec.check_fits(total, why)
        broadcast_masks(sp)  # first: attaching applies the masks, and DDP has just synced rank 0's weights
        attach(sp, _real_optimizers(trainer), "configure_optimizers")

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._advance(trainer)  # a resumed run: the loops (global_step) are restored by now

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: torch.optim.Optimizer) -> None:
        # after backward and DDP's all-reduce, before clipping: the pruned gradient entries (and so the
        # momentum / Adam moments of pruned weights) stay exactly 0
        self._sp().mask_gradients()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._advance(trainer) or self._logs is None:
            self._logs = sparsity_logs(self._sp(), self.log_prefix, layers=False)
        pl_module.log_dict(self._logs, on_step=True, on_epoch=False)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        logs = sparsity_logs(self._sp(), self.log_prefix, layers=self.log_layers, revived=True)
        logs = {k: v for k, v in logs.items() if not k.endswith(("/total", "/target"))}  # logged per step
        pl_module.log_dict(logs, on_step=False, on_epoch=True)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        sp = self._sp()
        log.info("sparsity at the end of fit: %.4f (target %.4f, step %d)", sp.sparsity()["sparsity"], sp.target,
                 sp.step_count)
        if self.squash:
            self.masks = sp.squash()

    # -------------------------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"sparsifier": self.sparsifier.state_dict()} if self.sparsifier is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore step, target and masks (called by Lightning after the checkpoint's weights are loaded)."""
        state = state_dict.get("sparsifier")
        if state is None:
            return
        sp = self._sp()
        check_masked_zero(state, sp.model, "the Lightning checkpoint")
        sp.load_state_dict(state)
        self._logs = None

    # ---------------------------------------------------------------------------------------------- internals
    def _sp(self) -> Sparsifier:
        if self.sparsifier is None:
            raise PrunekitError("SparsityCallback was not set up: pass it to Trainer(callbacks=[...]) and call "
                                "trainer.fit")
        return self.sparsifier

    def _advance(self, trainer: Any) -> bool:
        """Step the Sparsifier to ``trainer.global_step``; return whether the masks changed."""
        return advance_to(self._sp(), trainer.global_step, "trainer")


class StructuredPruningCallback(Callback):
    """Remove channels at the start of epoch ``at_epoch`` and continue with new optimizers: train → prune →
    finetune in one ``trainer.fit``.

    ``attr``: the LightningModule's attribute holding the network to prune (swapped for the pruned copy).
    ``ratio`` / ``target_macs`` / ``target_params``, ``criterion``, ``example_inputs`` / ``input_size`` and
    ``**prune_kwargs``: as :func:`prunekit.prune_structured` (``data`` for the ``taylor`` criterion). ``at_epoch=0``
    prunes in ``setup``, before ``configure_optimizers`` runs; a later epoch rebuilds the optimizers and LR
    schedulers by calling ``configure_optimizers`` again (their state starts fresh: the finetuning phase).
    ``save_to``: folder or ``.safetensors`` file for :func:`prunekit.save_model` at the end of fit (the network
    must be a prunekit model: ``create_model`` / ``build_model`` / ``load_model``). ``result`` holds the
    :class:`~prunekit.pruning.structured.pruner.StructuredResult` (``info["max_abs_diff"]``: the exactness proof).

    The configuration is tried at ``setup`` on the dense network (a prune that is not kept), so an untraceable
    model or an unreachable budget fails before training. Resuming (``ckpt_path``) from a checkpoint written after
    the prune re-applies the saved plan before Lightning loads the weights. Single process only for ``at_epoch``
    > 0 (under DDP, prune with ``at_epoch=0``).
    """

    def __init__(self, *, at_epoch: int = 0, attr: str = "model", ratio: float | None = None,
                 target_macs: float | None = None, target_params: float | None = None, criterion: str = "l1",
                 example_inputs: torch.Tensor | Sequence[torch.Tensor] | None = None,
                 input_size: Sequence[int] | None = None, data: Iterable | None = None,
                 save_to: str | os.PathLike | None = None, **prune_kwargs: Any):
        if isinstance(at_epoch, bool) or not isinstance(at_epoch, int) or at_epoch < 0:
            raise PrunekitError(f"at_epoch must be an integer >= 0, got {at_epoch!r}")
        if sum(v is not None for v in (ratio, target_macs, target_params)) != 1:
            raise PrunekitError("StructuredPruningCallback needs exactly one of ratio, target_macs, target_params")
        if criterion == "taylor" and data is None:
            raise PrunekitError("criterion 'taylor' needs data= (a few (x, y) batches)")
        self.at_epoch = at_epoch
        self.attr = attr
        self.save_to = save_to
        self.prune_kwargs = dict(prune_kwargs, ratio=ratio, target_macs=target_macs, target_params=target_params,
                                 criterion=criterion, input_size=input_size, data=data)
        self.example_inputs = example_inputs
        self.result: Any = None
        self.step_plan: dict[str, Any] | None = None
        self.pruned_at: dict[str, int] | None = None  # {"epoch", "global_step"} of the prune
        self.saved: str | None = None
        self._wrapped: Any = None
        self._dense: nn.Module | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(attr=self.attr, at_epoch=self.at_epoch)

    def _prune(self, model: nn.Module, verify: bool = True, criterion: str | None = None) -> Any:
        from ..pruning.structured.pruner import prune_structured

        kw = dict(self.prune_kwargs, verify=verify)
        if criterion is not None:
            kw["criterion"], kw["data"] = criterion, None
        return prune_structured(model, self.example_inputs, **kw)

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Check the configuration on the dense network; prune now with ``at_epoch=0``."""
        if stage != "fit":
            return
        model = _module(pl_module, self.attr, "StructuredPruningCallback")
        if self.save_to is not None:
            from ..checkpoint import model_meta

            model_meta(model)  # raises now if the network cannot be saved in prunekit's format
        if self.at_epoch > 0 and trainer.world_size > 1:
            raise PrunekitError("StructuredPruningCallback(at_epoch > 0) runs in a single process; under "
                                f"{type(trainer.strategy).__name__} with {trainer.world_size} processes prune "
                                "before fit (at_epoch=0)")
        if self.at_epoch > 0 and trainer.max_epochs is not None and 0 <= trainer.max_epochs <= self.at_epoch:
            raise PrunekitError(f"the prune at epoch {self.at_epoch} is never reached: max_epochs="
                                f"{trainer.max_epochs}")
        sparsity = [i for i, cb in enumerate(trainer.callbacks) if isinstance(cb, SparsityCallback)]
        if sparsity and (self.at_epoch > 0 or sparsity[0] < trainer.callbacks.index(self)):
            raise PrunekitError("StructuredPruningCallback with a SparsityCallback: prune before fit (at_epoch=0) and "
                                "list the StructuredPruningCallback first, so the Sparsifier is built on the pruned "
                                "network")
        # a resumed fit: put the saved plan back before Lightning loads the (pruned) weights
        self._wrap_load_hook(pl_module)
        if self.step_plan is not None:  # already pruned in an earlier fit of this callback
            return
        if self.at_epoch == 0:
            self._prune_now(trainer, pl_module, rebuild_optimizers=False)
        else:  # try the configuration now (a cheap criterion; the result is dropped)
            crit = "l1" if self.prune_kwargs["criterion"] == "taylor" else None
            self._prune(model, verify=False, criterion=crit)

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self._dense = None

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if self.step_plan is None and trainer.current_epoch >= self.at_epoch:
            self._prune_now(trainer, pl_module, rebuild_optimizers=True)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if self.save_to is not None and trainer.is_global_zero:
            from ..checkpoint import save_model

            extra = {"pruned_at": self.pruned_at} if self.pruned_at else None
            self.saved = str(save_model(_module(pl_module, self.attr, "StructuredPruningCallback"), self.save_to,
                                        extra=extra))
            log.info("saved the pruned model to %s", self.saved)

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if self._wrapped is not None and pl_module.__dict__.get("on_load_checkpoint") is self._wrapped:
            del pl_module.__dict__["on_load_checkpoint"]
        self._wrapped = None

    # ---------------------------------------------------------------------------------------------- internals
    def _prune_now(self, trainer: Any, pl_module: Any, rebuild_optimizers: bool) -> None:
        model = _module(pl_module, self.attr, "StructuredPruningCallback")
        res = self._prune(model)
        _set_module(pl_module, self.attr, res.model)
        self._dense = None if rebuild_optimizers else model  # kept until fit starts (a resume may re-plan)
        self.result = res
        self.step_plan = res.step_plan
        self.pruned_at = {"epoch": int(trainer.current_epoch), "global_step": int(trainer.global_step)}
        if rebuild_optimizers:
            trainer.strategy.setup_optimizers(trainer)
            if not trainer.optimizers:
                raise PrunekitError("configure_optimizers returned no optimizer after the structured prune")
        before = sum(p.numel() for p in model.parameters())
        after = sum(p.numel() for p in res.model.parameters())
        log.info("structured prune at epoch %d (step %d): %d -> %d parameters, max |diff| %.2e",
                 trainer.current_epoch, trainer.global_step, before, after, res.info.get("max_abs_diff", float("nan")))

    def _wrap_load_hook(self, pl_module: Any) -> None:
        original = pl_module.on_load_checkpoint
        key = self.state_key

        def on_load_checkpoint(checkpoint: dict[str, Any]) -> None:
            state = (checkpoint.get("callbacks") or {}).get(key) or {}
            saved = state.get("step_plan")
            if saved is not None and self.step_plan is None:
                self._restore_structure(pl_module, state, _module(pl_module, self.attr, "StructuredPruningCallback"))
            elif saved is not None and saved != self.step_plan and self._dense is not None:
                self._restore_structure(pl_module, state, self._dense)  # pruned in setup: use the saved plan
            original(checkpoint)

        self._wrapped = on_load_checkpoint
        pl_module.on_load_checkpoint = on_load_checkpoint

    def _restore_structure(self, pl_module: Any, state: Mapping[str, Any], dense: nn.Module) -> None:
        from ..pruning.structured.pruner import rebuild

        pruned, _ = rebuild(dense, copy.deepcopy(dict(state["step_plan"])))
        self.result = None
        _set_module(pl_module, self.attr, pruned)
        self.step_plan = dict(state["step_plan"])
        self.pruned_at = dict(state.get("pruned_at") or {}) or None

    def state_dict(self) -> dict[str, Any]:
        return {"step_plan": self.step_plan, "pruned_at": self.pruned_at}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("step_plan") is not None and self.step_plan is None:
            raise CheckpointError("the checkpoint holds a structured prune that was not re-applied before its "
                                  "weights were loaded (StructuredPruningCallback must be set up by the same fit)")
