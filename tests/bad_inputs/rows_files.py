"""Bad-input rows: checkpoint and dataset files, paths, concurrent runs and resume (CLI)."""
from __future__ import annotations

from .table import (
    _RUN,
    _TINY,
    BASE,
    GOOD_STAGE,
    HEAD,
    HOSTILE,
    _hold_lock,
    _make_file,
    _ro_out,
    _unreadable,
    add,
    cli,
    recipe,
)

# ------------------------------------------------------------------------------------------------ checkpoints

CK_META = ("meta-json-list meta-json-string meta-json-number meta-json-null meta-not-json meta-missing-model "
           "meta-missing-num-classes meta-missing-in-channels meta-missing-format meta-format-future "
           "meta-num-classes-ten meta-num-classes-neg meta-num-classes-zero meta-num-classes-huge "
           "meta-num-classes-float meta-num-classes-bool meta-in-channels-zero meta-in-channels-neg "
           "meta-in-channels-huge meta-model-unknown meta-model-list meta-model-null meta-options-list "
           "meta-options-unknown meta-plan-string meta-plan-list meta-plan-bad-groups meta-cfg-string "
           "meta-storage-bogus meta-factory-not-mapping meta-checksum-garbage meta-cfg-garbage").split()
CK_FILES = ("tensor-missing tensor-extra tensor-shape mask-shape mask-unknown-param bitflip truncated-half "
            "truncated-header header-len-huge empty-file random-bytes no-metadata zip-as-safetensors "
            "pt-not-state-dict pt-truncated dir-empty dir-model-is-dir symlink-loop through-file missing "
            "a-file").split()
for name in CK_META + CK_FILES + sorted(HOSTILE):
    klass = "path" if name in ("through-file", "missing", "symlink-loop", "a-file") else "checkpoint"
    add(cli(f"eval-checkpoint-{name}", "files", klass, *BASE["eval"], "--checkpoint", f"<f:{name}>",
            hostile=name in HOSTILE))
add(cli("eval-checkpoint-meta-cfg-60000-wide", "files", "bomb", *BASE["eval"], "--checkpoint",
        "<f:meta-cfg-60000-wide>"))
for name in sorted(HOSTILE) + ["pt-not-state-dict", "pt-truncated"]:
    add(cli(f"eval-checkpoint-{name}-with-model", "files", "checkpoint", *BASE["eval"], "--checkpoint",
            f"<f:{name}>", "--model", "lenet5", hostile=name in HOSTILE))
for cmd, names in (("info", "meta-json-list meta-num-classes-huge meta-cfg-60000-wide bitflip truncated-half "
                            "pickle-code-as-safetensors meta-factory-os-mkdir dir-empty"),
                   ("prune", "meta-num-classes-ten meta-in-channels-zero truncated-half bitflip symlink-loop "
                             "torchsave-code-pt"),
                   ("finetune", "meta-json-string meta-plan-string tensor-shape dir-empty"),
                   ("scratch", "meta-plan-bad-groups meta-missing-model"),
                   ("sweep", "meta-missing-model mask-shape"),
                   ("export", "meta-in-channels-zero tensor-missing"),
                   ("l1", "meta-num-classes-neg meta-cfg-garbage")):
    for name in names.split():
        argv = (*BASE[cmd], "--checkpoint", f"<f:{name}>")
        if name in ("torchsave-code-pt",):
            argv = (*argv, "--model", "lenet5")
        klass = "bomb" if name in ("meta-cfg-60000-wide", "meta-num-classes-huge") else \
            "path" if name == "symlink-loop" else "checkpoint"
        add(cli(f"{'prune-l1' if cmd == 'l1' else cmd}-checkpoint-{name}", "files", klass, *argv,
                hostile=name in HOSTILE))
add(cli("ensemble-member-corrupt", "files", "checkpoint", *BASE["ensemble"],
        "--checkpoints=<f:lenet>,<f:truncated-half>"),
    cli("ensemble-member-hostile", "files", "checkpoint", *BASE["ensemble"],
        "--checkpoints=<f:lenet>,<f:pickle-code-as-safetensors>", hostile=True),
    cli("eval-checkpoint-fifo", "files", "path", *BASE["eval"], "--checkpoint", "<f:fifo>", isolate=True),
    cli("eval-checkpoint-dev-zero", "files", "path", *BASE["eval"], "--checkpoint", "/dev/zero"),
    cli("run-recipe-fifo", "cli", "path", "run", "<f:fifo-yaml>", "--out", "<out>", isolate=True),
    cli("run-recipe-dev-zero", "cli", "bomb", "run", "/dev/zero", "--out", "<out>", isolate=True),
    cli("ensemble-member-missing", "files", "path", *BASE["ensemble"], "--checkpoints=<f:lenet>,<f:missing>"),
    cli("distill-teacher-corrupt", "files", "checkpoint", *BASE["distill"], "--teachers=<f:meta-json-list>"),
    cli("distill-teacher-hostile", "files", "checkpoint", *BASE["distill"], "--teachers=<f:meta-factory-os-mkdir>",
        hostile=True))

# ------------------------------------------------------------------------------------------------ data

_MNIST = ("train", "--model", "lenet5", "--dataset", "mnist", *_TINY, "--out", "<out>", "--data-dir")
for name in ("idx-bad-magic idx-dims-mismatch idx-ndim-zero idx-ndim-255 idx-dims-overflow idx-labels-range "
             "idx-label-count idx-float-images idx-images-2d idx-empty-file idx-truncated-gz idx-not-gzip "
             "idx-missing-files").split():
    add(cli(f"train-mnist-{name[4:]}", "files", "data", *_MNIST, f"<f:{name}>"))
add(cli("train-fashion-mnist-bad-magic", "files", "data", "train", "--model", "lenet5", "--dataset",
        "fashion-mnist", *_TINY, "--out", "<out>", "--data-dir", "<f:idx-bad-magic>"),
    cli("train-mnist-gzip-bomb", "files", "bomb", *_MNIST, "<f:idx-gzip-bomb>", isolate=True))
_CIFAR = ("train", "--model", "resnet20", "--dataset", "cifar10", *_TINY, "--out", "<out>", "--data-dir")
for name in ("cifar-nested-dicts cifar-code-pickle cifar-eval-global cifar-list-not-dict cifar-missing-data "
             "cifar-data-float cifar-data-shape cifar-labels-count cifar-labels-range cifar-labels-strings "
             "cifar-truncated cifar-empty-file cifar-persistent-id cifar-object-array cifar-not-pickle "
             "cifar-meta-code").split():
    add(cli(f"train-{name}", "files", "bomb" if name == "cifar-nested-dicts" else "data", *_CIFAR, f"<f:{name}>",
            hostile=name in ("cifar-code-pickle", "cifar-eval-global", "cifar-meta-code")))
add(cli("train-cifar100-missing-fine-labels", "files", "data", "train", "--model", "resnet20", "--dataset",
        "cifar100", *_TINY, "--out", "<out>", "--data-dir", "<f:cifar100-missing-fine>"),
    )
_IMG = ("train", "--model", "resnet20", "--dataset", "imagenet:crop_size=8,resize_size=8", *_TINY, "--out",
        "<out>", "--data-dir")
for name in ("img-empty-class img-class-loop img-class-alias img-no-images img-val-extra-class img-corrupt-image "
             "img-zero-byte-image img-no-splits").split():
    add(cli(f"train-{name}", "files", "path" if "loop" in name else "data", *_IMG, f"<f:{name}>"))
add(cli("train-img-class-loops-two", "files", "bomb", *_IMG, "<f:img-class-loops-two>", isolate=True),
    cli("train-data-dir-is-file", "files", "path", *_MNIST, "<f:a-file>"),
    cli("train-data-dir-missing", "files", "path", *_CIFAR, "<f:missing>"),
    cli("train-data-dir-through-file", "files", "path", *_MNIST, "<f:through-file>"))

for cmd in ("train", "prune", "eval", "export", "finetune"):
    add(cli(f"{cmd}-out-is-file", "runs", "path", *BASE[cmd][:-1], "<work>/outfile", setup=_make_file("outfile")),
        cli(f"{cmd}-out-through-file", "runs", "path", *BASE[cmd][:-1], "<work>/outfile/sub",
            setup=_make_file("outfile")))
for cmd in ("train", "prune", "sweep"):
    add(cli(f"{cmd}-out-read-only", "runs", "path", *BASE[cmd][:-1], "<work>/ro/run", setup=_ro_out))
add(cli("eval-checkpoint-permission-denied", "files", "path", *BASE["eval"], "--checkpoint",
        "<work>/secret.safetensors", setup=_unreadable, needs_nonroot=True),
    cli("run-out-is-file", "runs", "path", "run", "<work>/recipe.yaml", "--out", "<work>/outfile",
        setup=lambda w, f: (_make_file("outfile")(w, f), recipe(HEAD + "stages:\n" + GOOD_STAGE)(w, f))[0]))

# ------------------------------------------------------------------------------------------------ runs

for cmd in ("train", "prune", "finetune", "eval", "export", "sweep"):
    add(cli(f"{cmd}-out-locked-by-live-run", "runs", "run", *BASE[cmd], prior="lenet", setup=_hold_lock))
add(cli("run-out-locked-by-live-run", "runs", "run", *_RUN, prior="lenet",
        setup=lambda w, f: (recipe(HEAD + "stages:\n" + GOOD_STAGE)(w, f), _hold_lock(w, f))[1]))
for vid, extra in (("epochs", ("--epochs", "2")), ("lr", ("--lr", "0.05")), ("seed", ("--seed", "1")),
                   ("batch-size", ("--batch-size", "8")), ("wd", ("--wd", "0.001")),
                   ("momentum", ("--momentum", "0.5")), ("model", ("--model", "resnet20")),
                   ("dataset", ("--dataset", "synthetic")), ("limit", ("--limit", "8")),
                   ("schedule", ("--schedule", "cosine"))):
    add(cli(f"train-resume-changed-{vid}", "runs", "run", *BASE["train"], "--resume", *extra, prior="lenet"))
add(cli("finetune-resume-changed-checkpoint", "runs", "run", *BASE["finetune"], "--resume", "--checkpoint",
        "<f:lenet>", prior="finetune-run"),
    cli("finetune-resume-changed-lr", "runs", "run", *BASE["finetune"], "--resume", "--lr", "0.5",
        prior="finetune-run"),
    cli("scratch-resume-changed-epochs", "runs", "run", *BASE["scratch"], "--resume", "--epochs", "3",
        prior="scratch-run"),
    cli("distill-resume-changed-temperature", "runs", "run", *BASE["distill"], "--resume", "--temperature", "2",
        prior="distill-run"),
    cli("train-resume-into-prune-folder", "runs", "run", *BASE["train"], "--resume", prior="lenet-pruned"),
    cli("train-resume-state-code-pickle", "runs", "run", *BASE["train"], "--resume", "--epochs", "2",
        prior="folder-with-code-state", hostile=True),
    cli("train-resume-state-garbage", "runs", "run", *BASE["train"], "--resume", "--epochs", "2",
        prior="state-garbage"),
    )

add(cli("quickstart-out-is-file", "runs", "path", *BASE["quickstart"][:2], "<work>/outfile", *BASE["quickstart"][3:],
        setup=_make_file("outfile")),
    cli("quickstart-out-locked-by-live-run", "runs", "run", *BASE["quickstart"], prior="lenet",
        setup=_hold_lock),
    cli("scratch-checkpoint-bitflip", "files", "checkpoint", *BASE["scratch"], "--checkpoint", "<f:bitflip>"),
    cli("scratch-checkpoint-dir-empty", "files", "path", *BASE["scratch"], "--checkpoint", "<f:dir-empty>"),
    cli("train-checkpoint-meta-json-list", "files", "checkpoint", *BASE["train"], "--checkpoint",
        "<f:meta-json-list>"),
    cli("train-checkpoint-bitflip", "files", "checkpoint", *BASE["train"], "--checkpoint", "<f:bitflip>"),
    cli("train-checkpoint-pickle-code-pth-with-model", "files", "checkpoint", *BASE["train"], "--checkpoint",
        "<f:pickle-code-pth>", hostile=True),
    cli("ensemble-member-bitflip", "files", "checkpoint", *BASE["ensemble"], "--checkpoints=<f:lenet>,<f:bitflip>"),
    cli("ensemble-member-num-classes-ten", "files", "checkpoint", *BASE["ensemble"],
        "--checkpoints=<f:meta-num-classes-ten>,<f:lenet>"),
    cli("distill-teacher-bitflip", "files", "checkpoint", *BASE["distill"], "--teachers=<f:bitflip>"))

