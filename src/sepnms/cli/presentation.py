"""Looking at the results: ``sepnms predict`` (one image, one expression), ``sepnms show`` (qualitative
figures) and ``sepnms gallery`` (a static HTML page over an evaluation)."""
from __future__ import annotations

from pathlib import Path

from sepnms.cli.options import AddCommand, command_config, int_at_least
from sepnms.cli.output import print_json


def cmd_predict(args) -> None:
    from sepnms.engine.look.predict import Predictor
    from sepnms.io.atomic import check_output_target

    if args.figure:
        check_output_target(Path(args.figure))  # before the work: a folder, a device node, under a file
    pred = Predictor.from_config(command_config(args), args.model, args.rule)
    proposals = pred.predict(args.image, args.expr)
    shown = proposals if args.all else [p for p in proposals if p.kept]
    result = {"image": args.image, "image_id": pred.image_id(args.image), "expression": args.expr, "model": pred.name, "rule": pred.rule,
              "conf": pred.conf, "proposals": [p.to_dict() for p in shown]}
    if args.figure:
        result["figure"] = str(pred.figure(args.image, args.expr, Path(args.figure), proposals))
    print_json(result)


def cmd_show(args) -> None:
    from sepnms.engine.look.show import show

    cfg = command_config(args)
    paths = show(cfg, args.methods, args.split, args.n, args.select, args.ids, progress=not args.quiet)
    print_json({"figures": len(paths), "folder": str(paths[0].parent) if paths else None})


def cmd_gallery(args) -> None:
    from sepnms.engine.look.gallery import gallery

    cfg = command_config(args)
    print_json({"gallery": str(gallery(cfg, args.methods, args.splits, progress=not args.quiet))})


def add_predict(add: AddCommand) -> None:
    p = add("predict", cmd_predict, "proposals of a trained model for one image and one expression (JSON)")
    p.add_argument("--image", required=True, metavar="ID_OR_PATH", help="an image id of the dataset, or an image file (then the detector of "
                   "paths.detector_checkpoint proposes the candidates)")
    p.add_argument("--expr", required=True, metavar="TEXT", help="the referring expression")
    p.add_argument("--model", choices=["sepnms", "refnms", "sepnms_clipctx"], default="sepnms")
    p.add_argument("--rule", choices=["det", "refnms", "sep", "sep+clip"], default=None,
                   help="fusion rule (default: refnms for refnms, else fusion.rule)")
    p.add_argument("--all", action="store_true", help="print every candidate, not only the kept ones")
    p.add_argument("--figure", default=None, metavar="PNG", help="also draw the kept proposals on the image")


def add_show(add: AddCommand) -> None:
    p = add("show", cmd_show, "qualitative figures: per expression, one panel per method (<workdir>/show/<split>/)")
    p.add_argument("--methods", nargs="+", default=None, help="fused methods (default: show.methods that exist)")
    p.add_argument("--split", default=None, help="default: show.split or the first evaluate split")
    p.add_argument("--n", type=int_at_least(1), default=None, help="at most this many figures (default show.n)")
    p.add_argument("--select", choices=["all", "hits", "misses", "disagree"], default=None,
                   help="hits/misses: of the last method; disagree: the methods' hit/miss differ (default show.select)")
    p.add_argument("--ids", type=int_at_least(0), nargs="+", default=None, metavar="SENT_ID", help="these expressions only")


def add_gallery(add: AddCommand) -> None:
    p = add("gallery", cmd_gallery, "a static HTML page over an evaluation: cards, filters, metrics "
                                     "(<workdir>/gallery/index.html)")
    p.add_argument("--methods", nargs="+", default=None,
                   help="default: gallery.methods, else every method evaluate scored (M@X rows included)")
    p.add_argument("--splits", nargs="+", default=None, help="default: gallery.splits or evaluate.splits")
