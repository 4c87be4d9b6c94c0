"""Provenance of ``handwritten_groups.json``: the channel groups of prunekit's hand-written per-architecture
describers (``prunekit/pruning/structured/groups.py`` up to commit 4df7175, since retired), one entry per CIFAR
family and kind. It was run once, before the describers were removed, so that ``test_graph_groups.py`` can check
that the groups discovered from the traced graph equal the ones written by hand (an independent implementation).
Kept for the record; it cannot run any more (the module it imports is gone).
"""
import json
import sys

import torch

from prunekit.models import create_model
from prunekit.pruning.structured.groups import describe

MODELS = {"l1": ["vgg11_l1", "vgg16_l1", "vgg19", "resnet20", "resnet56", "resnet110", "preresnet110", "wrn_16_8",
                 "preresnet164"],
          "bn": ["vgg11", "vgg19", "vgg16_l1", "preresnet164", "densenet40"]}

out = {}
for kind, names in MODELS.items():
    for name in names:
        torch.manual_seed(0)
        m = create_model(name)
        try:
            groups = describe(m, kind)
        except Exception as e:  # noqa: BLE001 - recorded: the describer refuses this pair
            out[f"{name}/{kind}"] = {"error": str(e)}
            continue
        out[f"{name}/{kind}"] = [{"name": g.name, "size": g.size, "bn": g.bn, "conv": g.conv,
                                  "out_modules": list(g.out_modules), "in_modules": list(g.in_modules),
                                  "select": g.select, "stage": g.stage, "layer_id": g.layer_id,
                                  "aliases": list(g.aliases)} for g in groups]
json.dump(out, open(sys.argv[1], "w"), indent=0)
