"""The second stage: ``sepnms ground`` (train MAttNet, or score candidate sets -> REC accuracy) and
``sepnms downstream`` (the accuracy of an outside second stage's predictions)."""
from __future__ import annotations

from pathlib import Path

from sepnms.cli.options import AddCommand, command_config
from sepnms.cli.output import print_json


def cmd_ground(args) -> None:
    from sepnms.engine.ground.train import train_grounding
    from sepnms.engine.ground.evaluate import evaluate_grounding

    cfg = command_config(args)
    if args.action == "train":
        summary = train_grounding(cfg, resume=not args.no_resume, progress=not args.quiet)
        summary.pop("history", None)
        print_json(summary)
    else:
        print_json(evaluate_grounding(cfg, args.methods, args.splits, args.dets, args.checkpoint, progress=not args.quiet))


def cmd_downstream(args) -> None:
    from sepnms.data.refdb import load_refdb
    from sepnms.evaluation.downstream import check_prediction_ids, downstream_accuracy, load_predictions

    cfg = command_config(args)
    refdb_path = Path(cfg.workdir) / "prepare" / "refdb.json"
    refdb = load_refdb(refdb_path)
    refdb.check_splits([args.split], refdb_path)
    exprs = refdb.split(args.split)
    gt = {int(e["sent_id"]): [e["gt_box"][0], e["gt_box"][1], e["gt_box"][2] - e["gt_box"][0], e["gt_box"][3] - e["gt_box"][1]]
          for e in exprs}
    preds = load_predictions(args.predictions)
    check_prediction_ids(preds, gt, args.predictions, args.split)
    acc = downstream_accuracy(preds, gt, len(exprs))
    print_json({"split": args.split, "expressions": len(exprs), "accuracy": acc})


def add_downstream(add: AddCommand) -> None:
    p = add("downstream", cmd_downstream, "accuracy of a second stage's predictions (MAttNet convention)")
    p.add_argument("--predictions", required=True, help="JSON list of {sent_id, box: [x, y, w, h]}")
    p.add_argument("--split", required=True)


def add_ground(add: AddCommand) -> None:
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
