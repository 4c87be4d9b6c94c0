"""Recipes: a YAML file that names the stages of an experiment and their options.

A stage runs one prunekit command (``train``, ``prune``, ``finetune``, ``scratch``, ``sweep``, ``eval``,
``ensemble``, ``distill``) or the recipe-only ``random-filter`` (the random-selection control of L1-filter
pruning; see :mod:`prunekit.experiments.stages`). ``rounds`` expands
into K prune→finetune pairs named ``<name>.r<k>.prune`` and ``<name>.r<k>``, each round starting from the previous
one. ``args`` become ``--flags`` (``_`` → ``-``; ``true`` → a bare flag; a list → comma-separated). Values that
start with ``@`` name an earlier stage and become its output folder; ``from: X`` is short for
``checkpoint: "@X"``. Top-level ``dataset``/``data_dir``/``limit`` and ``defaults`` reach every stage whose
command has that flag; each stage gets ``--seed`` from the seed being run::

    name: l1-iterative-lite
    dataset: fashion-mnist
    seeds: [0, 1, 2]
    defaults: {batch_size: 128}
    stages:
      - {name: baseline, command: train, args: {model: resnet20, epochs: 6, lr: 0.1}}
      - {name: rounds, command: rounds, from: baseline, rounds: 3,
         prune: {method: l1-filter, ratios: "0.1,0.2,0.3"}, finetune: {epochs: 2, lr: 0.01}}
      - {name: ens, command: ensemble, args: {checkpoints: ["@rounds.r1", "@rounds.r2", "@rounds.r3"]}}

Every option is checked against the command's own flags before anything runs; an invalid recipe fails naming the
stage and the key. ``report`` takes ``title`` and ``rows`` (the stages to tabulate, in order; default all).
Top-level keys starting with ``x-`` are ignored: a place for YAML anchors shared by stages
(``x-ft: &ft {epochs: 40}`` ... ``args: *ft``).
"""
from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..errors import PrunekitError

TOP_KEYS = {"name", "description", "dataset", "data_dir", "limit", "seeds", "defaults", "stages", "report"}
STAGE_KEYS = {"name", "command", "from", "args", "rounds", "prune", "finetune", "after"}
REPORT_KEYS = {"title", "rows"}
# flags the runner owns: a recipe may not set them
RESERVED = {"out", "help", "resume"}
# options every stage takes from the recipe's top level, when its command has the flag
GLOBAL_OPTIONS = ("dataset", "data_dir", "limit")
RESUMABLE = {"train", "finetune", "scratch", "distill"}
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass
class Stage:
    """One command invocation of a recipe (after ``rounds`` expansion)."""

    name: str
    command: str
    args: dict[str, Any] = field(default_factory=dict)
    depends: list[str] = field(default_factory=list)

    def argv(self, stage_dirs: Mapping[str, Path], out: Path, seed: int | None,
             accepted: set[str]) -> list[str]:
        """The command line of this stage, with ``@stage`` references resolved to folders."""
        argv = [self.command]
        args = dict(self.args)
        if seed is not None and "seed" in accepted and "seed" not in args:
            args["seed"] = seed
        for key, value in args.items():
            flag = "--" + key.replace("_", "-")
            value = _resolve(value, stage_dirs, self.name, key)
            if value is None or value is False:
                continue
            if value is True:
                argv.append(flag)
            elif isinstance(value, (list, tuple)):
                argv += [flag, ",".join(str(v) for v in value)]
            else:
                argv += [flag, str(value)]
        return argv + ["--out", str(out)]


@dataclass
class Recipe:
    """A validated recipe: ordered stages and report options."""

    name: str
    stages: list[Stage]
    seeds: list[int]
    report: dict[str, Any]
    description: str = ""
    source: Path | None = None

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise PrunekitError(f"recipe {self.name!r} has no stage {name!r}")


def _resolve(value: Any, stage_dirs: Mapping[str, Path], stage: str, key: str) -> Any:
    if isinstance(value, (list, tuple)):
        return [_resolve(v, stage_dirs, stage, key) for v in value]
    if isinstance(value, str) and value.startswith("@"):
        ref = value[1:]
        if ref not in stage_dirs:
            raise PrunekitError(f"stage {stage!r}, key {key!r}: {value!r} names no earlier stage")
        return str(stage_dirs[ref])
    return value


def _refs(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [r for v in value for r in _refs(v)]
    return [value[1:]] if isinstance(value, str) and value.startswith("@") else []


def load_recipe(path: str | os.PathLike) -> Recipe:
    """Read and validate a recipe file (YAML)."""
    p = Path(path)
    if not p.is_file():
        raise PrunekitError(f"recipe not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise PrunekitError(f"recipe {p} is not valid YAML: {exc}") from None
    recipe = parse_recipe(raw, name_hint=p.stem)
    recipe.source = p
    return recipe


def parse_recipe(raw: Any, name_hint: str = "recipe") -> Recipe:
    """Validate a recipe given as a dict (from YAML) and expand its ``rounds`` stages."""
    if not isinstance(raw, dict):
        raise PrunekitError("a recipe must be a mapping with a 'stages' list")
    unknown = {k for k in raw if not (isinstance(k, str) and k.startswith("x-"))} - TOP_KEYS
    if unknown:
        raise PrunekitError(f"recipe: unknown top-level key {min(map(str, unknown))!r}; valid: "
                            f"{', '.join(sorted(TOP_KEYS))}")
    name = str(raw.get("name", name_hint))
    if not isinstance(raw.get("stages"), list) or not raw["stages"]:
        raise PrunekitError(f"recipe {name!r}: 'stages' must be a non-empty list")
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise PrunekitError(f"recipe {name!r}: 'defaults' must be a mapping")
    top = {k: raw[k] for k in GLOBAL_OPTIONS if raw.get(k) is not None}
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds) or not seeds:
        raise PrunekitError(f"recipe {name!r}: 'seeds' must be a non-empty list of integers")
    stages: list[Stage] = []
    for i, spec in enumerate(raw["stages"]):
        stages += _expand(spec, i, name)
    _check_names_and_refs(stages, name)
    _apply_defaults(stages, {**top, **defaults}, name)
    validate_against_cli(stages, name)
    report = raw.get("report") or {}
    if not isinstance(report, dict):
        raise PrunekitError(f"recipe {name!r}: 'report' must be a mapping")
    bad = set(report) - REPORT_KEYS
    if bad:
        raise PrunekitError(f"recipe {name!r}: unknown report key {min(map(str, bad))!r}; valid: "
                            f"{', '.join(sorted(REPORT_KEYS))}")
    names = {s.name for s in stages}
    for row in report.get("rows") or []:
        if row not in names:
            raise PrunekitError(f"recipe {name!r}, key 'report.rows': {row!r} is no stage of this recipe")
    return Recipe(name=name, stages=stages, seeds=list(seeds), report=report, description=raw.get("description", ""))


def _expand(spec: Any, index: int, recipe: str) -> list[Stage]:
    if not isinstance(spec, dict):
        raise PrunekitError(f"recipe {recipe!r}: stage #{index + 1} must be a mapping")
    unknown = set(spec) - STAGE_KEYS
    where = f"recipe {recipe!r}, stage {spec.get('name', '#' + str(index + 1))!r}"
    if unknown:
        raise PrunekitError(f"{where}: unknown key {min(map(str, unknown))!r}; valid: {', '.join(sorted(STAGE_KEYS))}")
    for key in ("name", "command"):
        if not isinstance(spec.get(key), str):
            raise PrunekitError(f"{where}: missing {key!r}")
    if not _NAME.match(spec["name"]):
        raise PrunekitError(f"{where}: stage names use letters, digits, '_', '-', '.'")
    for key in ("args", "prune", "finetune"):
        if spec.get(key) is not None and not isinstance(spec[key], dict):
            raise PrunekitError(f"{where}: {key!r} must be a mapping of option: value")
        for opt, value in (spec.get(key) or {}).items():
            _check_value(value, f"{where}, key {key}.{opt}")
    if spec.get("after") is not None and not (isinstance(spec["after"], list)
                                               and all(isinstance(a, str) for a in spec["after"])):
        raise PrunekitError(f"{where}: 'after' must be a list of stage names")
    args = dict(spec.get("args") or {})
    if spec.get("from") is not None:
        if "checkpoint" in args:
            raise PrunekitError(f"{where}: give either 'from' or args.checkpoint, not both")
        args["checkpoint"] = "@" + str(spec["from"])
    if spec["command"] != "rounds":
        for key in ("rounds", "prune", "finetune"):
            if key in spec:
                raise PrunekitError(f"{where}: key {key!r} only applies to command 'rounds'")
        return [Stage(spec["name"], spec["command"], args, list(spec.get("after") or []))]
    k = spec.get("rounds")
    if not isinstance(k, int) or k < 1:
        raise PrunekitError(f"{where}: 'rounds' must be a positive integer")
    out: list[Stage] = []
    prev = args.get("checkpoint")
    if prev is None:
        raise PrunekitError(f"{where}: a 'rounds' stage needs 'from' (the model to prune)")
    for r in range(1, k + 1):
        p_args = {**dict(spec.get("prune") or {}), "checkpoint": prev}
        f_args = {**dict(spec.get("finetune") or {}), "checkpoint": f"@{spec['name']}.r{r}.prune"}
        out.append(Stage(f"{spec['name']}.r{r}.prune", "prune", p_args))
        out.append(Stage(f"{spec['name']}.r{r}", "finetune", f_args))
        prev = f"@{spec['name']}.r{r}"
    return out


def _check_value(value: Any, where: str) -> None:
    ok = (str, int, float, bool, type(None))
    if isinstance(value, list):
        if all(isinstance(v, ok) for v in value):
            return
    elif isinstance(value, ok):
        return
    raise PrunekitError(f"{where}: values must be numbers, strings, booleans or lists of them, got {value!r}")


def _check_names_and_refs(stages: list[Stage], recipe: str) -> None:
    names = [s.name for s in stages]
    seen: set[str] = set()
    for s in stages:
        if s.name in seen:
            raise PrunekitError(f"recipe {recipe!r}: stage name {s.name!r} is used twice")
        refs = [(k, r) for k, v in s.args.items() for r in _refs(v)] + [("after", r) for r in s.depends]
        for key, r in refs:
            if r not in seen:
                why = "a later stage (stages run in order)" if r in names else "no stage of this recipe"
                raise PrunekitError(f"recipe {recipe!r}, stage {s.name!r}, key {key!r}: {r!r} is {why}")
        s.depends = sorted({r for _, r in refs})
        seen.add(s.name)


def _apply_defaults(stages: list[Stage], defaults: Mapping[str, Any], recipe: str) -> None:
    for s in stages:
        try:
            accepted = command_flags(s.command)
        except PrunekitError as exc:
            raise PrunekitError(f"recipe {recipe!r}, stage {s.name!r}: {exc}") from None
        for k, v in defaults.items():
            if k not in s.args and k in accepted:
                s.args[k] = v


_FLAG_CACHE: dict[str, tuple[set[str], argparse.ArgumentParser]] = {}


def _command_parser(command: str) -> tuple[set[str], argparse.ArgumentParser]:
    if command not in _FLAG_CACHE:
        from ..cli import build_parser
        from .stages import INTERNAL

        if command in INTERNAL:
            parser = INTERNAL[command][0]()
        else:
            top = build_parser()
            sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
            if command not in sub.choices or command == "run":
                valid = sorted([c for c in sub.choices if c != "run"] + list(INTERNAL)) + ["rounds"]
                raise PrunekitError(f"unknown command {command!r}; valid: {', '.join(valid)}")
            parser = sub.choices[command]
        flags = {opt[2:].replace("-", "_") for a in parser._actions for opt in a.option_strings
                 if opt.startswith("--")}
        _FLAG_CACHE[command] = (flags, parser)
    return _FLAG_CACHE[command]


def command_flags(command: str) -> set[str]:
    """Option names (underscored) that ``prunekit COMMAND`` accepts."""
    return _command_parser(command)[0]


def validate_against_cli(stages: list[Stage], recipe: str) -> None:
    """Every stage's args must be flags of its command and parse: fail naming the stage and key otherwise."""
    for s in stages:
        try:
            flags, parser = _command_parser(s.command)
        except PrunekitError as exc:
            raise PrunekitError(f"recipe {recipe!r}, stage {s.name!r}: {exc}") from None
        for key in s.args:
            if key not in flags or key in RESERVED:
                raise PrunekitError(f"recipe {recipe!r}, stage {s.name!r}: unknown option {key!r} for command "
                                    f"{s.command!r}")
        fake_dirs = {r: Path("/nonexistent") / r for r in s.depends}
        argv = s.argv(fake_dirs, Path("/nonexistent/out"), 0, flags)
        try:
            parser.parse_args(argv[1:])
        except PrunekitError as exc:
            raise PrunekitError(f"recipe {recipe!r}, stage {s.name!r}: {exc}") from None
