"""Bad-input rows: numbers, choices, malformed values and recipes (CLI)."""
from __future__ import annotations

from .table import _RUN, _TINY, BASE, CASES, GOOD_STAGE, HEAD, Case, _alias_bomb, add, cli, numeric, recipe

# ------------------------------------------------------------------------------------------------ numbers

# (command base, flag, value names, extra flags, id prefix): rows "<prefix>-<flag>-<value>"
NUMERIC = (
    ("train", "--epochs", "nan zero neg frac text", (), None),
    ("train", "--lr", "nan inf neg-inf neg-frac", (), None),
    ("train", "--batch-size", "zero neg nan frac", (), None),
    ("train", "--limit", "zero neg nan frac", (), None),
    ("train", "--momentum", "nan inf neg", (), None),
    ("train", "--wd", "nan inf neg", (), None),
    ("train", "--gamma", "nan inf neg", (), None),
    ("train", "--step-size", "zero neg nan", ("--schedule", "step"), None),
    ("train", "--warmup-epochs", "nan inf neg", (), None),
    ("train", "--label-smoothing", "nan neg-frac above1 inf", (), None),
    ("train", "--sparsity-reg", "nan inf neg", (), None),
    ("train", "--dropout", "nan neg-frac above1", ("--model", "wrn_16_8"), None),
    ("train", "--seed", "nan frac text", (), None),
    ("train", "--workers", "neg nan", (), None),
    ("finetune", "--lr", "nan inf", (), None),
    ("finetune", "--epochs", "zero neg", (), None),
    ("finetune", "--momentum", "nan", (), None),
    ("finetune", "--wd", "nan", (), None),
    ("finetune", "--label-smoothing", "nan", (), None),
    ("finetune", "--warmup-epochs", "nan", (), None),
    ("finetune", "--gamma", "nan", (), None),
    ("finetune", "--limit", "zero", (), None),
    ("finetune", "--batch-size", "zero", (), None),
    ("scratch", "--lr", "nan", (), None),
    ("scratch", "--epochs", "zero neg", (), None),
    ("scratch", "--wd", "nan", (), None),
    ("scratch", "--limit", "zero", (), None),
    ("distill", "--temperature", "nan zero neg inf", (), None),
    ("distill", "--alpha", "nan neg-frac above1", (), None),
    ("distill", "--lr", "nan", (), None),
    ("distill", "--epochs", "zero", (), None),
    ("prune", "--ratio", "nan inf neg-frac above1", ("--method", "gpmt", "--min-threshold", "0.05"), "prune-gpmt"),
    ("prune", "--ratio", "inf neg-inf neg-frac above1", (), "prune-global"),
    ("prune", "--ratio", "above1 neg", ("--method", "layerwise"), "prune-layerwise"),
    ("prune", "--ratio", "inf", ("--method", "random"), "prune-random"),
    ("prune", "--min-threshold", "nan neg inf above100", ("--method", "gpmt"), "prune-gpmt"),
    ("l1", "--ratio", "nan inf neg-frac above1", (), "prune-l1"),
    ("l1-plain", "--ratios", "nan neg-frac above1", (), "prune-l1"),
    ("l1-plain", "--rounds", "zero neg nan frac", (), "prune-l1"),
    ("l1", "--round-to", "zero neg nan", (), "prune-l1"),
    ("l1", "--max-group-ratio", "nan neg-frac above1", ("--global",), "prune-l1-global"),
    ("l1", "--taylor-batches", "zero neg", ("--criterion", "taylor"), "prune-l1-taylor"),
    ("l1", "--latency-repeats", "zero neg", (), "prune-l1"),
    ("l1", "--latency-threads", "zero neg", (), "prune-l1"),
    ("l1", "--latency-batch", "zero neg nan", (), "prune-l1"),
    ("l1-plain", "--target-macs", "nan zero neg-frac above1 inf", (), "prune-l1"),
    ("l1-plain", "--target-params", "nan zero above1", (), "prune-l1"),
    ("slim", "--percent", "nan neg-frac above1 inf", (), "prune-slimming"),
    ("slim", "--percent", "nan", ("--method", "slimming-mask"), "prune-slimming-mask"),
    ("sweep", "--ratios", "nan neg-frac above1 text", (), None),
    ("sweep", "--min-threshold", "nan", ("--method", "gpmt"), None),
    ("sweep", "--limit", "zero", (), None),
    ("sweep", "--batch-size", "zero", (), None),
    ("eval", "--latency-batch", "zero neg nan frac", (), None),
    ("eval", "--batch-size", "zero neg", (), None),
    ("eval", "--limit", "zero nan", (), None),
    ("eval", "--seed", "nan", (), None),
    ("ensemble", "--limit", "zero neg nan", (), None),
    ("ensemble", "--batch-size", "zero neg", (), None),
    ("export", "--opset", "nan neg zero frac", (), None),
    ("export", "--latency-threads", "zero neg nan", (), None),
    ("export", "--latency-repeats", "zero neg nan", (), None),
    ("quickstart", "--ratio", "nan inf neg-frac above1", (), None),
    ("quickstart", "--epochs", "zero neg nan", (), None),
    ("quickstart", "--finetune-epochs", "neg nan", (), None),
    ("quickstart", "--seed", "nan", (), None),
)
for _row in NUMERIC:
    numeric(_row[0], _row[1], _row[2], *_row[3], cmd=_row[4])
for method in ("layerwise", "global", "per-kind", "gp", "random"):
    numeric("prune", "--ratio", "nan", "--method", method, cmd=f"prune-{method}")
for vid, value in (("nan", "nan"), ("nanms", "nanms"), ("neg-ms", "-5ms"), ("zero", "0"), ("text-ms", "abcms"),
                   ("infms", "infms"), ("above1", "1.5")):
    add(cli(f"prune-l1-target-latency-{vid}", "cli", "number", *BASE["l1-plain"], f"--target-latency={value}"))
add(cli("sweep-ratios-one-inf", "cli", "number", *BASE["sweep"], "--ratios=0.1,inf"))
for vid, value in (("text", "a"), ("zero", "0"), ("neg", "-1"), ("frac", "1.5")):
    add(cli(f"export-latency-batch-sizes-{vid}", "cli", "number", *BASE["export"], f"--latency-batch-sizes={value}"))
    add(cli(f"prune-l1-latency-batch-sizes-{vid}", "cli", "number", *BASE["l1"],
            f"--latency-batch-sizes={value}"))
add(cli("run-seeds-text", "cli", "number", "run", "<work>/recipe.yaml", "--out", "<out>", "--seeds", "a,b"),
    cli("run-seeds-nan", "cli", "number", "run", "<work>/recipe.yaml", "--out", "<out>", "--seeds", "nan"),
    cli("run-seeds-frac", "cli", "number", "run", "<work>/recipe.yaml", "--out", "<out>", "--seeds", "1.5"))

# ------------------------------------------------------------------------------------------------ choices

for name, base, extra in (
        ("train-model-unknown", "train", ("--model", "no_such_net")),
        ("train-optimizer-unknown", "train", ("--optimizer", "sgdx")),
        ("train-schedule-unknown", "train", ("--schedule", "wavy")),
        ("train-dataset-unknown", "train", ("--dataset", "imagenet22k")),
        ("train-dropout-on-model-without-dropout", "train", ("--dropout", "0.2")),
        ("prune-method-unknown", "prune", ("--method", "magnitude-ish")),
        ("prune-scope-unknown", "prune", ("--scope", "attention")),
        ("prune-storage-unknown", "prune", ("--storage", "zip")),
        ("prune-gpmt-without-min-threshold", "prune", ("--method", "gpmt")),
        ("prune-min-threshold-not-gpmt", "prune", ("--min-threshold", "0.1")),
        ("prune-include-bad-regex", "prune", ("--include", "(")),
        ("prune-exclude-bad-regex", "prune", ("--exclude", "[")),
        ("prune-include-matches-nothing", "prune", ("--include", "^nothing_matches$")),
        ("prune-l1-criterion-unknown", "l1", ("--criterion", "entropy")),
        ("prune-l1-reduction-unknown", "l1", ("--reduction", "median")),
        ("prune-l1-plan-unknown", "l1-plain", ("--plan", "resnet9000-Z")),
        ("prune-l1-plan-for-other-model", "l1-plain", ("--plan", "vgg16-A")),
        ("prune-l1-skip-unknown-layer", "l1-plain", ("--ratios", "0.2", "--skip", "layer9.9")),
        ("prune-l1-ignore-bad-regex", "l1", ("--ignore", "(")),
        ("prune-l1-latency-runtime-unknown", "l1-plain", ("--target-latency", "0.9", "--latency-runtime", "tpu")),
        ("prune-l1-ratio-and-target-macs", "l1", ("--target-macs", "0.5")),
        ("prune-eval-dataset-unknown", "prune", ("--eval", "--dataset", "bogus")),
        ("sweep-method-unknown", "sweep", ("--method", "bogus")),
        ("sweep-method-list-one-unknown", "sweep", ("--method", "global,bogus")),
        ("sweep-scope-unknown", "sweep", ("--scope", "bogus")),
        ("eval-model-mismatch", "eval", ("--model", "resnet20")),
        ("eval-dataset-unknown", "eval", ("--dataset", "bogus")),
        ("eval-dataset-channels-mismatch", "eval", ("--dataset", "synthetic")),
        ("ensemble-mode-unknown", "ensemble", ("--mode", "vote")),
        ("distill-kd-mode-unknown", "distill", ("--kd-mode", "best_teacher")),
        ("scratch-budget-unknown", "scratch", ("--budget", "Z")),
        ("export-format-unknown", "export", ("--format", "tflite")),
        ("export-format-list-one-unknown", "export", ("--format", "torchscript,tflite")),
        ("finetune-optimizer-unknown", "finetune", ("--optimizer", "lbfgs-ish")),
):
    add(cli(name, "cli", "choice", *BASE[base], *extra))
for base in (b for b in BASE if b != "l1-plain"):
    add(cli(f"{base if base not in ('l1', 'slim') else 'prune-' + base}-device-bogus", "cli", "choice",
            *BASE[base], "--device", "bogus"))
add(cli("train-device-cuda-index-out-of-range", "cli", "choice", *BASE["train"], "--device", "cuda:99"),
    cli("run-recipe-missing", "cli", "path", "run", "<work>/nope.yaml", "--out", "<out>"),
    cli("top-unknown-command", "cli", "choice", "frobnicate"),
    cli("info-model-unknown", "cli", "choice", "info", "--model", "no_such_net"),
    cli("train-unknown-flag", "cli", "choice", *BASE["train"], "--frobnicate"))

# ------------------------------------------------------------------------------------------------ malformed

_VGG = ("train", "--model", "vgg11", "--dataset", "digits", *_TINY, "--out", "<out>")
for vid, cfg in (("text", "a,b"), ("nan", "16,M,nan"), ("zero", "0,M,4,M,4,4,M,4,4,M,4,4"),
                 ("neg", "-4,M,4,M,4,4,M,4,4,M,4,4"), ("bad-json", "[[16,"), ("empty-json", "[]"),
                 ("only-pools", "M,M,M,M,M,M,M,M,M,M,M,M"), ("frac", "4.5,M,4,M,4,4,M,4,4,M,4,4"),
                 ("json-object", '{"a": 1}')):
    add(cli(f"train-cfg-{vid}", "cli", "malformed", *_VGG, f"--cfg={cfg}"))
add(cli("train-cfg-on-model-without-cfg", "cli", "malformed", *BASE["train"], "--cfg", "16,M,32"),
    cli("train-cfg-60000-wide", "cli", "bomb", *_VGG, "--cfg", "60000,M,60000,M,60000,60000,M,60000,60000,M,"
                                                            "60000,60000"))
for vid, size in (("text", "a,b,c"), ("zero", "0,8,8"), ("neg", "-1,8,8"), ("two-dims", "1,8"), ("nan", "nan,8,8"),
                  ("frac", "1.5,8,8"), ("wrong-channels", "3,8,8")):
    add(cli(f"info-input-size-{vid}", "export", "malformed", *BASE["info"], f"--input-size={size}"))
for vid, size in (("text", "a"), ("zero", "0,8,8"), ("wrong-channels", "3,8,8")):
    add(cli(f"export-input-size-{vid}", "export", "malformed", *BASE["export"], f"--input-size={size}"))
    add(cli(f"prune-l1-input-size-{vid}", "export", "malformed", *BASE["l1"], f"--input-size={size}"))
for base in ("info", "export", "l1"):
    add(cli(f"{'prune-l1' if base == 'l1' else base}-input-size-huge", "export", "bomb", *BASE[base],
            "--input-size=3,100000,100000"))
for vid, kwargs in (("bad-json", "{bad"), ("list", "[1, 2]"), ("string", '"s"'), ("zoo-model", '{"x": 1}')):
    add(cli(f"train-model-kwargs-{vid}", "cli", "malformed", *BASE["train"], "--model-kwargs", kwargs))
add(cli("train-model-factory-missing-module", "cli", "malformed", *BASE["train"], "--model", "no_such_mod:Net"),
    cli("train-model-factory-not-a-module", "cli", "malformed", *BASE["train"], "--model", "builtins:dict"),
    cli("train-model-factory-empty-parts", "cli", "malformed", *BASE["train"], "--model", ":"),
    )
for vid, ms in (("text", "a,b"), ("nan", "nan"), ("one-nan", "0.5,nan"), ("neg", "-0.5"), 
                ("inf", "inf")):
    add(cli(f"train-milestones-{vid}", "cli", "malformed", *BASE["train"], f"--milestones={ms}"))
for vid, ds in (("n-text", "synthetic:n=abc"), ("n-neg", "synthetic:n=-5"), ("n-zero", "synthetic:n=0"),
                ("n-frac", "synthetic:n=1.5"), ("classes-one", "synthetic:classes=1"),
                ("unknown-option", "synthetic:bogus=1"), ("no-equals", "synthetic:n"),
                ("noise-nan", "synthetic:noise=nan"), ("channels-nan", "synthetic:channels=nan"),
                ("size-huge", "synthetic:size=100000"), ("n-huge", "synthetic:n=1000000000000")):
    add(cli(f"train-dataset-{vid}", "cli", "bomb" if "huge" in vid else "malformed", *BASE["train"],
            "--dataset", ds))
add(cli("ensemble-checkpoints-empty", "cli", "malformed", *BASE["ensemble"], "--checkpoints="),
    cli("ensemble-checkpoints-commas", "cli", "malformed", *BASE["ensemble"], "--checkpoints=,,"),
    cli("distill-teachers-empty", "cli", "malformed", *BASE["distill"], "--teachers="),
    cli("prune-l1-ratios-text", "cli", "malformed", *BASE["l1"], "--ratios=a,b"),
    cli("prune-l1-ratios-too-many", "cli", "malformed", *BASE["l1-plain"], "--ratios=0.1,0.2,0.3,0.4,0.5,0.6,0.7"),
    cli("prune-slimming-on-model-without-bn", "cli", "choice", "prune", "--checkpoint", "<f:lenet>", "--method",
        "slimming", "--percent", "0.3", "--out", "<out>"),
    )

RECIPES = {
    "name-escape": ("path", "name: ../../escaped\nseeds: [0]\nlimit: 16\nstages:\n" + GOOD_STAGE, False),
    "name-absolute": ("path", "name: @ROOT@/abs-escaped\nseeds: [0]\nlimit: 16\nstages:\n" + GOOD_STAGE, False),
    "name-slash": ("path", "name: a/b\nseeds: [0]\nlimit: 16\nstages:\n" + GOOD_STAGE, False),
    "name-empty": ("recipe", "name: ''\nseeds: [0]\nlimit: 16\nstages:\n" + GOOD_STAGE, False),
    "name-nul-byte": ("path", 'name: "a\\0b"\nseeds: [0]\nlimit: 16\nstages:\n' + GOOD_STAGE, False),
    "name-not-string": ("recipe", "name: [1, 2]\nseeds: [0]\nstages:\n" + GOOD_STAGE, True),
    "python-tag": ("recipe", "name: !!python/object/apply:os.mkdir ['@MARKER@']\nstages:\n" + GOOD_STAGE, True),
    "syntax-error": ("recipe", HEAD + "stages: [\n  {name: base\n", True),
    "top-level-list": ("recipe", "- a\n- b\n", True),
    "empty-file": ("recipe", "", True),
    "unknown-top-key": ("recipe", HEAD + "bogus_key: 1\nstages:\n" + GOOD_STAGE, True),
    "unknown-stage-key": ("recipe", HEAD + "stages:\n  - {name: base, command: train, bogus: 1}\n", True),
    "unknown-command": ("recipe", HEAD + "stages:\n  - {name: base, command: frobnicate}\n", True),
    "unknown-flag": ("recipe", HEAD + "stages:\n  - {name: base, command: train, args: {bogus_flag: 1}}\n", True),
    "reserved-flag-out": ("recipe", HEAD + "stages:\n  - {name: base, command: train, args: {out: x}}\n", True),
    "later-stage-lr-nan": ("number", HEAD + "stages:\n" + GOOD_STAGE +
                           "  - {name: ft, command: finetune, from: base, args: {epochs: 1, lr: .nan}}\n", True),
    "later-stage-ratio-inf": ("number", HEAD + "stages:\n" + GOOD_STAGE +
                              "  - {name: p, command: prune, from: base, args: {method: global, ratio: .inf}}\n",
                              True),
    "epochs-neg": ("number", HEAD + "stages:\n  - {name: base, command: train, args: {epochs: -1}}\n", True),
    "epochs-text": ("number", HEAD + "stages:\n  - {name: base, command: train, args: {epochs: abc}}\n", True),
    "epochs-frac": ("number", HEAD + "stages:\n  - {name: base, command: train, args: {epochs: 1.5}}\n", True),
    "epochs-bool": ("number", HEAD + "stages:\n  - {name: base, command: train, args: {epochs: true}}\n", True),
    "lr-dict": ("recipe", HEAD + "stages:\n  - {name: base, command: train, args: {lr: {a: 1}}}\n", True),
    "limit-zero": ("number", "name: r\nlimit: 0\nseeds: [0]\nstages:\n" + GOOD_STAGE, True),
    "limit-nan": ("number", "name: r\nlimit: .nan\nseeds: [0]\nstages:\n" + GOOD_STAGE, True),
    "seeds-text": ("number", "name: r\nlimit: 16\nseeds: [a]\nstages:\n" + GOOD_STAGE, True),
    "seeds-nan": ("number", "name: r\nlimit: 16\nseeds: [.nan]\nstages:\n" + GOOD_STAGE, True),
    "seeds-not-list": ("recipe", "name: r\nlimit: 16\nseeds: {a: 1}\nstages:\n" + GOOD_STAGE, True),
    "duplicate-stage": ("recipe", HEAD + "stages:\n" + GOOD_STAGE + GOOD_STAGE, True),
    "ref-unknown-stage": ("recipe", HEAD + "stages:\n  - {name: e, command: eval, args: {checkpoint: '@nope'}}\n",
                          True),
    "from-unknown-stage": ("recipe", HEAD + "stages:\n  - {name: e, command: eval, from: nope}\n", True),
    "ref-later-stage": ("recipe", HEAD + "stages:\n  - {name: e, command: eval, from: base}\n" + GOOD_STAGE, True),
    "stages-mapping": ("recipe", HEAD + "stages: {a: 1}\n", True),
    "stages-empty": ("recipe", HEAD + "stages: []\n", True),
    "stage-not-mapping": ("recipe", HEAD + "stages: [1]\n", True),
    "stages-missing": ("recipe", HEAD, True),
    "rounds-zero": ("number", HEAD + "stages:\n" + GOOD_STAGE + "  - {name: rr, command: rounds, from: base, "
                    "rounds: 0, prune: {method: global, ratio: 0.5}, finetune: {epochs: 1}}\n", True),
    "rounds-neg": ("number", HEAD + "stages:\n" + GOOD_STAGE + "  - {name: rr, command: rounds, from: base, "
                   "rounds: -1, prune: {method: global, ratio: 0.5}, finetune: {epochs: 1}}\n", True),
    "rounds-nan": ("number", HEAD + "stages:\n" + GOOD_STAGE + "  - {name: rr, command: rounds, from: base, "
                   "rounds: .nan, prune: {method: global, ratio: 0.5}, finetune: {epochs: 1}}\n", True),
    "dataset-unknown": ("choice", "name: r\ndataset: bogus\nlimit: 16\nseeds: [0]\nstages:\n" + GOOD_STAGE, True),
    "data-dir-through-file": ("path", "name: r\ndataset: mnist\ndata_dir: @ROOT@/fx/ckpt/plain-file.txt/x\n"
                              "limit: 16\nseeds: [0]\nstages:\n" + GOOD_STAGE, True),
    "report-unknown-row": ("recipe", HEAD + "report: {rows: [nope]}\nstages:\n" + GOOD_STAGE, True),
    "report-unknown-key": ("recipe", HEAD + "report: {bogus: 1}\nstages:\n" + GOOD_STAGE, True),
    "defaults-not-mapping": ("recipe", HEAD + "defaults: [1]\nstages:\n" + GOOD_STAGE, True),
    "later-stage-device-bogus": ("choice", HEAD + "stages:\n" + GOOD_STAGE +
                                 "  - {name: e, command: eval, from: base, args: {device: bogus}}\n", True),
    "later-stage-method-unknown": ("choice", HEAD + "stages:\n" + GOOD_STAGE +
                                   "  - {name: p, command: prune, from: base, args: {method: bogus}}\n", True),
}
for rid, (klass, text, with_out) in RECIPES.items():
    argv = _RUN if with_out else ("run", "<work>/recipe.yaml")
    add(cli(f"run-recipe-{rid}", "cli", klass, *argv, setup=recipe(text), hostile=rid == "python-tag"))
add(cli("run-recipe-non-utf8", "cli", "recipe", *_RUN, setup=recipe(HEAD.encode() + b"description: \xff\xfe\x80\n"
                                                                     b"stages:\n" + GOOD_STAGE.encode())),
    cli("run-recipe-alias-bomb", "cli", "bomb", *_RUN, setup=recipe(HEAD + "stages:\n" + GOOD_STAGE +
                                                                     "x-bomb:\n" + "".join(
                                                                         "  " + ln + "\n" for ln in
                                                                         _alias_bomb().splitlines())),
        isolate=True),
    cli("run-recipe-alias-bomb-in-args", "cli", "bomb", *_RUN,
        setup=recipe(HEAD + _alias_bomb().replace("a0:", "x-a0:").replace("\na", "\nx-a") +
                     "stages:\n  - {name: base, command: train, args: {model: *a9}}\n"), isolate=True),
    cli("run-recipe-is-directory", "cli", "path", "run", "<work>", "--out", "<out>"),
    cli("run-recipe-through-file", "cli", "path", "run", "<f:lenet-file>/r.yaml", "--out", "<out>"))
for rid in ("run-seeds-text", "run-seeds-nan", "run-seeds-frac"):
    i = next(i for i, c in enumerate(CASES) if c.id == rid)
    CASES[i] = Case(**{**CASES[i].__dict__, "setup": recipe(HEAD + "stages:\n" + GOOD_STAGE)})

