"""The ``sepnms`` command: one subcommand per pipeline stage.  It only parses and calls the library."""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Optional

from sepnms.errors import SepNMSError, StorageError

log = logging.getLogger("sepnms")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``sepnms <command>: error: ...``, exit 2), like every other error."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def _int_at_least(lo: int) -> Callable[[str], int]:
    """argparse type: an integer >= ``lo`` (the bound is declared with the argument, like config.py's)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {lo}, not {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, not {value}")
        return value

    parse.__name__ = f"integer >= {lo}"
    return parse


def _config_args(p: argparse.ArgumentParser, default: str = "paper") -> None:
    p.add_argument("--config", "-c", default=default,
                   help=f"a config YAML file or a preset name (paper, demo); default {default}")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=2 (repeatable)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.add_argument("--device", default=None, metavar="DEVICE",
                   help="shortcut for --set device=DEVICE (cpu, cuda, cuda:1); under torchrun, cuda means "
                        "cuda:<LOCAL_RANK>")


def _cfg(args):
    """The config of the command, its device resolved for this process (see sepnms.distributed)."""
    from sepnms.config import load_config
    from sepnms.distributed import resolve_device

    cfg = load_config(args.config, args.overrides)
    return cfg.model_copy(update={"device": resolve_device(cfg.device)})


def _shard_args(p: argparse.ArgumentParser, flush_default: Optional[int]) -> None:
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="do shard I of N (every N-th image) only; join the parts with `sepnms merge` once every "
                        "shard is done.  Under torchrun the ranks split the images and rank 0 merges by itself")
    p.add_argument("--flush-every", type=_int_at_least(1), default=flush_default, metavar="IMAGES",
                   help="write a part file every this many images (resume point after an interruption)"
                        + (f"; default {flush_default}" if flush_default else ""))


def _detect_args(p: argparse.ArgumentParser, prefix: str = "") -> None:
    p.add_argument("--images", default=None, metavar="DIR",
                   help=prefix + "detect every image of DIR (ids from the file names) instead of the dataset's")
    p.add_argument("--save-head", choices=["none", "float16", "float32"], default="none",
                   help=prefix + "also write MAttNet's head features detect/head_feats/<image_id>.h5")


def _shard(text: Optional[str]) -> Optional[tuple[int, int]]:
    """``i/n`` -> (i, n); None when not given."""
    if not text:
        return None
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise SepNMSError(f"--shard must look like i/n (e.g. 0/4), not {text!r}") from None
    if not 0 <= i < n:
        raise SepNMSError(f"--shard {text}: need 0 <= i < n")
    return i, n


def _flush(args) -> dict[str, int]:
    if args.flush_every is None:
        return {}
    if args.flush_every < 1:
        raise SepNMSError(f"--flush-every must be >= 1, not {args.flush_every}")
    return {"flush_every": args.flush_every}


def _json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float as None: JSON has no NaN / Infinity (``json.dumps``
    would print them bare, and the output would not parse)."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _print(obj: Any) -> None:
    if int(os.environ.get("RANK", 0)) == 0:  # under torchrun, rank 0 speaks for all
        print(json.dumps(_json_safe(obj), indent=2, default=str, allow_nan=False))


def _merge_command(args, what: str, extra: tuple[str, ...] = ()) -> str:
    """The ``sepnms merge`` command line that joins this run's parts: the same config, overrides
    and stage arguments (``--images D`` of detect), quoted for the shell."""
    import shlex

    words = ["sepnms", "merge", what, "--config", args.config, *extra]
    for item in args.overrides:
        words += ["--set", item]
    return " ".join(shlex.quote(str(w)) for w in words)


def _sharded(args, cfg, run, merge, what: str, extra: tuple[str, ...] = ()) -> Any:
    """Run a part-file stage over ``--shard`` / torchrun ranks / everything (sepnms.distributed)."""
    from sepnms.distributed import process_group, run_sharded

    shard = _shard(args.shard)
    with process_group(cfg.device):
        result = run_sharded(run, merge, shard)
    if shard is not None and shard[1] > 1:
        log.info("shard %d/%d of %s done; once every shard is done: %s", shard[0], shard[1], what,
                 _merge_command(args, what, extra))
    return result


# ---------------------------------------------------------------------------------------
# subcommands


def cmd_world(args) -> None:
    from sepnms.config import load_config

    cfg = load_config(args.config, args.overrides)
    if args.action == "train-detector":
        from sepnms.world.train_detector import train_world_detector

        def show(row: dict) -> None:
            if not args.quiet:
                print(json.dumps(row), flush=True)

        result = train_world_detector(cfg, Path(args.out), args.seed, args.steps,
                                      Path(args.log) if args.log else None, on_log=show,
                                      init=Path(args.init) if args.init else None)
        result.pop("history")
        _print(result)
        return
    from sepnms.engine.world import build_world

    summary = build_world(Path(args.out), cfg, args.seed, progress=not args.quiet)
    _print(summary)
    print(f"world written to {args.out}; next: sepnms prepare --config {Path(args.out) / 'config.yaml'}")


def cmd_stats(args) -> None:
    from sepnms.engine.stats import dataset_stats

    _print(dataset_stats(_cfg(args), Path(args.mentions) if args.mentions else None))


def cmd_prepare(args) -> None:
    from sepnms.engine.prepare import prepare

    _print(prepare(_cfg(args), overwrite=args.overwrite, progress=not args.quiet))


def cmd_encode_text(args) -> None:
    from sepnms.engine.encode_text import encode_text, merge_text

    cfg = _cfg(args)
    _print(_sharded(args, cfg, lambda shard, merge: encode_text(cfg, overwrite=args.overwrite, progress=not args.quiet,
                                                                shard=shard, merge=merge, **_flush(args)),
                    lambda: merge_text(cfg), "encode-text"))


def cmd_train(args) -> None:
    from sepnms.engine.train import train

    cfg = _cfg(args)
    summary = train(cfg, args.model, resume=not args.no_resume, progress=not args.quiet)
    summary.pop("history", None)
    _print(summary)


def cmd_import_weights(args) -> None:
    from sepnms.engine.import_weights import MATTNET_FORMAT, import_mattnet_release, import_weights

    if args.format == MATTNET_FORMAT:
        _print(import_mattnet_release(_cfg(args), args.source, args.name, overwrite=args.overwrite))
    else:
        _print(import_weights(_cfg(args), args.source, args.format, args.name, overwrite=args.overwrite))


def cmd_propose(args) -> None:
    from sepnms.engine.propose import merge_proposals, propose

    cfg = _cfg(args)
    paths = _sharded(args, cfg, lambda shard, merge: propose(cfg, args.model, args.splits, progress=not args.quiet,
                                                             reference=args.reference, shard=shard, merge=merge,
                                                             **_flush(args)),
                     lambda: merge_proposals(cfg, args.model, args.splits), "propose")
    _print({k: str(v) for k, v in paths.items()})


def cmd_detect(args) -> None:
    from sepnms.engine.detect import detect, merge_detect
    from sepnms.evaluation.rpn_compare import compare_rpn

    if args.compare_only and not args.compare:
        raise SepNMSError("--compare-only compares existing outputs with the pickles of --compare RPN_BOXES RPN_SCORES; "
                          "give --compare too (or drop --compare-only to detect)")
    cfg = _cfg(args)
    images = Path(args.images) if args.images else None
    extra = (*(("--images", args.images) if args.images else ()),
             *(("--save-head", args.save_head) if args.save_head != "none" else ()))
    if not args.compare_only:
        _print(_sharded(args, cfg, lambda shard, merge: detect(cfg, images, args.save_head, progress=not args.quiet,
                                                               shard=shard, merge=merge, **_flush(args)),
                        lambda: merge_detect(cfg, images, args.save_head), "detect", extra))
    if args.compare:
        from sepnms.engine.detect import detect_paths

        ours = detect_paths(cfg)
        _print(compare_rpn(ours["rpn_boxes"], ours["rpn_box_scores"], Path(args.compare[0]), Path(args.compare[1])))


def cmd_merge(args) -> None:
    cfg = _cfg(args)
    if args.stage == "detect":
        from sepnms.engine.detect import merge_detect

        _print(merge_detect(cfg, Path(args.images) if args.images else None, args.save_head))
    elif args.stage == "propose":
        from sepnms.engine.propose import merge_proposals

        _print({k: str(v) for k, v in merge_proposals(cfg, args.model, args.splits).items()})
    elif args.stage == "encode-text":
        from sepnms.engine.encode_text import merge_text

        _print(merge_text(cfg))
    else:
        from sepnms.clip.labeller import merge_clip_ctx

        _print(merge_clip_ctx(cfg))


def cmd_fuse(args) -> None:
    from sepnms.engine.evaluate import Method, fuse

    cfg = _cfg(args)
    rule = args.rule or cfg.fusion.rule
    method = Method(args.name or f"{args.model}_{rule}", args.model, rule)
    _print({k: str(v) for k, v in fuse(cfg, method, args.splits).items()})


def cmd_evaluate(args) -> None:
    from sepnms.engine.evaluate import evaluate

    _print(evaluate(_cfg(args), args.methods, progress=not args.quiet, dets=args.dets))


def cmd_export(args) -> None:
    from sepnms.engine.evaluate import export

    _print([str(p) for p in export(_cfg(args), args.method, args.splits, args.top_n, args.tag)])


def cmd_downstream(args) -> None:
    from sepnms.data.refdb import load_refdb
    from sepnms.evaluation.downstream import check_prediction_ids, downstream_accuracy, load_predictions

    cfg = _cfg(args)
    refdb_path = Path(cfg.workdir) / "prepare" / "refdb.json"
    refdb = load_refdb(refdb_path)
    refdb.check_splits([args.split], refdb_path)
    exprs = refdb.split(args.split)
    gt = {int(e["sent_id"]): [e["gt_box"][0], e["gt_box"][1], e["gt_box"][2] - e["gt_box"][0], e["gt_box"][3] - e["gt_box"][1]]
          for e in exprs}
    preds = load_predictions(args.predictions)
    check_prediction_ids(preds, gt, args.predictions, args.split)
    acc = downstream_accuracy(preds, gt, len(exprs))
    _print({"split": args.split, "expressions": len(exprs), "accuracy": acc})


def cmd_clip_finetune(args) -> None:
    from sepnms.clip.finetune import clip_finetune

    _print(clip_finetune(_cfg(args), overwrite=args.overwrite, progress=not args.quiet))


def cmd_clip_ctx(args) -> None:
    from sepnms.clip.labeller import clip_ctx, merge_clip_ctx

    cfg = _cfg(args)
    _print(_sharded(args, cfg, lambda shard, merge: clip_ctx(cfg, overwrite=args.overwrite, progress=not args.quiet,
                                                             shard=shard, merge=merge, **_flush(args)),
                    lambda: merge_clip_ctx(cfg), "clip-ctx"))


def cmd_demo(args) -> None:
    from sepnms.engine.demo import run_demo
    from sepnms.io.atomic import check_output_folder

    if args.config != "demo":  # the demo builds its world and configs from the demo preset; --set still applies
        raise SepNMSError(f"demo runs the demo preset on its embedded world; --config {args.config} would be ignored "
                          "(change values with --set KEY=VALUE, or run the stages one by one with your config)")
    check_output_folder(Path(args.workdir), "--workdir")
    metrics = run_demo(Path(args.workdir), args.seed, args.overrides, progress=not args.quiet)
    _print(metrics)
    print(f"report: {Path(args.workdir) / 'report.md'}")


def cmd_predict(args) -> None:
    from sepnms.engine.look.predict import Predictor
    from sepnms.io.atomic import check_output_target

    if args.figure:
        check_output_target(Path(args.figure))  # before the work: a folder, a device node, under a file
    pred = Predictor.from_config(_cfg(args), args.model, args.rule)
    proposals = pred.predict(args.image, args.expr)
    shown = proposals if args.all else [p for p in proposals if p.kept]
    result = {"image": args.image, "image_id": pred.image_id(args.image), "expression": args.expr, "model": pred.name, "rule": pred.rule,
              "conf": pred.conf, "proposals": [p.to_dict() for p in shown]}
    if args.figure:
        result["figure"] = str(pred.figure(args.image, args.expr, Path(args.figure), proposals))
    _print(result)


def cmd_show(args) -> None:
    from sepnms.engine.look.show import show

    cfg = _cfg(args)
    paths = show(cfg, args.methods, args.split, args.n, args.select, args.ids, progress=not args.quiet)
    _print({"figures": len(paths), "folder": str(paths[0].parent) if paths else None})


def cmd_gallery(args) -> None:
    from sepnms.engine.look.gallery import gallery

    cfg = _cfg(args)
    _print({"gallery": str(gallery(cfg, args.methods, args.splits, progress=not args.quiet))})


def cmd_ground(args) -> None:
    from sepnms.engine.ground import train_grounding
    from sepnms.engine.ground_eval import evaluate_grounding

    cfg = _cfg(args)
    if args.action == "train":
        summary = train_grounding(cfg, resume=not args.no_resume, progress=not args.quiet)
        summary.pop("history", None)
        _print(summary)
    else:
        _print(evaluate_grounding(cfg, args.methods, args.splits, args.dets, args.checkpoint, progress=not args.quiet))


def cmd_config(args) -> None:
    print(_cfg(args).to_yaml())


# ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sepnms",
        description="Sep-NMS: expression-aware proposals for two-stage referring expression comprehension.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def add(name: str, fn: Callable, help_: str, default_cfg: str = "paper") -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        _config_args(p, default_cfg)
        p.set_defaults(func=fn)
        return p

    p = add("world", cmd_world, "write the embedded synthetic world (real formats, detector output from its "
            "pixels) and its config.yaml; `world train-detector` trains the world's detector", "demo")
    p.add_argument("action", nargs="?", choices=["train-detector"],
                   help="train-detector: train the world's detector on generated scenes, write it to --out")
    p.add_argument("--out", required=True, help="output folder (train-detector: the checkpoint file)")
    p.add_argument("--seed", type=_int_at_least(0), default=None, help="random seed (default: the config's seed)")
    p.add_argument("--steps", type=_int_at_least(1), default=None, help="train-detector: steps (default world_detector.steps)")
    p.add_argument("--init", default=None, help="train-detector: continue from this checkpoint (new scenes)")
    p.add_argument("--log", default=None, help="train-detector: append the training figures (JSON lines) to this file")

    p = add("stats", cmd_stats, "dataset statistics: objects per image, same-category distractors, expressions per "
            "referent, relational share, candidates per image after the initial filter")
    p.add_argument("--mentions", default=None, help="the world's mentions.json (relational share from it, "
                   "not from the word list)")

    p = add("prepare", cmd_prepare, "refer + detector output + GloVe -> vocab, refdb, candidates, GloVe ctxdb")
    p.add_argument("--overwrite", action="store_true", help="replace outputs of a different configuration")

    p = add("encode-text", cmd_encode_text, "cache one BERT sentence vector per expression")
    p.add_argument("--overwrite", action="store_true")
    _shard_args(p, 256)

    p = add("clip-finetune", cmd_clip_finetune, "fine-tune the CLIP-dagger heads on COCO captions (DAMSM losses); resumable")
    p.add_argument("--overwrite", action="store_true")

    p = add("clip-ctx", cmd_clip_ctx, "CLIP-dagger context labels -> <workdir>/prepare/ctxdb_clip.json (raw scores kept)")
    p.add_argument("--overwrite", action="store_true")
    _shard_args(p, 64)

    p = add("train", cmd_train, "train Sep-NMS (or the Ref-NMS baseline); resumes from last.pt; "
                                "DistributedDataParallel under torchrun")
    p.add_argument("--model", choices=["sepnms", "refnms"], default=None, help="default: train.model")
    p.add_argument("--no-resume", action="store_true", help="start from scratch even if last.pt exists")

    p = add("import-weights", cmd_import_weights, "the authors' released Ref-NMS / Sep-NMS state dict -> "
                                                  "<workdir>/models/<name>/best.pt (what propose reads); "
                                                  "MAttNet's released .pth -> models/mattnet/best.pt (ground eval)")
    p.add_argument("--from", dest="source", required=True, metavar="FILE", help="the released .pth file")
    p.add_argument("--format", required=True, choices=["sepnms-release", "refnms-release", "mattnet-release"])
    p.add_argument("--name", default=None, help="model name (default: sepnms / refnms / mattnet, the name propose "
                                                "and ground eval read)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing best.pt")

    p = add("propose", cmd_propose, "score every candidate of every expression with all branches")
    p.add_argument("--model", choices=["sepnms", "refnms"], default=None)
    p.add_argument("--splits", nargs="+", default=None, help="default: evaluate.splits")
    p.add_argument("--reference", action="store_true", help="slow per-expression path (for checking)")
    _shard_args(p, None)

    p = add("detect", cmd_detect, "MAttNet's Mask R-CNN over the images -> <workdir>/detect/ rpn_boxes.pkl, "
                                  "rpn_box_scores.pkl, dets.json [, head_feats/]")
    _detect_args(p)
    p.add_argument("--compare", nargs=2, default=None, metavar=("RPN_BOXES", "RPN_SCORES"),
                   help="then print how closely detect/rpn_*.pkl match these pickles (e.g. Ref-NMS's released ones)")
    p.add_argument("--compare-only", action="store_true", help="with --compare: compare existing outputs, detect nothing")
    _shard_args(p, None)

    p = add("merge", cmd_merge, "join the part files of `--shard i/n` runs of detect, propose, encode-text or clip-ctx")
    p.add_argument("stage", choices=["detect", "propose", "encode-text", "clip-ctx"])
    _detect_args(p, "detect: ")
    p.add_argument("--model", choices=["sepnms", "refnms"], default=None, help="propose: default train.model")
    p.add_argument("--splits", nargs="+", default=None, help="propose: default evaluate.splits")

    p = add("fuse", cmd_fuse, "apply a fusion rule + class-wise NMS to scored candidates (no network)")
    p.add_argument("--model", default="sepnms", help="whose scored table (sepnms, refnms, sepnms_clipctx)")
    p.add_argument("--rule", choices=["det", "refnms", "sep", "sep+clip"], default=None, help="default: fusion.rule")
    p.add_argument("--name", default=None, help="method name (default <model>_<rule>)")
    p.add_argument("--splits", nargs="+", default=None)

    p = add("evaluate", cmd_evaluate, "hit rate / context recall / top-1 at matched proposals; sweeps and plots")
    p.add_argument("--methods", nargs="+", default=None, help="fused method names (default: all in <workdir>/fused)")
    p.add_argument("--dets", action="append", default=None, metavar="FILE",
                   help="also evaluate a MAttNet-style detection JSON (released, Ref-NMS exporter output or our "
                        "export), reported under its file stem; repeatable")

    p = add("export", cmd_export, "write the MAttNet-style detection JSON of a method")
    p.add_argument("--method", required=True)
    p.add_argument("--splits", nargs="+", default=None)
    p.add_argument("--top-n", type=_int_at_least(0), default=None,
                   help="0: conf-selected at evaluate's conf (file ..._0.json; MAttNet --top-N 0); N: the N best per "
                        "expression (..._N.json); default evaluate.top_n_export")
    p.add_argument("--tag", default="sepnms")

    p = add("downstream", cmd_downstream, "accuracy of a second stage's predictions (MAttNet convention)")
    p.add_argument("--predictions", required=True, help="JSON list of {sent_id, box: [x, y, w, h]}")
    p.add_argument("--split", required=True)

    p = add("demo", cmd_demo, "run the whole method on the embedded world and write report.md", "demo")
    p.add_argument("--workdir", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--seed", type=_int_at_least(0), default=0)

    p = add("predict", cmd_predict, "proposals of a trained model for one image and one expression (JSON)")
    p.add_argument("--image", required=True, metavar="ID_OR_PATH", help="an image id of the dataset, or an image file (then the detector of "
                   "paths.detector_checkpoint proposes the candidates)")
    p.add_argument("--expr", required=True, metavar="TEXT", help="the referring expression")
    p.add_argument("--model", choices=["sepnms", "refnms", "sepnms_clipctx"], default="sepnms")
    p.add_argument("--rule", choices=["det", "refnms", "sep", "sep+clip"], default=None,
                   help="fusion rule (default: refnms for refnms, else fusion.rule)")
    p.add_argument("--all", action="store_true", help="print every candidate, not only the kept ones")
    p.add_argument("--figure", default=None, metavar="PNG", help="also draw the kept proposals on the image")

    p = add("show", cmd_show, "qualitative figures: per expression, one panel per method (<workdir>/show/<split>/)")
    p.add_argument("--methods", nargs="+", default=None, help="fused methods (default: show.methods that exist)")
    p.add_argument("--split", default=None, help="default: show.split or the first evaluate split")
    p.add_argument("--n", type=_int_at_least(1), default=None, help="at most this many figures (default show.n)")
    p.add_argument("--select", choices=["all", "hits", "misses", "disagree"], default=None,
                   help="hits/misses: of the last method; disagree: the methods' hit/miss differ (default show.select)")
    p.add_argument("--ids", type=_int_at_least(0), nargs="+", default=None, metavar="SENT_ID", help="these expressions only")

    p = add("gallery", cmd_gallery, "a static HTML page over an evaluation: cards, filters, metrics "
                                     "(<workdir>/gallery/index.html)")
    p.add_argument("--methods", nargs="+", default=None,
                   help="default: gallery.methods, else every method evaluate scored (M@X rows included)")
    p.add_argument("--splits", nargs="+", default=None, help="default: gallery.splits or evaluate.splits")

    p = add("ground", cmd_ground, "the second stage (MAttNet): train it, or score candidate sets -> REC accuracy")
    p.add_argument("action", choices=["train", "eval"])
    p.add_argument("--no-resume", action="store_true", help="train: start from scratch even if last.pt exists")
    p.add_argument("--methods", nargs="+", default=None,
                   help="eval: gt, mattnet_dets, fused method names M and/or M@mattnet_dets (default: gt, "
                        "mattnet_dets, all fused, each also @mattnet_dets)")
    p.add_argument("--dets", nargs="+", default=None, metavar="FILE",
                   help="eval: MAttNet-style detection files, each a method named after its file stem")
    p.add_argument("--splits", nargs="+", default=None, help="eval: default evaluate.splits")
    p.add_argument("--checkpoint", default="best", help="eval: best, last or a checkpoint path")

    add("config", cmd_config, "print the resolved config")
    return parser


_ALLOC_FAILED = re.compile(r"can't allocate memory|could not create a primitive|std::bad_alloc", re.IGNORECASE)


def _stage(args) -> str:
    """``ground train``-style name of the running stage, for one-line resource errors."""
    action = getattr(args, "action", None)
    return f"`sepnms {args.command}{' ' + action if action else ''}`"


def _needed(text: str) -> str:
    """``it needed 1.6 GiB; `` from an allocator message naming the bytes, else ``''``."""
    found = re.search(r"allocate (\d+) bytes", text)
    if not found:
        return ""
    n = float(found.group(1))
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"it needed {n:.1f} {unit}; "
        n /= 1024
    return ""


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad argument (2, one line from _Parser.error)
        return int(exc.code or 0)
    if getattr(args, "device", None):
        args.overrides = [*args.overrides, f"device={args.device}"]
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("transformers", "h5py", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        try:
            args.func(args)
            sys.stdout.flush()
        except OSError as exc:  # disk full, read-only or forbidden work directory: one line, like bad input
            storage = None if isinstance(exc, BrokenPipeError) else StorageError.from_os_error(exc)
            if storage is None:
                raise
            raise storage from exc
        except MemoryError:
            raise SepNMSError(f"out of memory in {_stage(args)} (an input larger than expected, or too large a batch: "
                              "lower train.batch_size / text.batch_size, or use a machine with more memory)") from None
        except RuntimeError as exc:
            text = str(exc)
            if "out of memory" in text.lower():  # torch.OutOfMemoryError (CUDA) and allocator failures
                raise SepNMSError(f"out of memory in {_stage(args)} on {getattr(args, 'device', None) or 'the device'}: "
                                  f"{text.splitlines()[0][:160]} (lower the batch size)") from None
            if _ALLOC_FAILED.search(text):  # the CPU allocator, oneDNN
                raise SepNMSError(f"out of memory in {_stage(args)}: {_needed(text)}could not allocate "
                                  f"({' '.join(text.split())[:160]}); lower the batch size or the image size "
                                  "(detector.test_scale, detector.batch_images), or use a machine with more "
                                  "memory") from None
            if "file write failed" in text or "No space left" in text:  # torch.save on a full disk
                raise SepNMSError(f"write failed ({text.splitlines()[0][:160]}): is the disk full?") from None
            raise
    except SepNMSError as exc:
        if args.verbose:
            raise
        print(f"sepnms {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (`sepnms config | head`): not an error of ours; send what is left
        # of stdout to /dev/null so the interpreter's final flush does not fail again
        devnull = os.open(os.devnull, os.O_WRONLY)
        with contextlib.suppress(OSError, ValueError):
            os.dup2(devnull, sys.stdout.fileno())
        return 0  # the reader had what it wanted
    except KeyboardInterrupt:
        print(f"sepnms {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
