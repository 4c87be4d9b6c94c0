"""The analytic cost of a structured prune: MACs and parameters of a model after removing units of its groups.

Conv/linear MACs scale with the kept fraction of their inputs and outputs; everything else is a constant measured
once; parameters are counted exactly for conv, linear, embedding and norm layers and free parameters. Budgets
(``target_macs`` / ``target_params``) search the global ranking with it.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
import torch.nn as nn

from ...metrics import count_flops, count_params
from .capture import as_inputs, first_tensor
from .graph import DependencyGraph, Group


class CostModel:
    """Analytic MACs and params of the model after removing units: conv/linear MACs scale with the kept
    fraction of their inputs and outputs; everything else is constant. Exact for conv/linear layers."""

    def __init__(self, graph: DependencyGraph, example: Sequence[torch.Tensor]) -> None:
        self.graph = graph
        self.layer_macs: dict[str, float] = {}
        self.layer_params: dict[str, tuple[float, str]] = {}
        for (kind, name), site in graph.sites.items():
            if kind != "out":
                continue
            m = graph.modules[name]
            if isinstance(m, nn.modules.conv._ConvNd):
                k = math.prod(m.kernel_size)
                self.layer_macs[name] = m.out_channels * (m.in_channels // m.groups) * k * \
                    math.prod(site.info.get("spatial", ()) or (1,))
            elif isinstance(m, nn.Linear):
                self.layer_macs[name] = m.in_features * m.out_features * site.info.get("tokens", 1)
        self.dense_params = count_params(graph.model)
        self.dense_macs = sum(self.layer_macs.values())
        self.other_macs = 0.0
        self._example = example
        self._params = dict(graph.model.named_parameters())

    def include_other_macs(self) -> None:
        """Add the MACs the graph cannot scale (ignored modules, fixed matmuls/attention) as a constant, from one
        count of the dense model, so that budgets are fractions of the whole model's MACs."""
        x = first_tensor(self._example)
        if x is None or as_kwargs(self._example):
            return  # keyword inputs (token ids): the conv/linear MACs are the budget's base
        total = count_flops(self.graph.model, tuple(x.shape), convention="macs").macs
        self.other_macs = max(0.0, float(total) - self.dense_macs)
        self.dense_macs += self.other_macs

    def _layer_params(self, m: nn.Module, name: str, removed_pos: Mapping[tuple[str, str], int]) -> float:
        """Parameters a conv/linear loses when ``removed_pos`` outputs/inputs go (weight out'·in'/g'·k + bias)."""
        ro, ri = removed_pos.get(("out", name), 0), removed_pos.get(("in", name), 0)
        bias = 1 if getattr(m, "bias", None) is not None else 0
        if isinstance(m, nn.Linear):
            o, i = m.out_features, m.in_features
            return o * i + bias * o - ((o - ro) * (i - ri) + bias * (o - ro))
        k = math.prod(m.kernel_size)
        o, i, g = m.out_channels, m.in_channels, m.groups
        depthwise = g > 1 and m.weight.shape[1] == 1
        per_in = 1 if depthwise else (i - ri) // g
        dense = o * (i // g) * k + bias * o
        return dense - ((o - ro) * per_in * k + bias * (o - ro))

    def evaluate(self, removed_pos: Mapping[tuple[str, str], int]) -> tuple[float, float]:
        """``(macs, params)`` of conv/linear layers (macs) and of the whole model (params) after removing
        ``removed_pos[site] `` positions per site."""
        sites, mods = self.graph.sites, self.graph.modules
        macs = 0.0
        for name, dense in self.layer_macs.items():
            m = mods[name]
            fo = 1 - removed_pos.get(("out", name), 0) / sites[("out", name)].size
            fi = 1.0
            if ("in", name) in sites and not (isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1 and
                                              m.weight.shape[1] == 1):
                fi = 1 - removed_pos.get(("in", name), 0) / sites[("in", name)].size
            macs += dense * fo * fi
        macs += self.other_macs
        params = float(self.dense_params)
        done: set[str] = set()
        for (kind, name), n in removed_pos.items():
            if not n:
                continue
            m = mods.get(name)
            site = sites[(kind, name)]
            if kind in ("out", "in") and name not in done and isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)):
                done.add(name)
                params -= self._layer_params(m, name, removed_pos)
            elif kind == "norm" and m is not None:
                params -= n * sum(1 for p in (getattr(m, "weight", None), getattr(m, "bias", None)) if p is not None)
            elif kind == "param":
                t = self._params.get(site.info["param"])
                if t is not None:
                    params -= n * t.numel() / t.shape[site.info["dim"]]
        return macs, params


def removed_positions(groups_by_name: Mapping[str, Group], removed: Mapping[str, Sequence[int]]
                       ) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for gname, units in removed.items():
        g = groups_by_name[gname]
        for key, per_unit in g.positions.items():
            out[key] = out.get(key, 0) + sum(len(per_unit[u]) for u in units)
    return out




def as_kwargs(example: object) -> bool:
    """Whether the example inputs are (also) keyword inputs."""
    return bool(as_inputs(example).kwargs)
