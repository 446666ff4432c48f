"""The first stage's commands, in pipeline order: ``detect`` -> ``stats`` / ``prepare`` -> ``encode-text``,
``clip-finetune``, ``clip-ctx`` -> ``train`` -> ``propose`` -> ``fuse`` -> ``evaluate``, and ``merge`` (joins
the part files of sharded runs)."""
from __future__ import annotations

import argparse
from pathlib import Path

from sepnms.cli.options import AddCommand, command_config
from sepnms.cli.output import print_json
from sepnms.cli.shards import flush_kwargs, run_sharded_stage, shard_args
from sepnms.errors import SepNMSError


def detect_args(p: argparse.ArgumentParser, prefix: str = "") -> None:
    p.add_argument("--images", default=None, metavar="DIR",
                   help=prefix + "detect every image of DIR (ids from the file names) instead of the dataset's")
    p.add_argument("--save-head", choices=["none", "float16", "float32"], default="none",
                   help=prefix + "also write MAttNet's head features detect/head_feats/<image_id>.h5")


def _run_cache_stage(args, stage, merge_parts, what: str) -> None:
    """Run a sharded stage called ``stage(cfg, overwrite=, progress=, shard=, merge=, flush_every=)``
    whose parts ``merge_parts(cfg)`` joins (encode-text, clip-ctx), and print its result."""
    cfg = command_config(args)
    print_json(run_sharded_stage(args, cfg, lambda shard, merge: stage(cfg, overwrite=args.overwrite, progress=not args.quiet,
                                                                       shard=shard, merge=merge, **flush_kwargs(args)),
                                 lambda: merge_parts(cfg), what))


def cmd_detect(args) -> None:
    from sepnms.engine.detect import detect, merge_detect
    from sepnms.evaluation.rpn_compare import compare_rpn

    if args.compare_only and not args.compare:
        raise SepNMSError("--compare-only compares existing outputs with the pickles of --compare RPN_BOXES RPN_SCORES; "
                          "give --compare too (or drop --compare-only to detect)")
    cfg = command_config(args)
    images = Path(args.images) if args.images else None
    extra = (*(("--images", args.images) if args.images else ()),
             *(("--save-head", args.save_head) if args.save_head != "none" else ()))
    if not args.compare_only:
        print_json(run_sharded_stage(args, cfg, lambda shard, merge: detect(cfg, images, args.save_head, progress=not args.quiet,
                                                                            shard=shard, merge=merge, **flush_kwargs(args)),
                                     lambda: merge_detect(cfg, images, args.save_head), "detect", extra))
    if args.compare:
        from sepnms.engine.detect import detect_paths

        ours = detect_paths(cfg)
        print_json(compare_rpn(ours["rpn_boxes"], ours["rpn_box_scores"], Path(args.compare[0]), Path(args.compare[1])))


def cmd_stats(args) -> None:
    from sepnms.engine.stats import dataset_stats

    print_json(dataset_stats(command_config(args), Path(args.mentions) if args.mentions else None))


def cmd_prepare(args) -> None:
    from sepnms.engine.prepare import prepare

    print_json(prepare(command_config(args), overwrite=args.overwrite, progress=not args.quiet))


def cmd_encode_text(args) -> None:
    from sepnms.engine.encode_text import encode_text, merge_text

    _run_cache_stage(args, encode_text, merge_text, "encode-text")


def cmd_clip_finetune(args) -> None:
    from sepnms.clip.finetune import clip_finetune

    print_json(clip_finetune(command_config(args), overwrite=args.overwrite, progress=not args.quiet))


def cmd_clip_ctx(args) -> None:
    from sepnms.clip.labeller import clip_ctx, merge_clip_ctx

    _run_cache_stage(args, clip_ctx, merge_clip_ctx, "clip-ctx")


def cmd_train(args) -> None:
    from sepnms.engine.train import train

    cfg = command_config(args)
    summary = train(cfg, args.model, resume=not args.no_resume, progress=not args.quiet)
    summary.pop("history", None)
    print_json(summary)


def cmd_propose(args) -> None:
    from sepnms.engine.propose import merge_proposals, propose

    cfg = command_config(args)
    paths = run_sharded_stage(args, cfg, lambda shard, merge: propose(cfg, args.model, args.splits, progress=not args.quiet,
                                                                      reference=args.reference, shard=shard, merge=merge,
                                                                      **flush_kwargs(args)),
                              lambda: merge_proposals(cfg, args.model, args.splits), "propose")
    print_json({k: str(v) for k, v in paths.items()})


def cmd_merge(args) -> None:
    cfg = command_config(args)
    if args.stage == "detect":
        from sepnms.engine.detect import merge_detect

        print_json(merge_detect(cfg, Path(args.images) if args.images else None, args.save_head))
    elif args.stage == "propose":
        from sepnms.engine.propose import merge_proposals

        print_json({k: str(v) for k, v in merge_proposals(cfg, args.model, args.splits).items()})
    elif args.stage == "encode-text":
        from sepnms.engine.encode_text import merge_text

        print_json(merge_text(cfg))
    else:
        from sepnms.clip.labeller import merge_clip_ctx

        print_json(merge_clip_ctx(cfg))


def cmd_fuse(args) -> None:
    from sepnms.engine.fuse import Method, fuse

    cfg = command_config(args)
    rule = args.rule or cfg.fusion.rule
    method = Method(args.name or f"{args.model}_{rule}", args.model, rule)
    print_json({k: str(v) for k, v in fuse(cfg, method, args.splits).items()})


def cmd_evaluate(args) -> None:
    from sepnms.engine.evaluate import evaluate

    print_json(evaluate(command_config(args), args.methods, progress=not args.quiet, dets=args.dets))


def add_stats(add: AddCommand) -> None:
    p = add("stats", cmd_stats, "dataset statistics: objects per image, same-category distractors, expressions per "
            "referent, relational share, candidates per image after the initial filter")
    p.add_argument("--mentions", default=None, help="the world's mentions.json (relational share from it, "
                   "not from the word list)")


def add_prepare(add: AddCommand) -> None:
    p = add("prepare", cmd_prepare, "refer + detector output + GloVe -> vocab, refdb, candidates, GloVe ctxdb")
    p.add_argument("--overwrite", action="store_true", help="replace outputs of a different configuration")


def add_encode_text(add: AddCommand) -> None:
    p = add("encode-text", cmd_encode_text, "cache one BERT sentence vector per expression")
    p.add_argument("--overwrite", action="store_true")
    shard_args(p, 256)


def add_clip_finetune(add: AddCommand) -> None:
    p = add("clip-finetune", cmd_clip_finetune, "fine-tune the CLIP-dagger heads on COCO captions (DAMSM losses); resumable")
    p.add_argument("--overwrite", action="store_true")


def add_clip_ctx(add: AddCommand) -> None:
    p = add("clip-ctx", cmd_clip_ctx, "CLIP-dagger context labels -> <workdir>/prepare/ctxdb_clip.json (raw scores kept)")
    p.add_argument("--overwrite", action="store_true")
    shard_args(p, 64)


def add_train(add: AddCommand) -> None:
    p = add("train", cmd_train, "train Sep-NMS (or the Ref-NMS baseline); resumes from last.pt; "
                                "DistributedDataParallel under torchrun")
    p.add_argument("--model", choices=["sepnms", "refnms"], default=None, help="default: train.model")
    p.add_argument("--no-resume", action="store_true", help="start from scratch even if last.pt exists")


def add_propose(add: AddCommand) -> None:
    p = add("propose", cmd_propose, "score every candidate of every expression with all branches")
    p.add_argument("--model", choices=["sepnms", "refnms"], default=None)
    p.add_argument("--splits", nargs="+", default=None, help="default: evaluate.splits")
    p.add_argument("--reference", action="store_true", help="slow per-expression path (for checking)")
    shard_args(p, None)


def add_detect(add: AddCommand) -> None:
    p = add("detect", cmd_detect, "MAttNet's Mask R-CNN over the images -> <workdir>/detect/ rpn_boxes.pkl, "
                                  "rpn_box_scores.pkl, dets.json [, head_feats/]")
    detect_args(p)
    p.add_argument("--compare", nargs=2, default=None, metavar=("RPN_BOXES", "RPN_SCORES"),
                   help="then print how closely detect/rpn_*.pkl match these pickles (e.g. Ref-NMS's released ones)")
    p.add_argument("--compare-only", action="store_true", help="with --compare: compare existing outputs, detect nothing")
    shard_args(p, None)


def add_merge(add: AddCommand) -> None:
    p = add("merge", cmd_merge, "join the part files of `--shard i/n` runs of detect, propose, encode-text or clip-ctx")
    p.add_argument("stage", choices=["detect", "propose", "encode-text", "clip-ctx"])
    detect_args(p, "detect: ")
    p.add_argument("--model", choices=["sepnms", "refnms"], default=None, help="propose: default train.model")
    p.add_argument("--splits", nargs="+", default=None, help="propose: default evaluate.splits")


def add_fuse(add: AddCommand) -> None:
    p = add("fuse", cmd_fuse, "apply a fusion rule + class-wise NMS to scored candidates (no network)")
    p.add_argument("--model", default="sepnms", help="whose scored table (sepnms, refnms, sepnms_clipctx)")
    p.add_argument("--rule", choices=["det", "refnms", "sep", "sep+clip"], default=None, help="default: fusion.rule")
    p.add_argument("--name", default=None, help="method name (default <model>_<rule>)")
    p.add_argument("--splits", nargs="+", default=None)


def add_evaluate(add: AddCommand) -> None:
    p = add("evaluate", cmd_evaluate, "hit rate / context recall / top-1 at matched proposals; sweeps and plots")
    p.add_argument("--methods", nargs="+", default=None, help="fused method names (default: all in <workdir>/fused)")
    p.add_argument("--dets", action="append", default=None, metavar="FILE",
                   help="also evaluate a MAttNet-style detection JSON (released, Ref-NMS exporter output or our "
                        "export), reported under its file stem; repeatable")
