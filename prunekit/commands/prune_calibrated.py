"""``prunekit prune --method wanda|sparsegpt``: calibrated one-shot pruning from the command line.

Calibration data: ``--calibration FILE`` (text: tokenised by ``--tokenizer DIR`` when given, else bytes; the last
tenth is held out and never sampled) cut into ``--calibration-samples`` windows of ``--seq-len`` tokens (seeded by
``--seed``), or ``--calibration dataset`` for the first ``--calibration-samples`` training images of
``--dataset``. ``--ratio R`` or ``--nm N:M``. With ``--eval`` on text: perplexity before and after on the held-out
text (``--eval-text FILE`` or the held-out tenth), in non-overlapping ``--seq-len`` windows (the first ``--limit``).

Outputs in ``--out``: ``model.safetensors`` (weights + masks), ``prune_report.csv`` / ``.md``,
``calibration_report.csv`` (per layer: sparsity and reconstruction error), ``summary.json``.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch

from ..errors import PrunekitError

log = logging.getLogger(__name__)

CALIBRATED_METHODS = ("wanda", "sparsegpt")
#: Options that only calibrated methods take.
CALIBRATION_FLAGS = ("calibration", "nm", "blocks", "tokenizer", "eval_text")
_NM = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def parse_nm(text: str) -> tuple[int, int]:
    """``"2:4"`` -> ``(2, 4)`` (``1 <= n < m``)."""
    hit = _NM.match(str(text))
    if not hit:
        raise PrunekitError(f"--nm must look like N:M (e.g. 2:4), got {text!r}")
    n, m = int(hit.group(1)), int(hit.group(2))
    if not 1 <= n < m:
        raise PrunekitError(f"--nm needs 1 <= N < M, got {n}:{m}")
    return n, m


def check_args(opts: Any) -> None:
    """Rules of the calibrated methods: calibration data, exactly one of --ratio / --nm, files that exist."""
    if opts.method not in CALIBRATED_METHODS:
        given = [f"--{k.replace('_', '-')}" for k in CALIBRATION_FLAGS if getattr(opts, k, None) is not None]
        if given:
            raise PrunekitError(f"{', '.join(given)} only apply to the calibrated methods "
                                f"({', '.join(CALIBRATED_METHODS)})")
        return
    if not opts.calibration:
        raise PrunekitError(f"--method {opts.method} needs calibration data: --calibration FILE (text) or "
                            "--calibration dataset")
    if opts.nm is not None:
        parse_nm(opts.nm)
        if opts.ratio is not None:
            raise PrunekitError("give --ratio or --nm, not both")
    elif opts.ratio is None:
        raise PrunekitError(f"--method {opts.method} needs --ratio R (e.g. 0.5) or --nm N:M (e.g. 2:4)")
    if opts.calibration != "dataset" and not Path(opts.calibration).is_file():
        raise PrunekitError(f"--calibration {opts.calibration}: no such file")
    if opts.eval_text is not None and not Path(opts.eval_text).is_file():
        raise PrunekitError(f"--eval-text {opts.eval_text}: no such file")
    if opts.min_threshold is not None:
        raise PrunekitError(f"--min-threshold only applies to gpmt, not to {opts.method}")


def _batches(items: list[torch.Tensor], size: int) -> list[torch.Tensor]:
    return [torch.cat(items[i:i + size]) for i in range(0, len(items), size)]


def _calibration(opts: Any) -> tuple[list[torch.Tensor], torch.Tensor | None, str]:
    """(calibration batches, held-out tokens or None, a description)."""
    from ..data.text import calibration_samples, encode, load_tokenizer, read_text_bytes, split_stream

    if opts.calibration == "dataset":
        from ..data.loader import BatchLoader
        from .common import load_datasets

        train = load_datasets(opts, train=True, test=False)[0]
        loader = BatchLoader(train, min(opts.batch_size, opts.calibration_samples), shuffle=True, seed=opts.seed,
                             train=False, limit=opts.calibration_samples)
        batches = [x for x, _ in loader]  # normalised as for evaluation, no augmentation
        n = sum(b.shape[0] for b in batches)
        return batches, None, f"{n} training images of {opts.dataset} (seed {opts.seed})"
    tok = load_tokenizer(opts.tokenizer)
    if opts.tokenizer is not None and tok is None:
        raise PrunekitError(f"--tokenizer {opts.tokenizer}: no tokenizer files in that folder")
    ids = encode(read_text_bytes(opts.calibration), tok)
    calib, held = split_stream(ids, 0.1)
    if opts.eval_text is not None:
        held = encode(read_text_bytes(opts.eval_text), tok)
    samples = calibration_samples(calib, opts.calibration_samples, opts.seq_len, seed=opts.seed)
    what = (f"{len(samples)} x {opts.seq_len} {'tokens' if tok is not None else 'bytes'} of {opts.calibration} "
            f"(seed {opts.seed})")
    return _batches(samples, opts.batch_size), held, what


def run(opts: Any) -> int:
    """Prune ``opts.checkpoint`` (or a fresh ``opts.model``) with a calibrated method; write the outputs."""
    from ..checkpoint import save_model
    from ..metrics.perplexity import perplexity
    from ..pruning.masks import apply_masks
    from ..pruning.reports import markdown_report, write_prune_report
    from ..pruning.scope import make_scope
    from ..pruning.unstructured import prune_unstructured
    from ..utils.io import write_csv, write_json
    from ..utils.table import markdown_table
    from .common import DEFAULT_DATASET, data_facts, model_from_args, out_dir

    check_args(opts)
    n, m = parse_nm(opts.nm) if opts.nm is not None else (None, None)
    scope = make_scope(opts.scope, opts.include, opts.exclude, opts.skip_first, opts.skip_last,
                       default_kinds=("conv", "linear"))
    batches, held, what = _calibration(opts)
    facts = data_facts(opts.dataset or DEFAULT_DATASET) if opts.calibration == "dataset" else None
    ckpt = model_from_args(opts, facts)
    model = ckpt.model.to("cpu").eval()
    old = {k: v.to(torch.bool) for k, v in (ckpt.masks or {}).items()}
    if old:
        apply_masks(model, old)
    ppl_before = ppl_after = None
    if opts.eval and held is not None:
        ppl_before = perplexity(model, held, opts.seq_len, batch_size=min(opts.batch_size, 16),
                                max_windows=opts.limit).perplexity
    res = prune_unstructured(model, opts.method, opts.ratio, data=batches, n=n, m=m, scope=scope, blocks=opts.blocks,
                             allow_empty_layers=opts.allow_empty_layers)
    masks = dict(old)
    for k, v in res.masks.items():
        masks[k] = v.cpu() & old[k].cpu() if k in old else v.cpu()
    apply_masks(model, masks)
    report = res.report
    if opts.eval and held is not None:
        ppl_after = perplexity(model, held, opts.seq_len, batch_size=min(opts.batch_size, 16),
                               max_windows=opts.limit).perplexity
    elif opts.eval:
        report.notes.append("--eval: perplexity needs text calibration data; nothing evaluated")
    report.notes.append(f"calibration: {what}")
    if not opts.checkpoint:
        log.info("note: no --checkpoint: pruned a freshly initialised model; its quality means nothing")
        report.notes.append("pruned a freshly initialised model (no --checkpoint)")
    out = out_dir(opts)
    summary_report = report.to_dict()
    extra = {"prune": report.summary(), "source_checkpoint": opts.checkpoint, "calibration": what}
    save_model(model, out, masks=masks, extra=extra, storage=opts.storage)
    files = ["model.safetensors"] + [p.name for p in write_prune_report(report, out).values()]
    rows = [{"layer": lay.name, "weights": lay.weights, "pruned": lay.pruned, "sparsity": lay.sparsity,
             "error": report.layer_errors.get(lay.name)} for lay in report.layers]
    write_csv(out / "calibration_report.csv", rows, ("layer", "weights", "pruned", "sparsity", "error"))
    files += ["calibration_report.csv", "summary.json"]
    summary = {"command": "prune", "method": opts.method, "model": getattr(model, "prunekit_name", None)
               or getattr(model, "prunekit_factory", {}).get("target"), "checkpoint": opts.checkpoint,
               "ratio": report.ratio, "nm": opts.nm, "sparsity": report.sparsity,
               "total_weights": report.total_weights, "total_pruned": report.total_pruned,
               "perplexity_before": ppl_before, "perplexity_after": ppl_after, "seconds": report.seconds,
               "peak_rss": report.peak_rss, "rss_rise": report.rss_rise, "blocks": report.blocks,
               "mean_error": report.mean_error, "calibration": what, "report": summary_report, "files": files}
    write_json(out / "summary.json", summary)
    print(markdown_report(report))
    print()
    print(markdown_table(["layer", "sparsity %", "error ‖WX−ŴX‖/‖WX‖"],
                         [[r["layer"], f"{100 * r['sparsity']:.2f}", f"{r['error']:.4f}"] for r in rows]))
    print(f"{opts.method}: {len(report.blocks)} block(s), {report.total_pruned:,} of {report.total_weights:,} "
          f"weights pruned, mean layer error {report.mean_error:.4f}, {report.seconds:.2f}s, peak RSS "
          f"{report.peak_rss / 2 ** 20:.0f} MiB (+{report.rss_rise / 2 ** 20:.0f} MiB)")
    if ppl_before is not None:
        print(f"held-out perplexity: {ppl_before:.3f} -> {ppl_after:.3f}")
    print(f"wrote {out / 'model.safetensors'} and reports in {out}")
    return 0
