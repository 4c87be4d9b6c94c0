"""Shared test fixtures: tiny data and models, single-threaded torch for stable timing on 2 cores."""
from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)

# Tests whose float results depend on the CPU's kernels (structured exactness, export, padding, folding, SyncBN, DDP
# equality, resume): `.ci/run` and the README run `pytest -m numerics` a second time under the portable kernels
# (ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41), so an assertion that only holds for one kernel fails in CI.
# file -> None (every test) or the substrings of the test ids taken (a few models per family keep it short).
NUMERICS: dict[str, tuple[str, ...] | None] = {
    "test_pad_widths.py": None,
    "test_syncbn.py": None,
    "test_deploy_fold.py": ("fold", "absorb"),
    "test_export.py": ("in_onnxruntime[resnet20@structured]", "in_onnxruntime[preresnet164@slim]",
                       "in_onnxruntime[mobilenet_v2]", "family[resnet20@structured-", "family[densenet40@slim-",
                       "cli_export"),
    "test_ddp.py": ("batches[lenet5-False-False]", "batches[resnet20-True-False]"),
    "test_structured_zoo.py": ("[resnet56]", "[mobilenet_v2]", "[densenet40]", "[preresnet164]", "[vgg16_l1]",
                               "[resnet50]", "slimmed_checkpoint"),
    "test_structured_any_model.py": ("unpickling[convnext]", "unpickling[efficientnet]", "unpickling[googlenet]",
                                     "unpickling[resnext]", "unpickling[vit_block]", "unpickling[shufflenet_v2]"),
    "test_flops_rethinking.py": ("scratch_b",),
    "test_engine.py": ("test_resume_equals", "test_resume_is_exact"),
    "test_sparsifier.py": ("resume",),
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "numerics: float results that depend on the CPU's kernels (run twice in CI)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name not in NUMERICS:
            continue
        words = NUMERICS[item.path.name]
        if words is None or any(w in item.name for w in words):
            item.add_marker(pytest.mark.numerics)


@pytest.fixture
def digits_small():
    """A 256/128-sample cut of the bundled digits dataset (train, test)."""
    from prunekit.data import get_dataset, subset

    return subset(get_dataset("digits", train=True), 256), subset(get_dataset("digits", train=False), 128)
