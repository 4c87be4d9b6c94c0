"""What the Lightning and Hugging Face callbacks share: the Sparsifier's configuration, checked before training
starts, the optimizer checks, the mask broadcast under torch.distributed and the logged numbers.

Imports only torch and prunekit (the frameworks are imported by the integration modules themselves).
"""
from __future__ import annotations

import importlib
import logging
import re
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
import torch.nn as nn

from ..errors import CheckpointError, PrunekitError
from ..pruning.masks import layer_sparsity, mask_counts
from ..pruning.schedules import Schedule
from ..pruning.scope import Scope, make_scope
from ..pruning.sparsifier import Sparsifier
from ..pruning.unstructured import METHODS

log = logging.getLogger(__name__)

#: Weight-level methods that rank weights with calibration inputs (Wanda, SparseGPT): they need ``calibration_data``.
CALIBRATED_METHODS = ("wanda", "sparsegpt")
_NM = re.compile(r"^\d+:\d+$")


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import ``module`` or raise one :class:`PrunekitError` naming the prunekit extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise PrunekitError(f"{what} needs the {module!r} package, which is not installed: "
                            f"pip install 'prunekit[{extra}]'") from exc


@dataclass
class SparsifierSpec:
    """How to build the :class:`Sparsifier` once the model exists (the callbacks' arguments), validated at once.

    ``method``: a weight-level method (``layerwise``, ``global``, ``per-kind``, ``gp``, ``gpmt``, ``random``), an N:M
    pattern (``"2:4"``, ``"nm"``) or a calibrated method (``wanda``, ``sparsegpt``: needs ``calibration_data``).
    ``ratio`` / ``schedule`` / ``scope`` / ``method_kwargs``: as :class:`Sparsifier`.
    """

    method: str = "global"
    ratio: float | None = None
    schedule: Schedule | Callable[[int], float] | None = None
    scope: Scope | str | Iterable[str] | None = None
    calibration_data: Any = None
    method_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        method = str(self.method).strip()
        nm = bool(_NM.match(method)) or method == "nm"
        if method in CALIBRATED_METHODS:
            if self.calibration_data is None:
                raise PrunekitError(f"method {method!r} ranks weights with calibration inputs: give "
                                    "calibration_data= (a few batches the model accepts)")
        elif not nm and method not in METHODS:
            raise PrunekitError(f"unknown sparsity method {method!r}; valid: {', '.join(METHODS)}, N:M such as "
                                f"'2:4' or 'nm', or a calibrated method ({', '.join(CALIBRATED_METHODS)})")
        if method in CALIBRATED_METHODS:
            if self.schedule is not None:
                raise PrunekitError(f"calibrated method {method!r} prunes once, when fit starts (then the masks are "
                                    "held): give ratio= or n=, m=, not a schedule")
            if self.ratio is None and not ("n" in self.method_kwargs and "m" in self.method_kwargs):
                raise PrunekitError(f"calibrated method {method!r} needs ratio= (or n=, m= for N:M)")
        elif nm and (self.ratio is not None or self.schedule is not None):
            raise PrunekitError(f"N:M sparsity ({method}) has a fixed pattern: give no ratio or schedule")
        if not nm and method not in CALIBRATED_METHODS and self.ratio is None and self.schedule is None:
            raise PrunekitError("give a ratio (one-shot at the first step) or a schedule, e.g. "
                                "AGP(start_step=0, end_step=1000, frequency=100, initial=0.0, final=0.8)")
        if self.schedule is not None and not callable(self.schedule):
            raise PrunekitError(f"schedule must be a Schedule or a callable step -> sparsity, got {self.schedule!r}")
        self.method = method

    def build(self, model: nn.Module) -> Sparsifier:
        """The Sparsifier for ``model`` (masks of step 0 computed and applied).

        A calibrated method prunes here, once (``prune_unstructured(..., data=calibration_data)``: Wanda masks, or
        SparseGPT masks plus its reconstructed weights), and the Sparsifier holds those masks fixed."""
        if self.method in CALIBRATED_METHODS:
            from ..pruning.unstructured import prune_unstructured

            scope = self.scope
            if scope is not None and not isinstance(scope, Scope):
                scope = make_scope(scope, default_kinds=("conv", "linear"))
            res = prune_unstructured(model, self.method, self.ratio, scope=scope, data=self.calibration_data,
                                     apply=True, **self.method_kwargs)
            sp = Sparsifier.from_masks(model, res.masks)
            sp.report = res.report
            return sp
        return Sparsifier(model, method=self.method, ratio=self.ratio, schedule=self.schedule, scope=self.scope,
                          **self.method_kwargs)

    def last_update_step(self) -> int | None:
        """The optimizer step at which the schedule reaches its final sparsity (None: fixed masks or unknown)."""
        sched = self.schedule
        if sched is None:
            return 0 if self.ratio is not None else None
        steps = getattr(sched, "update_steps", None)
        if not callable(steps):
            return None
        try:
            got = list(steps())
        except NotImplementedError:
            return None
        return max(got) if got else None

    def check_fits(self, total_steps: float, what: str) -> None:
        """Raise if the schedule ends after the last optimizer step of the run (``total_steps``; ``what`` says
        where that number comes from)."""
        last = self.last_update_step()
        if last is None or total_steps is None or total_steps < 0 or total_steps == float("inf"):
            return  # unbounded or unknown length (an iterable without len and no max_steps)
        if last > total_steps:
            final = getattr(self.schedule, "final", self.ratio)
            raise PrunekitError(f"the sparsity schedule reaches its final sparsity {final} at optimizer step {last}, "
                                f"but this run makes only {int(total_steps)} optimizer steps ({what}); end the "
                                f"schedule by step {int(total_steps)} or train longer")


def model_params(optimizers: Sequence[torch.optim.Optimizer]) -> set[int]:
    """ids of every parameter the optimizers update."""
    return {id(p) for opt in optimizers for g in opt.param_groups for p in g["params"]}


def attach(sp: Sparsifier, optimizers: Sequence[torch.optim.Optimizer], where: str) -> list[torch.optim.Optimizer]:
    """Attach ``sp`` to every optimizer that updates a masked parameter; raise if none does."""
    params = dict(sp.model.named_parameters())
    masked = {id(params[name]) for name in sp.masks}
    used = [opt for opt in optimizers if model_params([opt]) & masked]
    if not used:
        raise PrunekitError(f"no optimizer to attach the Sparsifier to: {where} updates none of the "
                            f"{len(masked)} masked parameters (configure an optimizer over the model's parameters)")
    for opt in used:
        sp.attach(opt)
    return used


def dist_world() -> int:
    """World size of an initialised torch.distributed process group (1 without one)."""
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def broadcast_masks(sp: Sparsifier) -> bool:
    """Under torch.distributed, make every rank hold rank 0's masks; return whether this rank's differed.

    Ranks train identical weights, so the masks agree; the broadcast makes that hold by construction (models
    initialised differently per rank before DDP's first broadcast, non-deterministic kernels)."""
    if dist_world() == 1:
        return False
    dist = torch.distributed
    masks = sp.masks
    backend = dist.get_backend()
    differ = False
    new = {}
    for name in sorted(masks):
        m = masks[name]
        dev = m.device if backend != "gloo" else torch.device("cpu")
        t = m.to(device=dev, dtype=torch.uint8).contiguous()
        dist.broadcast(t, src=0)
        got = t.to(device=m.device, dtype=torch.bool)
        differ = differ or not torch.equal(got, m)
        new[name] = got
    if differ:
        log.warning("rank %d held masks different from rank 0's; using rank 0's", dist.get_rank())
        state = sp.state_dict()
        state["masks"] = new
        sp.load_state_dict(state)
    return differ


def check_masked_zero(sp_state: Mapping[str, Any], model: nn.Module, source: str) -> None:
    """Raise if the saved masks prune weights that are not 0.0 in ``model`` (state from another checkpoint)."""
    params = dict(model.named_parameters())
    bad = []
    for name, m in sp_state.get("masks", {}).items():
        p = params.get(name)
        if p is None:
            bad.append(f"{name} (no such parameter)")
            continue
        if tuple(p.shape) != tuple(m.shape):
            bad.append(f"{name} (mask {tuple(m.shape)}, weight {tuple(p.shape)})")
            continue
        with torch.no_grad():
            if bool((p.detach()[~m.to(device=p.device, dtype=torch.bool)] != 0).any()):
                bad.append(name)
    if bad:
        raise PrunekitError(f"the Sparsifier state in {source} does not belong to these weights: its masks prune "
                            f"non-zero weights of {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}")


def sparsity_logs(sp: Sparsifier, prefix: str = "sparsity", layers: bool = True,
                  revived: bool = False) -> dict[str, float]:
    """The numbers the callbacks log: ``{prefix}/total``, ``/target``, per-layer fractions, optionally ``/revived``."""
    pruned, total = mask_counts(sp.masks)
    out = {f"{prefix}/total": pruned / total if total else 0.0, f"{prefix}/target": float(sp.target)}
    if layers:
        out.update({f"{prefix}/{name}": float(v) for name, v in layer_sparsity(sp.masks).items()})
    if revived:
        out[f"{prefix}/revived"] = float(sp.sparsity()["revived"])
    return out


def advance_to(sp: Sparsifier, global_step: int, who: str) -> bool:
    """Step ``sp`` up to the training loop's ``global_step`` (its optimizer steps); share the masks across ranks
    when they changed and return whether they did. A Sparsifier ahead of the loop is state from another run."""
    if sp.step_count > global_step:
        raise CheckpointError(f"the Sparsifier is at step {sp.step_count}, the {who} at global step {global_step}: "
                              "its state is from another run or checkpoint")
    changed = False
    while sp.step_count < global_step:
        changed = sp.step() or changed
    if changed:
        broadcast_masks(sp)
    return changed
