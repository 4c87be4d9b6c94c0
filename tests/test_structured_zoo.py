"""Every zoo model (CIFAR and ImageNet families) prunes structurally at 30% and 50% of every channel group, is
exact against the unpruned model whose consumers ignore the removed channels, and reloads bit-exactly from
(name, plan, safetensors). ImageNet models run at 3×64×64 and the CIFAR ones at their natural 32×32 to keep the
suite fast; the graph does not depend on the resolution except through flatten sizes, which these models avoid.
"""
from __future__ import annotations

import os

import pytest
import torch

from prunekit import load_model, save_model
from prunekit.metrics import count_params
from prunekit.models import create_model, list_models, model_info
from prunekit.pruning.structured import prune_structured
from prunekit.pruning.structured.verify import randomize_bn

REL = 1e-5
# 17M-138M parameters: too slow for the 2-core suite; PRUNEKIT_FULL_ZOO=1 runs them (benchmarks/ measures them)
BIG = {"wrn_28_10", "wrn_16_10", "wrn_22_8", "cifar_resnet101", "cifar_resnet152", "efficientnet_b2", "vgg16_bn"}


def _size(name: str) -> tuple[int, int, int]:
    c, h, w = model_info(name).input_size
    return (c, min(h, 64), min(w, 64))


@pytest.mark.parametrize("name", [n for n in list_models() if n not in BIG])
def test_every_zoo_model_prunes_at_30_and_50_percent_exactly_and_reloads(name, tmp_path):
    torch.manual_seed(0)
    info = model_info(name)
    model = randomize_bn(create_model(name, num_classes=10, in_channels=info.input_size[0])).eval()
    size = _size(name)
    dense = count_params(model)
    last = None
    for ratio in (0.3, 0.5):
        res = prune_structured(model, input_size=size, ratio=ratio)
        assert res.info["rel_diff"] <= REL, (ratio, res.info)
        assert count_params(res.model) < dense
        last = res
    save_model(last.model, tmp_path)
    back = load_model(tmp_path).eval()
    x = torch.randn(2, *size)
    with torch.no_grad():
        assert torch.equal(back(x), last.model.eval()(x))


@pytest.mark.skipif(not os.environ.get("PRUNEKIT_FULL_ZOO"), reason="set PRUNEKIT_FULL_ZOO=1 for the big models")
@pytest.mark.parametrize("name", sorted(BIG))
def test_big_zoo_models_prune_exactly(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10).eval()
    res = prune_structured(model, input_size=_size(name), ratio=0.5)
    assert res.info["rel_diff"] <= REL
