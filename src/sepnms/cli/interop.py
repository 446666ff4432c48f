"""Exchange with the authors' code: ``sepnms import-weights`` (their released Ref-NMS / Sep-NMS / MAttNet
weights) and ``sepnms export`` (a method's MAttNet-style detection JSON)."""
from __future__ import annotations

from sepnms.cli.options import AddCommand, command_config, int_at_least
from sepnms.cli.output import print_json


def cmd_import_weights(args) -> None:
    from sepnms.engine.import_weights import MATTNET_FORMAT, import_mattnet_release, import_weights

    if args.format == MATTNET_FORMAT:
        print_json(import_mattnet_release(command_config(args), args.source, args.name, overwrite=args.overwrite))
    else:
        print_json(import_weights(command_config(args), args.source, args.format, args.name, overwrite=args.overwrite))


def cmd_export(args) -> None:
    from sepnms.engine.export import export

    print_json([str(p) for p in export(command_config(args), args.method, args.splits, args.top_n, args.tag)])


def add_import_weights(add: AddCommand) -> None:
    p = add("import-weights", cmd_import_weights, "the authors' released Ref-NMS / Sep-NMS state dict -> "
                                                  "<workdir>/models/<name>/best.pt (what propose reads); "
                                                  "MAttNet's released .pth -> models/mattnet/best.pt (ground eval)")
    p.add_argument("--from", dest="source", required=True, metavar="FILE", help="the released .pth file")
    p.add_argument("--format", required=True, choices=["sepnms-release", "refnms-release", "mattnet-release"])
    p.add_argument("--name", default=None, help="model name (default: sepnms / refnms / mattnet, the name propose "
                                                "and ground eval read)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing best.pt")


def add_export(add: AddCommand) -> None:
    p = add("export", cmd_export, "write the MAttNet-style detection JSON of a method")
    p.add_argument("--method", required=True)
    p.add_argument("--splits", nargs="+", default=None)
    p.add_argument("--top-n", type=int_at_least(0), default=None,
                   help="0: conf-selected at evaluate's conf (file ..._0.json; MAttNet --top-N 0); N: the N best per "
                        "expression (..._N.json); default evaluate.top_n_export")
    p.add_argument("--tag", default="sepnms")
