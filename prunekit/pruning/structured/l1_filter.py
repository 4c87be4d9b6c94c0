"""L1-norm filter pruning (Li et al. 2017), one-shot named/user plans and iterative rounds (REFERENCE §4).

Importance of a filter = L1 norm of its weights over (in, kh, kw), computed on the weights of the model being
pruned. A layer with ratio ``p`` keeps the top ``floor(out·(1−p))`` filters (ties: lower index first); the
kept filters stay in their original order. ``criterion="random"`` is the control (seed 002, claim (e)): the same
per-layer counts, hence the same widths, but the kept filters drawn uniformly at random from a private
``torch.Generator`` seeded by ``seed`` (one generator for all layers and rounds). The paper's plans prune the
*simple* groups of the dependency graph (one conv, its BN, its consumers): in residual nets that is each block's
first conv, since every other conv feeds a residual sum; in VGG every conv. Stages are the graph's spatial
resolutions. For any other model and for coupled groups (residual streams), use
:func:`~prunekit.pruning.structured.pruner.prune_structured`.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn as nn

from ...errors import PrunekitError, UnknownNameError, check_number, check_range
from ...models import NamedPlan, list_models, model_info, named_plan, named_plans
from .graph import DependencyGraph, Group
from .pruner import Keep, StructuredResult, finish, graph_for
from .selection import guard_empty, keep_count, top_units

#: Li et al.'s named plans by name (vgg16-A, resnet56-A/B, resnet110-A/B): read from the model registry, the one
#: place for per-model knowledge (:func:`prunekit.models.named_plan`).
NAMED_PLANS: dict[str, NamedPlan] = named_plans()


def _match(groups: Sequence[Group], names: Sequence[str], what: str) -> set[str]:
    by_alias = {a: g.name for g in groups for a in g.aliases}
    out = set()
    for n in names:
        n = n.strip()
        if not n:
            continue
        if n not in by_alias:
            examples = ", ".join(list(dict.fromkeys(g.aliases[1] if len(g.aliases) > 1 else g.name
                                                    for g in groups))[:4])
            raise PrunekitError(f"{what}: no prunable layer named {n!r} (examples: {examples}, ...)")
        out.add(by_alias[n])
    return out


def layer_ratios(groups: Sequence[Group], *, stage_ratios: Sequence[float] | None = None,
                 ratio: float | None = None, layers: Sequence[str] = (), skip: Sequence[str] = (),
                 skip_ids: Sequence[int] = ()) -> dict[str, float]:
    """Pruning ratio of every group.

    ``stage_ratios``: one ratio per stage (or one for all); ``ratio`` with ``layers``: only the named layers;
    ``skip`` (layer/block names) and ``skip_ids`` (1-based conv ids) are kept whole.
    """
    n_stages = max(g.stage for g in groups) + 1
    if stage_ratios is not None:
        stage_ratios = [float(r) for r in stage_ratios]
        if len(stage_ratios) == 1:
            stage_ratios = stage_ratios * n_stages
        if len(stage_ratios) != n_stages:
            raise PrunekitError(f"--ratios needs 1 or {n_stages} values (one per stage), got {len(stage_ratios)}")
        for r in stage_ratios:
            check_range("ratio", r, 0.0, 1.0, high_open=True)
    if ratio is not None:
        check_range("ratio", ratio, 0.0, 1.0, high_open=True)
    only = _match(groups, layers, "layers") if layers else None
    skipped = _match(groups, skip, "--skip")
    ids = {g.layer_id: g.name for g in groups}
    for i in skip_ids:
        if i not in ids:
            raise PrunekitError(f"skip id {i} is not the first conv of a block (valid: {sorted(ids)[:5]}...)")
        skipped.add(ids[i])
    out = {}
    for g in groups:
        if g.name in skipped or (only is not None and g.name not in only):
            continue
        r = stage_ratios[g.stage] if stage_ratios is not None else (ratio or 0.0)
        if only is not None and ratio is not None:
            r = ratio
        if r > 0:
            out[g.name] = r
    return out


def filter_norms(conv: nn.Conv2d) -> torch.Tensor:
    """L1 norm of every output filter (float64, on CPU)."""
    return conv.weight.detach().abs().to("cpu", torch.float64).flatten(1).sum(1)


def top_filters(norms: torch.Tensor, n_keep: int) -> list[int]:
    """Indexes of the ``n_keep`` largest norms (ties: lower index first), in increasing order."""
    return top_units(norms.numpy() if isinstance(norms, torch.Tensor) else norms, n_keep)


def l1_groups(model: nn.Module, input_size: Sequence[int] | None = None) -> tuple[DependencyGraph, list[Group]]:
    """The dependency graph of ``model`` and its groups that Li et al.'s plans prune (simple conv groups)."""
    graph = graph_for(model, input_size)
    # Li et al. prune a conv's filters where they feed one layer: every conv of a VGG, the first conv of every
    # residual block (the others feed a residual sum; a stem feeding both branches of a block has two consumers)
    groups = [g for g in graph.groups if g.simple and g.producer_types == ("conv",) and len(g.consumers) == 1]
    if not groups:
        raise PrunekitError(f"{getattr(model, 'prunekit_name', None) or type(model).__name__} has no conv whose "
                            "filters can be removed on their own (every channel feeds a residual sum, a channel "
                            "selection or the output); use network slimming or prune_structured")
    return graph, groups


FILTER_CRITERIA = ("l1", "random")


def _check_criterion(criterion: str) -> None:
    if criterion not in FILTER_CRITERIA:
        raise UnknownNameError(f"unknown filter criterion {criterion!r} for the L1-filter rules; valid: "
                               f"{', '.join(FILTER_CRITERIA)}")


@torch.no_grad()
def l1_keep(model: nn.Module, groups: Sequence[Group], ratios: Mapping[str, float], *,
            strict_empty: bool = False, notes: list[str] | None = None, criterion: str = "l1",
            generator: torch.Generator | None = None) -> Keep:
    """Kept filters of every group with a ratio > 0 (filter indexes of the group's conv): the largest L1 norms, or
    with ``criterion="random"`` the same number drawn uniformly by ``generator`` (seed 0 if None)."""
    _check_criterion(criterion)
    notes = notes if notes is not None else []
    if criterion == "random" and generator is None:
        generator = torch.Generator().manual_seed(0)
    mods = dict(model.named_modules())
    keep: Keep = {}
    for g in groups:
        if g.name not in ratios:
            continue
        n_keep = keep_count(g.size, ratios[g.name])
        if criterion == "random":
            perm = torch.randperm(g.size, generator=generator)
            kept, best = sorted(perm[:n_keep].tolist()), int(perm[0])
        else:
            norms = filter_norms(mods[g.conv])
            kept, best = top_filters(norms, n_keep), int(torch.argmax(norms))
        keep[g.name] = guard_empty(g, kept, best, strict=strict_empty,
                                   what=f"{'random' if criterion == 'random' else 'L1'}-filter pruning at ratio "
                                        f"{ratios[g.name]}", notes=notes)
    return keep


def _generator(criterion: str, seed: int, generator: torch.Generator | None) -> torch.Generator | None:
    if criterion != "random" or generator is not None:
        return generator
    return torch.Generator().manual_seed(int(seed))


def resolve_named_plan(name: str) -> NamedPlan:
    """The named plan ``name`` (vgg16-A, resnet56-A/B, resnet110-A/B), from the model registry."""
    return named_plan(name)


def prune_l1_filter(model: nn.Module, *, plan: str | None = None, ratios: Sequence[float] | None = None,
                    skip: Sequence[str] = (), layers: Sequence[str] = (), ratio: float | None = None,
                    strict_empty: bool = False, input_size: Sequence[int] | None = None,
                    verify: bool = True, criterion: str = "l1", seed: int = 0,
                    generator: torch.Generator | None = None) -> StructuredResult:
    """One-shot L1-norm filter pruning by a named ``plan`` or by per-stage ``ratios`` / ``skip`` (user plan).

    ``criterion="random"``: the same widths, kept filters drawn at random (``generator``, else seeded by ``seed``).

    Example::

        res = prune_l1_filter(model, ratios=[0.3, 0.3, 0.5], skip=["layer3.0"], input_size=(3, 32, 32))
        res.model.prunekit_cfg, res.info["max_abs_diff"]
    """
    _check_criterion(criterion)
    graph, groups = l1_groups(model, input_size)
    skip_ids: tuple[int, ...] = ()
    if plan is not None:
        np_ = resolve_named_plan(plan)
        name = getattr(model, "prunekit_name", None)
        if name is not None and name != np_.model:
            raise PrunekitError(f"plan {plan!r} is defined for {np_.model}, not {name}")
        ratios = ratios if ratios is not None else (np_.stage_ratios or None)
        layers = layers or np_.layers
        ratio = ratio if ratio is not None else (np_.ratio if np_.layers else None)
        skip_ids = np_.skip_ids
    elif ratios is None and ratio is None:
        raise PrunekitError("L1-filter pruning needs --plan NAME or --ratios r1,r2,r3")
    per_layer = layer_ratios(groups, stage_ratios=ratios, ratio=ratio, layers=layers, skip=skip, skip_ids=skip_ids)
    notes: list[str] = []
    keep = l1_keep(model, groups, per_layer, strict_empty=strict_empty, notes=notes, criterion=criterion,
                   generator=_generator(criterion, seed, generator))
    info = {"plan": plan, "ratios": per_layer, "criterion": criterion}
    return _verified(model, finish(graph, groups, keep, _method_name("l1-filter", criterion), notes, info), graph,
                     verify)


def _method_name(base: str, criterion: str) -> str:
    return base if criterion == "l1" else base.replace("l1-", f"{criterion}-")


def _verified(model: nn.Module, res: StructuredResult, graph: DependencyGraph, verify: bool) -> StructuredResult:
    if verify:
        from .verify import check_exact

        check_exact(model, res, graph.example)
    return res


def iterative_defaults(name: str | None) -> tuple[NamedPlan, tuple[str, ...]]:
    """Per-round ratios and skipped blocks of the kesi schedule for zoo model ``name`` (its registry record)."""
    spec = model_info(name).iterative if name in list_models() else None
    if spec is None:
        raise PrunekitError(f"no iterative L1-filter schedule for {name!r} (defined for resnet56, resnet110, "
                            "preresnet110, wrn_*, vgg16_l1): pass --ratios (and --skip)")
    return spec, tuple(spec.skip)


def iterative_round(model: nn.Module, *, ratios: Sequence[float] | None = None, skip: Sequence[str] | None = None,
                    strict_empty: bool = False, input_size: Sequence[int] | None = None,
                    verify: bool = True, criterion: str = "l1", seed: int = 0,
                    generator: torch.Generator | None = None) -> StructuredResult:
    """One round of iterative filter pruning on a (possibly already pruned) model: each prunable layer loses
    ``p`` of its **remaining** filters (defaults: the kesi schedule of the model). Finetune between rounds is the
    caller's job. ``criterion="random"`` draws the kept filters with ``generator`` (else seeded by ``seed``)."""
    _check_criterion(criterion)
    graph, groups = l1_groups(model, input_size)
    layers: tuple[str, ...] = ()
    ratio = None
    if ratios is None:
        spec, default_skip = iterative_defaults(getattr(model, "prunekit_name", None))
        ratios = spec.stage_ratios or None
        layers, ratio = spec.layers, (spec.ratio if spec.layers else None)
        skip = default_skip if skip is None else skip
    per_layer = layer_ratios(groups, stage_ratios=ratios, ratio=ratio, layers=layers, skip=skip or ())
    notes: list[str] = []
    keep = l1_keep(model, groups, per_layer, strict_empty=strict_empty, notes=notes, criterion=criterion,
                   generator=_generator(criterion, seed, generator))
    info = {"ratios": per_layer, "criterion": criterion}
    return _verified(model, finish(graph, groups, keep, _method_name("l1-filter-iterative", criterion), notes, info),
                     graph, verify)


def prune_iterative(model: nn.Module, rounds: int, *, criterion: str = "l1", seed: int = 0,
                    **kwargs) -> list[StructuredResult]:
    """``rounds`` consecutive :func:`iterative_round` s without finetune in between (one result per round).
    With ``criterion="random"`` one generator seeded by ``seed`` draws the kept filters of every round."""
    check_number("rounds", rounds, low=1, integer=True)
    _check_criterion(criterion)
    gen = _generator(criterion, seed, kwargs.pop("generator", None))
    results = []
    for _ in range(int(rounds)):
        res = iterative_round(model, criterion=criterion, generator=gen, **kwargs)
        results.append(res)
        model = res.model
    return results
