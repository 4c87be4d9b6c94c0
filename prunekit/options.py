"""Typed options of every prunekit command: one dataclass per command, one vocabulary for the CLI and recipes.

A command declares its options as a dataclass whose fields are made with :func:`option` (type, default, help,
numeric bounds, choices, list-ness, flag aliases). From that one declaration:

- :func:`add_arguments` builds the argparse flags (``label_smoothing`` -> ``--label-smoothing``);
- :func:`from_namespace` turns parsed flags into the dataclass, :func:`from_mapping` a recipe stage's ``args``
  (unknown keys and bad values are errors naming the recipe field);
- :meth:`Options.validate` checks every field with :func:`prunekit.errors.check_number` (NaN/inf, ranges,
  integers) and the choices, so a library caller constructing the dataclass directly gets the same checks.

Shared groups (:class:`CommonOptions`, :class:`TrainingOptions`, :class:`LatencyOptions`) are composed by
inheritance; a command changes a shared default with :func:`redefault`::

    @dataclass
    class FinetuneOptions(TrainingOptions, CommonOptions):
        COMMAND: ClassVar[str] = "finetune"
        epochs: int = redefault(TrainingOptions, "epochs", 40)
"""
from __future__ import annotations

import argparse
import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, Mapping, Sequence, TypeVar

from .errors import PrunekitError, check_number

T = TypeVar("T", bound="Options")
_MISSING = dataclasses.MISSING


@dataclass(frozen=True)
class Spec:
    """What a field means on the command line and in a recipe."""

    kind: type = str                  # str, int, float or bool (the element type for lists)
    help: str = ""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] | None = None
    many: bool = False                # a list: nargs on the CLI (``--ratios 0.1 0.2`` or ``0.1,0.2``), a YAML list
    split: bool = True                # lists: also split each CLI token on commas
    aliases: tuple[str, ...] = ()     # extra flag spellings (``--wd``); also accepted as recipe keys
    required: bool = False
    metavar: str | None = None
    negatable: bool = False           # bool: also ``--no-NAME``
    flag: str | None = None           # the flag's own spelling when it is not derived from the name
    group: str = "options"
    cli: bool = True                  # False: a library/recipe-only field with no flag
    positional: bool = False          # a positional argument on the command line (``prunekit run RECIPE``)
    raw: bool = False                 # passed through unconverted (the command parses it: e.g. --cfg text or list)

    def bounds(self) -> dict[str, Any]:
        return dict(low=self.low, high=self.high, low_open=self.low_open, high_open=self.high_open,
                    integer=self.kind is int)


def option(default: Any = None, kind: type = str, help: str = "", *, low: float | None = None,
           high: float | None = None, low_open: bool = False, high_open: bool = False,
           choices: Iterable[str] | None = None, many: bool = False, split: bool = True,
           aliases: Sequence[str] = (), required: bool = False, metavar: str | None = None, negatable: bool = False,
           flag: str | None = None, group: str = "options", cli: bool = True, raw: bool = False,
           positional: bool = False) -> Any:
    """A dataclass field carrying a :class:`Spec`. Lists default to a fresh empty list when ``default`` is None."""
    spec = Spec(kind=kind, help=help, low=low, high=high, low_open=low_open, high_open=high_open,
                choices=tuple(choices) if choices is not None else None, many=many, split=split,
                aliases=tuple(aliases), required=required, metavar=metavar, negatable=negatable, flag=flag,
                group=group, cli=cli, raw=raw, positional=positional)
    if many and default is None:
        return field(default_factory=list, metadata={"spec": spec})
    if isinstance(default, (list, dict, set)):
        frozen = list(default)
        return field(default_factory=lambda: list(frozen), metadata={"spec": spec})
    return field(default=default, metadata={"spec": spec})


def redefault(cls: type, name: str, default: Any, **changes: Any) -> Any:
    """The field ``name`` of ``cls`` with another default (and optionally other :class:`Spec` values)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    spec = dataclasses.replace(f.metadata["spec"], **changes)
    if isinstance(default, list):
        frozen = list(default)
        return field(default_factory=lambda: list(frozen), metadata={"spec": spec})
    return field(default=default, metadata={"spec": spec})


def spec_of(f: dataclasses.Field) -> Spec:
    """The :class:`Spec` of a field (plain fields: a string option)."""
    return f.metadata.get("spec") or Spec()


def flag_name(f: dataclasses.Field) -> str:
    """``--label-smoothing`` for the field ``label_smoothing``."""
    spec = spec_of(f)
    return spec.flag or "--" + f.name.replace("_", "-")


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not _MISSING:
        return f.default
    if f.default_factory is not _MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


@dataclass
class Options:
    """Base of every command's options. ``COMMAND`` names the command (used in messages)."""

    COMMAND: ClassVar[str] = ""
    LOCKS_OUT: ClassVar[bool] = True   # run_command holds ``out`` locked while the command runs

    def validate(self: T, where: str | None = None) -> T:
        """Coerce and check every field in place (numbers, integers, choices, lists); return ``self``."""
        for f in dataclasses.fields(self):
            name = f"{where}, field {f.name!r}" if where else flag_name(f)
            setattr(self, f.name, coerce(f, getattr(self, f.name), name))
        return self

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain JSON-able values."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def normalize_choice(value: str, choices: Sequence[str]) -> str | None:
    """``value`` spelled as in ``choices``: hyphens and underscores are interchangeable. None if not a choice."""
    if value in choices:
        return value
    key = value.replace("_", "-").lower()
    for c in choices:
        if c.replace("_", "-").lower() == key:
            return c
    return None


def _one(spec: Spec, value: Any, name: str) -> Any:
    if spec.kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise PrunekitError(f"{name} must be true or false, got {value!r}")
    if spec.kind in (int, float):
        return check_number(name, value, **spec.bounds()) if spec.kind is int else \
            float(check_number(name, value, **spec.bounds()))
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise PrunekitError(f"{name} must be a string, got {value!r}")
    value = str(value)
    if spec.choices is not None:
        got = normalize_choice(value, spec.choices)
        if got is None:
            raise PrunekitError(f"{name} must be one of {', '.join(spec.choices)}, got {value!r}")
        return got
    return value


def coerce(f: dataclasses.Field, value: Any, name: str) -> Any:
    """``value`` for field ``f`` converted and checked (errors name ``name``); None stays None (not given)."""
    spec = spec_of(f)
    if spec.raw:
        return value
    if value is None:
        if spec.many:
            return []
        return None
    if spec.many:
        items: list[Any] = []
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, str) and spec.split:
                items += [t.strip() for t in v.split(",") if t.strip()]
            else:
                items.append(v)
        return [_one(spec, v, f"{name} value" if spec.kind in (int, float) else name) for v in items]
    if isinstance(value, (list, tuple)):
        raise PrunekitError(f"{name} takes one value, got a list {list(value)!r}")
    return _one(spec, value, name)


# -- argparse ----------------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser, cls: type[Options]) -> None:
    """Add one flag per field of ``cls`` to ``parser`` (values are parsed and checked by :func:`from_namespace`)."""
    groups: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        spec = spec_of(f)
        if not spec.cli:
            continue
        g = groups.get(spec.group)
        if g is None:
            g = groups[spec.group] = parser if spec.group == "options" else parser.add_argument_group(spec.group)
        flags = [flag_name(f), *spec.aliases]
        default = _default_of(f)
        help_text = spec.help
        if spec.choices:
            help_text += (" " if help_text else "") + f"({', '.join(spec.choices)})"
        if default not in (None, False, [], "") and "default" not in help_text:
            shown = ",".join(map(str, default)) if isinstance(default, list) else default
            help_text += f" (default {shown})"
        if spec.positional:
            g.add_argument(f.name, help=help_text or None, metavar=spec.metavar or f.name.upper())
            continue
        if spec.many:  # the default shows as its comma form; the first use of the flag replaces it
            default = ",".join(map(str, default)) if default else None
        kw: dict[str, Any] = dict(dest=f.name, help=help_text or None, default=default)
        if spec.kind is bool and not spec.many:
            kw["action"] = argparse.BooleanOptionalAction if spec.negatable else "store_true"
        else:
            kw["metavar"] = spec.metavar or f.name.upper()
            if spec.many:
                kw.update(nargs="+", action=_ListAction)
            if spec.required:
                kw["required"] = True
        g.add_argument(*flags, **kw)


class _ListAction(argparse.Action):
    """``--flag A B --flag C``: the values given (the default, a comma string, is replaced at the first use)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        current = getattr(namespace, self.dest, None)
        setattr(namespace, self.dest, (current if isinstance(current, list) else []) + list(values))


def from_namespace(cls: type[T], args: argparse.Namespace) -> T:
    """The options of ``cls`` from parsed flags (argparse holds the fields' defaults); all are checked."""
    values = {}
    for f in dataclasses.fields(cls):
        got = getattr(args, f.name, None)
        if got is not None:
            values[f.name] = got
    return _build(cls, values, None)


def from_mapping(cls: type[T], mapping: Mapping[str, Any], where: str = "options") -> T:
    """The options of ``cls`` from a mapping (a recipe stage's ``args``); keys may use ``-`` or ``_`` and any flag
    alias. An unknown key or a bad value raises a :class:`PrunekitError` naming ``where`` and the field."""
    names = keys_of(cls)
    values: dict[str, Any] = {}
    for key, value in mapping.items():
        canon = names.get(str(key).replace("-", "_"))
        if canon is None:
            valid = ", ".join(sorted(f.name for f in dataclasses.fields(cls) if spec_of(f).cli))
            raise PrunekitError(f"{where}: unknown option {key!r} for command {cls.COMMAND!r}; valid: {valid}")
        if value is not None:
            values[canon] = value
    return _build(cls, values, where)


def to_argv(mapping: Mapping[str, Any]) -> list[str]:
    """``{"label_smoothing": 0.1, "amp": True, "ratios": [0.1, 0.2]}`` as ``--label-smoothing 0.1 --amp --ratios
    0.1,0.2`` (None and False are left out): how a recipe stage's command line is shown and recorded."""
    argv: list[str] = []
    for key, value in mapping.items():
        flag = "--" + str(key).replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
        elif isinstance(value, (list, tuple)):
            argv += [flag, ",".join(str(v) for v in value)]
        else:
            argv += [flag, str(value)]
    return argv


def keys_of(cls: type[Options]) -> dict[str, str]:
    """Every accepted recipe key (field names and flag aliases, underscored) -> the field name."""
    out: dict[str, str] = {}
    for f in dataclasses.fields(cls):
        spec = spec_of(f)
        out[f.name] = f.name
        for a in (*spec.aliases, *( [spec.flag] if spec.flag else [])):
            out[a.lstrip("-").replace("-", "_")] = f.name
    return out


def _build(cls: type[T], values: Mapping[str, Any], where: str | None) -> T:
    converted: dict[str, Any] = {}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name, value in values.items():
        f = fields[name]
        converted[name] = coerce(f, value, f"{where}, field {name!r}" if where else flag_name(f))
    for name, f in fields.items():
        if spec_of(f).required and converted.get(name) in (None, []) and _default_of(f) in (None, []):
            raise PrunekitError(f"{where}: field {name!r} is required" if where else
                                f"the following arguments are required: {flag_name(f)}")
    return cls(**converted).validate(where)


# -- shared field groups ----------------------------------------------------------------------------------------
DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device(device: str, name: str = "--device") -> str:
    """``device`` if it is a valid device form and available here, else a :class:`PrunekitError`."""
    text = str(device).strip()
    if not DEVICE_RE.match(text):
        raise PrunekitError(f"{name} must be auto, cpu, cuda, cuda:N or mps, got {device!r}")
    if text.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise PrunekitError(f"{name} {text}: CUDA is not available on this machine (use cpu or auto)")
        if ":" in text and int(text.split(":")[1]) >= torch.cuda.device_count():
            raise PrunekitError(f"{name} {text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if text == "mps":
        import torch

        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise PrunekitError(f"{name} mps: MPS is not available on this machine (use cpu or auto)")
    return text


@dataclass
class DeviceOption(Options):
    """``--device``, validated up front."""

    device: str = option("auto", help="auto, cpu, cuda, cuda:N, mps", group="common options")

    def validate(self: T, where: str | None = None) -> T:
        super().validate(where)  # type: ignore[misc]
        self.device = check_device(self.device, f"{where}, field 'device'" if where else "--device")  # type: ignore
        return self


@dataclass
class CommonOptions(DeviceOption):
    """Model, data and output flags shared by every command."""

    model: str | None = option(None, help="zoo model name (default resnet20; `prunekit info --list`) or a factory "
                               "of your own architecture, module.path:callable (e.g. mypkg.nets:Net)",
                               group="common options")
    model_kwargs: str | None = option(None, help="keyword arguments of a --model module:callable factory, as a "
                                      "JSON object", metavar="JSON", group="common options")
    trust_factory: list[str] = option(None, help="allow loading checkpoints built by this factory (prunekit never "
                                      "imports code named only by a file); repeatable", many=True, split=False,
                                      metavar="MODULE:CALLABLE", group="common options")
    checkpoint: str | None = option(None, help="a model file or the output folder of any earlier prunekit command",
                                    group="common options")
    dataset: str | None = option("digits", help="digits, fashion-mnist, mnist, cifar10, cifar100, imagenet, "
                                 "synthetic", group="common options")
    data_dir: str | None = option(None, help="dataset root folder (default: the dataset's usual place)",
                                  group="common options")
    batch_size: int = option(64, int, "batch size", low=1, group="common options")
    seed: int = option(0, int, "random seed (CPU runs are bit-reproducible)", low=0, high=2 ** 63 - 1,
                       group="common options")
    out: str | None = option(None, help="output folder", required=True, group="common options")
    limit: int | None = option(None, int, "use only the first N samples of each split (quick runs)", low=1,
                               group="common options")
    debug: bool = option(False, bool, "show the traceback of user errors too", group="common options")


@dataclass
class TrainingOptions(Options):
    """Optimizer, schedule and run-control flags of every command that trains."""

    epochs: int = option(10, int, "training epochs", low=1, group="training options")
    lr: float = option(0.1, float, "initial learning rate", low=0.0, low_open=True, group="training options")
    optimizer: str = option("sgd", help="optimizer", choices=("sgd", "adam", "adamw"), group="training options")
    momentum: float = option(0.9, float, "SGD momentum", low=0.0, high=1.0, high_open=True, group="training options")
    nesterov: bool = option(False, bool, "Nesterov momentum", group="training options")
    weight_decay: float = option(1e-4, float, "weight decay", low=0.0, aliases=("--wd",), group="training options")
    schedule: str = option("multistep", help="LR schedule",
                           choices=("multistep", "step", "cosine", "linear", "onecycle", "constant"),
                           group="training options")
    milestones: list[float] = option([0.5, 0.75], float, "multistep milestones: fractions of --epochs (all < 1) or "
                                     "epoch numbers", many=True, low=0.0, low_open=True, group="training options")
    gamma: float = option(0.1, float, "LR decay factor for multistep/step", low=0.0, low_open=True,
                          group="training options")
    step_size: int = option(30, int, "epochs between decays for --schedule step", low=1, group="training options")
    warmup_epochs: float = option(0.0, float, "linear LR warm-up (epochs)", low=0.0, group="training options")
    label_smoothing: float = option(0.0, float, "label smoothing", low=0.0, high=1.0, high_open=True,
                                    group="training options")
    amp: bool = option(False, bool, "mixed precision on CUDA", group="training options")
    sync_bn: bool = option(False, bool, "SyncBatchNorm under torchrun", group="training options")
    workers: int = option(0, int, "data-loading workers (folder datasets)", low=0, high=256,
                          group="training options")
    resume: bool = option(False, bool, "continue the run in --out from its last checkpoint", group="training options")
    resume_anyway: bool = option(False, bool, "with --resume: continue even if the configuration changed (reported "
                                 "in the summary)", group="training options")
    progress: bool | None = option(None, bool, "show progress bars (default: when stderr is a terminal)",
                                   negatable=True, group="training options")


@dataclass
class LatencyOptions(DeviceOption):
    """Latency measurement flags (``--device`` is shared with the common group)."""

    latency_batch: int = option(1, int, "batch size of the latency measurement", low=1, high=65536,
                                group="latency options")
    latency_budget: float = option(3.0, float, "seconds of latency measurement per model and batch size, warm-up "
                                   "included (models compared are timed pass by pass in turn; 0 skips latency)",
                                   low=0.0, high=86400.0, metavar="SECONDS", group="latency options")


def fields_of(cls: type[Options]) -> list[str]:
    """Field names of ``cls`` in declaration order."""
    return [f.name for f in dataclasses.fields(cls)]


@dataclass
class ScopeOptions(Options):
    """Which layers a weight-level method prunes (shared by ``prune`` and ``sweep``)."""

    scope: str | None = option(None, help="conv, linear or conv,linear (default: per method)", group="scope options")
    include: list[str] = option(None, help="only layers whose name matches REGEX; repeatable", many=True,
                                split=False, metavar="REGEX", group="scope options")
    exclude: list[str] = option(None, help="skip layers whose name matches REGEX; repeatable", many=True,
                                split=False, metavar="REGEX", group="scope options")
    skip_first: bool = option(False, bool, "keep the network's first conv/linear layer dense", group="scope options")
    skip_last: bool = option(False, bool, "keep the network's last conv/linear layer dense", group="scope options")
    min_threshold: float | None = option(None, float, "gpmt: minimum percent of weights kept per layer", low=0.0,
                                         high=100.0, group="scope options")


@dataclass
class CalibrationOptions(Options):
    """Calibration data of the calibrated weight-level methods (``prunekit prune --method wanda|sparsegpt``)."""

    calibration: str | None = option(None, help="wanda/sparsegpt: a text file (tokenised by --tokenizer, else as "
                                     "bytes), or 'dataset' for the training split of --dataset", metavar="FILE",
                                     group="calibration options")
    calibration_samples: int = option(32, int, "number of calibration samples (text: windows of --seq-len tokens)",
                                      low=1, high=1 << 20, metavar="N", group="calibration options")
    seq_len: int = option(128, int, "tokens per calibration sample and per perplexity window", low=2,
                          high=1 << 20, metavar="L", group="calibration options")
    nm: str | None = option(None, help="N:M pattern instead of --ratio (keep N of every M inputs), e.g. 2:4",
                            metavar="N:M", group="calibration options")
    blocks: str | None = option(None, help="module path of the repeated blocks, e.g. model.layers (default: found "
                                "from the model)", group="calibration options")
    tokenizer: str | None = option(None, help="folder holding the model's tokenizer (local files only)",
                                   metavar="DIR", group="calibration options")
    eval_text: str | None = option(None, help="with --eval: held-out text for perplexity (default: the last tenth of "
                                   "--calibration, which calibration never samples)", metavar="FILE",
                                   group="calibration options")
