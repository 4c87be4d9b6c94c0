"""Recipes: a YAML file that names the stages of an experiment and their options.

A stage runs one prunekit command (``train``, ``prune``, ``finetune``, ``scratch``, ``sweep``, ``eval``,
``ensemble``, ``distill``, ``export``, ``info``) through the command's typed options
(:mod:`prunekit.options`) and its ``execute`` function; ``random-filter`` is an alias of ``prune --method
l1-filter --criterion random`` (the random-selection control of L1-filter pruning). ``rounds`` expands
into K prune→finetune pairs named ``<name>.r<k>.prune`` and ``<name>.r<k>``, each round starting from the previous
one. ``args`` are the command's option fields (``label_smoothing``; flag aliases such as ``wd`` too; the stage's
command line, recorded in its marker and shown by ``--dry-run``, spells them as ``--flags``). Values that
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
         prune: {method: l1-filter, stage_ratios: "0.1,0.2,0.3"}, finetune: {epochs: 2, lr: 0.01}}
      - {name: ens, command: ensemble, args: {checkpoints: ["@rounds.r1", "@rounds.r2", "@rounds.r3"]}}

Every option is converted and checked by the command's options class before anything runs; an invalid recipe
fails naming the stage and the field. A recipe file must be UTF-8 YAML of bounded size (aliases are counted as
expanded: an alias bomb is refused), and ``name`` must be a plain folder name. ``report`` takes ``title`` and ``rows`` (the stages to tabulate, in order; default all).
Top-level keys starting with ``x-`` are ignored: a place for YAML anchors shared by stages
(``x-ft: &ft {epochs: 40}`` ... ``args: *ft``).
"""
from __future__ import annotations

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
# recipe-only stage commands: an alias of a prunekit command with fixed options
ALIASES: dict[str, tuple[str, dict[str, Any]]] = {
    "random-filter": ("prune", {"method": "l1-filter", "criterion": "random"}),
}
STAGE_COMMANDS = ("train", "prune", "finetune", "scratch", "sweep", "eval", "ensemble", "distill", "export", "info")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
MAX_RECIPE_BYTES = 1 << 20     # a recipe is a few KB; refuse anything that is clearly not one
MAX_YAML_NODES = 100_000       # YAML nodes counted with every alias expanded


@dataclass
class Stage:
    """One command invocation of a recipe (after ``rounds`` expansion)."""

    name: str
    command: str
    args: dict[str, Any] = field(default_factory=dict)
    depends: list[str] = field(default_factory=list)

    def mapping(self, stage_dirs: Mapping[str, Path], out: Path, seed: int | None) -> dict[str, Any]:
        """The options of this stage's command: ``@stage`` references resolved to folders, ``out`` and ``seed``
        added (alias commands: their fixed options first)."""
        command, fixed = resolve_command(self.command)
        args = {**fixed, **{k: _resolve(v, stage_dirs, self.name, k) for k, v in self.args.items()}}
        if seed is not None and "seed" in command_flags(command) and "seed" not in args:
            args["seed"] = seed
        args["out"] = str(out)
        return args

    def argv(self, stage_dirs: Mapping[str, Path], out: Path, seed: int | None,
             accepted: set[str] | None = None) -> list[str]:
        """The command line of this stage (what ``--dry-run`` shows and the stage marker records)."""
        argv = [self.command]
        args = dict(self.args)
        accepted = command_flags(resolve_command(self.command)[0]) if accepted is None else accepted
        if seed is not None and "seed" in accepted and "seed" not in args:
            args["seed"] = seed
        from ..options import to_argv

        argv += to_argv({k: _resolve(v, stage_dirs, self.name, k) for k, v in args.items()})
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
    """Read and validate a recipe file: UTF-8 YAML of bounded size and bounded expanded node count."""
    p = Path(path)
    if not p.is_file():
        raise PrunekitError(f"recipe not found: {p}")
    try:
        size = p.stat().st_size
        if size > MAX_RECIPE_BYTES:
            raise PrunekitError(f"recipe {p} is {size:,} bytes; a recipe may be at most {MAX_RECIPE_BYTES:,}")
        data = p.read_bytes()
    except PermissionError:
        raise PrunekitError(f"recipe {p}: permission denied") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PrunekitError(f"recipe {p} is not UTF-8 text (byte {exc.start}: {data[exc.start:exc.start + 1]!r})") \
            from None
    raw = safe_yaml(text, str(p))
    recipe = parse_recipe(raw, name_hint=p.stem)
    recipe.source = p
    return recipe


def safe_yaml(text: str, where: str = "recipe") -> Any:
    """``yaml.safe_load`` that refuses documents whose alias-expanded size exceeds :data:`MAX_YAML_NODES` (an alias
    bomb) or that nest or refer to themselves without end, before anything is built from them."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _count_nodes(node, where)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise PrunekitError(f"{where} is not valid YAML: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise PrunekitError(f"{where}: YAML nested too deeply") from None
    finally:
        loader.dispose()


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line: what is wrong and where (PyYAML's own message spans several lines)."""
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return " ".join(str(problem).split()) + where


def _count_nodes(root: yaml.Node, where: str) -> int:
    """Nodes of ``root`` with every alias expanded, computed without expanding (memoised per node)."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise PrunekitError(f"{where}: a YAML alias refers to itself")
        active.add(key)
        n = 1
        if isinstance(node, yaml.SequenceNode):
            n += sum(size(c) for c in node.value)
        elif isinstance(node, yaml.MappingNode):
            n += sum(size(k) + size(v) for k, v in node.value)
        active.discard(key)
        if n > MAX_YAML_NODES:
            raise PrunekitError(f"{where}: the YAML expands to more than {MAX_YAML_NODES:,} values (aliases counted "
                                "as expanded); refusing it (an alias bomb?)")
        sizes[key] = n
        return n

    return size(root)


def check_recipe_name(name: Any) -> str:
    """``name`` if it is a plain folder name (letters, digits, ``_ - .``; not ``.``/``..``, no ``/``)."""
    if not isinstance(name, str) or not _NAME.match(name) or name in (".", "..") or len(name) > 128:
        raise PrunekitError(f"recipe name {name!r} must be a plain folder name: letters, digits, '_', '-', '.' "
                            "(no '/', no '..', not absolute, at most 128 characters)")
    return name


def recipe_out_dir(recipe: Recipe, root: Path) -> Path:
    """``root/<recipe name>``: the default output folder (the name is a plain folder name, checked again here)."""
    return root / check_recipe_name(recipe.name)


def parse_recipe(raw: Any, name_hint: str = "recipe") -> Recipe:
    """Validate a recipe given as a dict (from YAML) and expand its ``rounds`` stages."""
    if not isinstance(raw, dict):
        raise PrunekitError("a recipe must be a mapping with a 'stages' list")
    unknown = {k for k in raw if not (isinstance(k, str) and k.startswith("x-"))} - TOP_KEYS
    if unknown:
        raise PrunekitError(f"recipe: unknown top-level key {min(map(str, unknown))!r}; valid: "
                            f"{', '.join(sorted(TOP_KEYS))}")
    name = raw.get("name", name_hint)
    if isinstance(name, (int, float)) and not isinstance(name, bool):
        name = str(name)
    name = check_recipe_name(name)
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
    validate_stages(stages, name)
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
            accepted = command_flags(resolve_command(s.command)[0])
        except PrunekitError as exc:
            raise PrunekitError(f"recipe {recipe!r}, stage {s.name!r}: {exc}") from None
        for k, v in defaults.items():
            if k not in s.args and k in accepted:
                s.args[k] = v


def resolve_command(command: str) -> tuple[str, dict[str, Any]]:
    """``(prunekit command, fixed options)`` of a stage command (a recipe alias such as ``random-filter``)."""
    if command in ALIASES:
        name, fixed = ALIASES[command]
        return name, dict(fixed)
    if command not in STAGE_COMMANDS:
        valid = sorted([*STAGE_COMMANDS, *ALIASES, "rounds"])
        raise PrunekitError(f"unknown command {command!r}; valid: {', '.join(valid)}")
    return command, {}


def command_flags(command: str) -> set[str]:
    """Option names (underscored, aliases included) that a stage of ``command`` accepts."""
    from ..commands import option_keys

    name, fixed = resolve_command(command)
    return option_keys(name) - RESERVED - set(fixed)


def stage_options(stage: Stage, stage_dirs: Mapping[str, Path], out: Path, seed: int | None, recipe: str) -> Any:
    """The validated options of ``stage``'s command (errors name the recipe, the stage and the field)."""
    from ..commands import build_options

    where = f"recipe {recipe!r}, stage {stage.name!r}"
    try:
        command, fixed = resolve_command(stage.command)
    except PrunekitError as exc:
        raise PrunekitError(f"{where}: {exc}") from None
    for key in stage.args:
        if str(key).replace("-", "_") in RESERVED | set(fixed):
            raise PrunekitError(f"{where}: unknown option {key!r} for command {stage.command!r}")
    return build_options(command, stage.mapping(stage_dirs, out, seed), where)


def validate_stages(stages: list[Stage], recipe: str) -> None:
    """Every stage's args must be valid options of its command: fail naming the stage and the field otherwise."""
    for s in stages:
        fake_dirs = {r: Path("/nonexistent") / r for r in s.depends}
        opts = stage_options(s, fake_dirs, Path("/nonexistent/out"), 0, recipe)
        try:
            _preflight(opts)
        except PrunekitError as exc:
            raise PrunekitError(f"recipe {recipe!r}, stage {s.name!r}: {exc}") from None


def _preflight(opts: Any) -> None:
    """Checks that need no data loaded: the dataset name is known and ``data_dir`` does not run through a file."""
    dataset = getattr(opts, "dataset", None)
    if dataset is not None:
        from ..data import dataset_info

        dataset_info(dataset)
    data_dir = getattr(opts, "data_dir", None)
    if data_dir:
        path = Path(data_dir)
        for part in (path, *path.parents):
            if part.exists():
                if not part.is_dir():
                    raise PrunekitError(f"data_dir {data_dir}: {part} is a file, not a folder")
                break
