"""Hugging Face ``Trainer`` integration: a :class:`~prunekit.pruning.sparsifier.Sparsifier` as a
``TrainerCallback``, and a structured prune before ``Trainer.train()``.

::

    from prunekit.integrations.transformers import SparsityCallback
    from prunekit.pruning import AGP

    cb = SparsityCallback(method="gp", scope="linear", schedule=AGP(0, 400, 40, 0.0, 0.8))
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[cb])
    trainer.train()                                   # later: trainer.train(resume_from_checkpoint=True)

- ``on_init_end`` (or ``on_train_begin`` for a callback added later): the Sparsifier is built on the Trainer's
  model, masks of step 0 applied. ``on_train_begin``: the configuration is checked before the first step (a
  schedule ending after ``max_steps``, or no optimizer over the masked weights, is a
  :class:`~prunekit.errors.PrunekitError`), the Sparsifier attaches to the Trainer's optimizer (unwrapped from
  accelerate's ``AcceleratedOptimizer``), and on a resumed run (``state.global_step > 0``) its state comes back
  from ``prunekit_sparsifier.pt`` in the checkpoint folder (``<output_dir>/checkpoint-<global_step>``, or
  ``resume_from=``); under torch.distributed every rank takes rank 0's masks.
- ``on_pre_optimizer_step`` masks the gradients (after accumulation and the all-reduce); ``on_step_end`` steps
  the schedule to ``state.global_step`` (optimizer steps: gradient accumulation counts right).
- ``on_save`` writes the state (step, target, bool masks; ``torch.load(weights_only=True)`` reads it) into every
  checkpoint folder the Trainer writes; ``on_log`` adds ``sparsity`` / ``sparsity_target`` (and per layer with
  ``log_layers``) to the Trainer's logs and its ``state.log_history``; ``squash=True`` bakes the masks in at
  ``on_train_end``.

:func:`prune_before_training` is the structured path: channels/heads removed with
:func:`prunekit.prune_structured` before ``Trainer.train()``, the pruned model then trained and saved with
``save_pretrained``. Needs ``pip install 'prunekit[transformers]'``.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn as nn

from ..errors import CheckpointError, PrunekitError
from ..pruning.schedules import Schedule
from ..pruning.scope import Scope
from ..pruning.sparsifier import Sparsifier
from ._common import SparsifierSpec, advance_to, attach, broadcast_masks, check_masked_zero, require, sparsity_logs

_HF = require("transformers", "transformers", "prunekit.integrations.transformers")
from transformers import TrainerCallback  # noqa: E402  (after the check that names the extra)

__all__ = ["STATE_FILE", "SparsityCallback", "prune_before_training"]

log = logging.getLogger(__name__)

#: The file the callback writes into each Trainer checkpoint folder.
STATE_FILE = "prunekit_sparsifier.pt"


class SparsityCallback(TrainerCallback):
    """Weight-level sparsity (any prunekit method and schedule, N:M included) in a Hugging Face ``Trainer`` run.

    ``method`` / ``ratio`` / ``schedule`` / ``scope`` / ``**method_kwargs``: as
    :class:`~prunekit.pruning.sparsifier.Sparsifier`; schedule steps are the Trainer's optimizer steps
    (``state.global_step``). ``calibration_data``: the batches of a calibrated method (``wanda``,
    ``sparsegpt``), which prunes once when the callback is set up and then holds its masks.
    ``resume_from``: the checkpoint folder to take the state from on a resumed run (default:
    ``<output_dir>/checkpoint-<global_step>``, where ``resume_from_checkpoint`` found it). ``squash``: bake the
    masks in at the end of training (``callback.masks`` keeps them). ``log_layers``: log every layer's sparsity.
    """

    def __init__(self, method: str = "global", ratio: float | None = None,
                 schedule: Schedule | Callable[[int], float] | None = None,
                 scope: Scope | str | Iterable[str] | None = None, *, calibration_data: Any = None,
                 resume_from: str | os.PathLike | None = None, squash: bool = False, log_layers: bool = False,
                 **method_kwargs: Any):
        self.spec = SparsifierSpec(method=method, ratio=ratio, schedule=schedule, scope=scope,
                                   calibration_data=calibration_data, method_kwargs=dict(method_kwargs))
        self.resume_from = resume_from
        self.squash = bool(squash)
        self.log_layers = bool(log_layers)
        self.sparsifier: Sparsifier | None = None
        self.masks: dict[str, torch.Tensor] | None = None
        self.resumed_from: str | None = None

    # ------------------------------------------------------------------------------------------------ lifecycle
    def on_init_end(self, args: Any, state: Any, control: Any, model: nn.Module | None = None, **kwargs: Any) -> None:
        if model is not None and self.sparsifier is None:
            self.sparsifier = self.spec.build(model)  # before a checkpoint's weights are loaded

    def on_train_begin(self, args: Any, state: Any, control: Any, model: nn.Module | None = None,
                       optimizer: Any = None, **kwargs: Any) -> None:
        """Check the configuration, build or restore the Sparsifier, attach it (one error here, never mid-run)."""
        if model is None:
            raise PrunekitError("SparsityCallback: the Trainer passed no model to on_train_begin")
        self.spec.check_fits(state.max_steps, f"max_steps={state.max_steps}")
        sp = self.sparsifier
        squashed = sp is not None and not sp.attached and sp.step_count > 0
        if sp is None or sp.model is not model or squashed:
            self.sparsifier = self._build_keeping_weights(model) if state.global_step > 0 else self.spec.build(model)
        sp = self.sparsifier
        if state.global_step > 0:
            self._restore(args, state, model)
        broadcast_masks(sp)  # before attaching (which applies the masks): every rank holds rank 0's masks
        inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps the real one
        attach(sp, [inner] if isinstance(inner, torch.optim.Optimizer) else [], "the Trainer's optimizer")

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._sp().mask_gradients()  # after accumulation and DDP's all-reduce

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        advance_to(self._sp(), state.global_step, "Trainer")

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.sparsifier is None or not state.is_world_process_zero:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not folder.is_dir():
            log.warning("no checkpoint folder %s to save the Sparsifier state into", folder)
            return
        tmp = folder / (STATE_FILE + ".tmp")
        torch.save(self.sparsifier.state_dict(), tmp)
        os.replace(tmp, folder / STATE_FILE)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
               **kwargs: Any) -> None:
        if self.sparsifier is None or logs is None or "loss" not in logs and "train_loss" not in logs:
            return
        numbers = sparsity_logs(self.sparsifier, "sparsity", layers=self.log_layers)
        numbers = {("sparsity" if k == "sparsity/total" else k.replace("sparsity/target", "sparsity_target")): v
                   for k, v in numbers.items()}
        logs.update(numbers)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(numbers)  # the Trainer copied the logs before calling back

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        sp = self._sp()
        log.info("sparsity at the end of training: %.4f (target %.4f, step %d)", sp.sparsity()["sparsity"],
                 sp.target, sp.step_count)
        if self.squash:
            self.masks = sp.squash()

    # ---------------------------------------------------------------------------------------------- internals
    def _sp(self) -> Sparsifier:
        if self.sparsifier is None:
            raise PrunekitError("SparsityCallback was not set up: pass it to Trainer(callbacks=[...])")
        return self.sparsifier

    def _build_keeping_weights(self, model: nn.Module) -> Sparsifier:
        """Build on a model whose weights came from a checkpoint: the step-0 masks must not zero any of them."""
        saved = {n: p.detach().clone() for n, p in model.named_parameters()}
        sp = self.spec.build(model)
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(saved[n])
        return sp

    def _restore(self, args: Any, state: Any, model: nn.Module) -> None:
        folder = Path(self.resume_from) if self.resume_from is not None else \
            Path(args.output_dir) / f"checkpoint-{state.global_step}"
        path = folder / STATE_FILE
        if not path.is_file():
            raise CheckpointError(f"the Trainer resumes at step {state.global_step} but {path} does not exist: the "
                                  "checkpoint was not written with this callback, or it lies elsewhere "
                                  "(SparsityCallback(resume_from=<checkpoint folder>))")
        try:
            st = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, ValueError) as exc:
            raise CheckpointError(f"cannot read the Sparsifier state {path}: {exc}") from None
        if int(st.get("step", -1)) != int(state.global_step):
            raise CheckpointError(f"{path} holds the Sparsifier state of step {st.get('step')}, the Trainer "
                                  f"resumes at step {state.global_step}")
        check_masked_zero(st, model, str(path))
        self._sp().load_state_dict(st)
        self.resumed_from = str(folder)


def prune_before_training(model: nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor] | None = None,
                          **prune_kwargs: Any) -> nn.Module:
    """Structured prune of a model before ``Trainer.train()``: returns the physically smaller copy.

    ``example_inputs`` (e.g. a batch of ``input_ids``) and ``**prune_kwargs`` (``ratio``, ``target_macs``,
    ``criterion``, ``ignore`` ...) go to :func:`prunekit.prune_structured`, which proves the pruned model exact.
    Then train it with a new ``Trainer(model=pruned, ...)`` and save it with ``trainer.save_model()`` /
    ``pruned.save_pretrained(path)``. The result of the prune is kept on the model as ``prunekit_result``.

    On a Hugging Face model the heads (GQA groups whole), MLP and hidden widths go, alike in every layer, and
    ``pruned.config`` describes the result (``prunekit_result.info["hf"]["loadable"]``), so ``save_pretrained`` /
    ``from_pretrained`` round-trip.
    """
    from ..pruning.structured.pruner import prune_structured

    res = prune_structured(model, example_inputs, **prune_kwargs)
    pruned = res.model
    object.__setattr__(pruned, "prunekit_result", res)  # not a submodule: plain attribute
    before = sum(p.numel() for p in model.parameters())
    after = sum(p.numel() for p in pruned.parameters())
    log.info("structured prune before training: %d -> %d parameters (max |diff| %.2e)", before, after,
             res.info.get("max_abs_diff", float("nan")))
    return pruned
