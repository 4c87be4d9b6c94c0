"""Bad-input rows: library entry points (each must raise a PrunekitError with a message)."""
from __future__ import annotations

from typing import Any, Callable

from .table import HOSTILE, add, lib

# ------------------------------------------------------------------------------------------------ library


def _lenet() -> Any:
    import prunekit

    return prunekit.create_model("lenet5", num_classes=10, in_channels=1)


def _load(name: str) -> Callable[[dict], Any]:
    def fn(f: dict) -> Any:
        import prunekit

        return prunekit.load_model(f[name])
    return fn


for name in ("meta-json-list meta-json-string meta-num-classes-ten meta-num-classes-huge meta-in-channels-zero "
             "meta-cfg-60000-wide meta-options-unknown bitflip truncated-half empty-file pickle-code-as-safetensors "
             "meta-factory-os-mkdir dir-empty symlink-loop through-file missing").split():
    add(lib(f"lib-load-model-{name}", "files", "bomb" if name in ("meta-cfg-60000-wide", "meta-num-classes-huge")
            else "path" if name in ("dir-empty", "symlink-loop", "through-file", "missing") else "checkpoint",
            _load(name), hostile=name in HOSTILE))


def _imp(name: str) -> Any:
    import importlib

    return importlib.import_module(name)


add(lib("lib-load-checkpoint-expect-mismatch", "files", "checkpoint",
        lambda f: _imp("prunekit").load_checkpoint(f["lenet"], expect_model="resnet20")),
    lib("lib-load-checkpoint-pth-code", "files", "checkpoint",
        lambda f: _imp("prunekit").load_checkpoint(f["pickle-code-pth"], expect_model="lenet5"), hostile=True),
    lib("lib-load-checkpoint-torchsave-code", "files", "checkpoint",
        lambda f: _imp("prunekit").load_checkpoint(f["torchsave-code-pt"], expect_model="lenet5"), hostile=True),
    lib("lib-load-model-factory-not-trusted", "files", "checkpoint",
        lambda f: _imp("prunekit").load_model(f["meta-factory-os-mkdir"], factory="other:thing"), hostile=True))
for vid, kwargs in (("unknown", {"name": "no_such_net"}), ("num-classes-zero", {"num_classes": 0}),
                    ("num-classes-neg", {"num_classes": -1}), ("num-classes-text", {"num_classes": "ten"}),
                    ("num-classes-huge", {"num_classes": 10 ** 11}), ("num-classes-float", {"num_classes": 10.5}),
                    ("in-channels-zero", {"in_channels": 0}), ("in-channels-nan", {"in_channels": float("nan")}),
                    ("unknown-option", {"bogus": 1})):
    def _create(f: dict, kwargs: dict = kwargs) -> Any:
        args = {"name": "lenet5", **kwargs}
        return _imp("prunekit").create_model(args.pop("name"), **args)
    add(lib(f"lib-create-model-{vid}", "cli", "bomb" if "huge" in vid else "choice" if vid == "unknown"
            else "number", _create))
add(lib("lib-create-model-cfg-garbage", "cli", "malformed",
        lambda f: _imp("prunekit").create_model("vgg11", cfg=["x", None, {"a": 1}])),
    lib("lib-create-model-cfg-60000-wide", "cli", "bomb",
        lambda f: _imp("prunekit").create_model("vgg11", cfg=[60000, "M", 60000, "M", 60000, 60000, "M", 60000,
                                                              60000, "M", 60000, 60000])),
    lib("lib-build-model-missing-module", "cli", "malformed",
        lambda f: _imp("prunekit").build_model("no_such_module_xyz:Net")),
    lib("lib-build-model-not-callable", "cli", "malformed", lambda f: _imp("prunekit").build_model("os:sep")),
    lib("lib-build-model-returns-non-module", "cli", "malformed",
        lambda f: _imp("prunekit").build_model("builtins:dict")),
    lib("lib-build-model-no-colon", "cli", "malformed", lambda f: _imp("prunekit").build_model("nocolon")))
for vid, ratio in (("nan", float("nan")), ("inf", float("inf")), ("neg", -0.1), ("above1", 1.5)):
    add(lib(f"lib-prune-unstructured-ratio-{vid}", "cli", "number",
            lambda f, r=ratio: _imp("prunekit.pruning").prune_unstructured(_lenet(), "global", r)))
add(lib("lib-prune-unstructured-method-unknown", "cli", "choice",
        lambda f: _imp("prunekit.pruning").prune_unstructured(_lenet(), "bogus", 0.5)),
    lib("lib-prune-unstructured-gpmt-min-nan", "cli", "number",
        lambda f: _imp("prunekit.pruning").prune_unstructured(_lenet(), "gpmt", 0.5, min_threshold=float("nan"))),
    lib("lib-prune-l1-filter-ratios-nan", "cli", "number",
        lambda f: _imp("prunekit.pruning.structured").prune_l1_filter(_imp("prunekit").create_model("resnet20"),
                                                                      ratios=[float("nan")])),
    lib("lib-prune-l1-filter-plan-unknown", "cli", "choice",
        lambda f: _imp("prunekit.pruning.structured").prune_l1_filter(_imp("prunekit").create_model("resnet20"),
                                                                      plan="bogus-Z")),
    lib("lib-prune-slimming-percent-nan", "cli", "number",
        lambda f: _imp("prunekit.pruning.structured").prune_slimming(_imp("prunekit").create_model("resnet20"),
                                                                     float("nan"))),
    lib("lib-prune-slimming-percent-above1", "cli", "number",
        lambda f: _imp("prunekit.pruning.structured").prune_slimming(_imp("prunekit").create_model("resnet20"),
                                                                     1.5)),
    lib("lib-prune-structured-ratio-nan", "cli", "number",
        lambda f: _imp("prunekit.pruning.structured").prune_structured(_imp("prunekit").create_model("resnet20"),
                                                                       ratio=float("nan"))))
for vid, kwargs in (("format-unknown", {"format": "tflite"}), ("input-size-zero", {"input_size": (0, 8, 8)}),
                    ("input-size-huge", {"input_size": (3, 100000, 100000)}),
                    ("input-size-wrong-channels", {"input_size": (3, 8, 8)}),
                    ("latency-batch-zero", {"latency_batch_sizes": [0]}), ("latency-threads-zero",
                                                                           {"latency_threads": 0}),
                    ("repeats-zero", {"repeats": 0, "latency_batch_sizes": [1]}),
                    ("repeats-nan", {"repeats": float("nan"), "latency_batch_sizes": [1]}),
                    ("tolerance-nan", {"tolerance": float("nan")})):
    def _export(f: dict, kwargs: dict = kwargs) -> Any:
        args = {"format": "torchscript", "input_size": (1, 8, 8), **kwargs}
        return _imp("prunekit").export(_lenet(), f["work"] / "exp", **args)
    add(lib(f"lib-export-{vid}", "export", "bomb" if "huge" in vid else "number" if vid[0] in "lrt" else "malformed",
            _export))
add(lib("lib-export-path-through-file", "export", "path",
        lambda f: _imp("prunekit").export(_lenet(), f["lenet-file"] / "x.pt", format="torchscript",
                                          input_size=(1, 8, 8))),
    lib("lib-count-flops-wrong-channels", "export", "malformed",
        lambda f: _imp("prunekit").metrics.count_flops(_lenet(), (1, 3, 8, 8))),
    lib("lib-count-flops-zero-size", "export", "malformed",
        lambda f: _imp("prunekit").metrics.count_flops(_lenet(), (1, 1, 0, 8))),
    lib("lib-count-flops-huge", "export", "bomb",
        lambda f: _imp("prunekit").metrics.count_flops(_lenet(), (1, 3, 100000, 100000))),
    lib("lib-measure-latency-batch-zero", "export", "number",
        lambda f: _imp("prunekit").metrics.measure_latency(_lenet(), (1, 8, 8), batch_size=0)),
    lib("lib-measure-latency-repeats-nan", "export", "number",
        lambda f: _imp("prunekit").metrics.measure_latency(_lenet(), (1, 8, 8), repeats=float("nan"))),
    lib("lib-measure-latency-input-empty", "export", "malformed",
        lambda f: _imp("prunekit").metrics.measure_latency(_lenet(), ())),
    lib("lib-get-dataset-synthetic-n-text", "files", "malformed",
        lambda f: _imp("prunekit.data").get_dataset("synthetic", n="abc")),
    lib("lib-get-dataset-unknown", "files", "choice", lambda f: _imp("prunekit.data").get_dataset("bogus")),
    lib("lib-get-dataset-synthetic-n-neg", "files", "number",
        lambda f: _imp("prunekit.data").get_dataset("synthetic:n=-1")),
    lib("lib-save-model-path-through-file", "files", "path",
        lambda f: _imp("prunekit").save_model(_lenet(), f["lenet-file"] / "x")),
    lib("lib-save-model-plain-module", "files", "checkpoint",
        lambda f: _imp("prunekit").save_model(_imp("torch.nn").Linear(2, 2), f["work"] / "m")))


