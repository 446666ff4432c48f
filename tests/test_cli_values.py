"""Every argument of every command, and every number of the config, fed one bad value of each kind
(issue 21, docs/BAD_INPUTS.md "Round three").

The cases are generated, not written one by one: the arguments from the argparse table of
``sepnms.cli.build_parser`` (an integer argument gets zero, a negative value, NaN, infinity and a
word; an argument with choices an unknown choice; a file or folder argument a folder, a file of
junk, a missing path and a path where nothing can be written), the config values from the
``Config`` model (``tests/test_config_bounds.numeric_leaves``: NaN, infinity, a word, a list, zero,
a negative value).  Whatever the command, the user must see either success or exit code 2 with
one line ``sepnms <command>: error: ...`` - never a traceback, a hang or a second line.  Every
case fails at argument or config validation, or on the first missing input, before any heavy
work (the demo config without a world: nothing to work on).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from sepnms.cli import build_parser, main
from test_config_bounds import LEAVES

#: argument metavars / destinations that name a file or a folder
PATH_METAVARS = {"FILE", "DIR", "PNG", "RPN_BOXES", "RPN_SCORES", "ID_OR_PATH"}
PATH_DESTS = {"config", "out", "workdir", "predictions", "checkpoint"}
#: (command, option) -> path kinds that are valid there (the command would then do real work)
VALID_PATHS = {("world", "--out"): {"dir", "missing"}, ("demo", "--workdir"): {"dir", "missing"}}
INT_VALUES = ["0", "-1", "nan", "inf", "abc", "2.5"]
PATH_KINDS = ["dir", "file", "missing", "unwritable"]
SKIP_DESTS = {"help", "overrides", "quiet", "device", "verbose"}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _is_path(action: argparse.Action) -> bool:
    metavars = action.metavar if isinstance(action.metavar, tuple) else (action.metavar,)
    return bool(PATH_METAVARS & set(metavars)) or action.dest in PATH_DESTS


def _placeholder(action: argparse.Action, tmp: Path) -> list[str]:
    """A harmless value for a required argument."""
    nargs = action.nargs if isinstance(action.nargs, int) else 1
    if action.choices:
        return [str(list(action.choices)[0])] * nargs
    if _is_path(action):
        return [str(tmp / "placeholder" / f"{action.dest}{i}") for i in range(nargs)]
    return ["val" if action.dest == "split" else "x"] * nargs


def _name(action: argparse.Action) -> str:
    """``--flush-every`` (the long option) or the positional's dest."""
    return max(action.option_strings, key=len) if action.option_strings else action.dest


def _refuses(action: argparse.Action, text: str) -> bool:
    try:
        action.type(text)
    except (argparse.ArgumentTypeError, ValueError, TypeError):
        return True
    return False


def _cases() -> list[tuple[str, str, str]]:
    """(command, option, bad value kind) for every argument of the table; an integer argument gets
    the values its declared bound refuses (the bound is checked in
    :func:`test_every_integer_argument_declares_its_bound`)."""
    cases = []
    for command, sub in _subparsers().items():
        for action in sub._actions:
            if action.dest in SKIP_DESTS or isinstance(action, (argparse._StoreTrueAction, argparse._HelpAction)):
                continue
            option = _name(action)
            if action.choices:
                cases.append((command, option, "unknown choice"))
            elif action.type is not None and action.type not in (str,):
                cases += [(command, option, f"int {v}") for v in INT_VALUES if _refuses(action, v)]
            elif _is_path(action):
                cases += [(command, option, f"path {k}") for k in PATH_KINDS
                          if k not in VALID_PATHS.get((command, option), set())]
    return cases


CASES = _cases()


def test_the_table_reaches_every_kind_of_argument():
    """The generation is driven by the parser: new arguments join by themselves; these must be found."""
    found = {(c, o) for c, o, _ in CASES}
    for expected in [("show", "--n"), ("show", "--ids"), ("detect", "--compare"), ("detect", "--images"),
                     ("predict", "--figure"), ("predict", "--image"), ("demo", "--workdir"), ("evaluate", "--dets"),
                     ("ground", "--dets"), ("ground", "--checkpoint"), ("import-weights", "--from"),
                     ("ground", "action"), ("merge", "stage"), ("export", "--top-n"), ("world", "--out")]:
        assert expected in found, expected
    assert len({c for c, _, _ in CASES}) == len(_subparsers())


def test_every_integer_argument_declares_its_bound():
    """An integer argument is parsed by ``cli._int_at_least(lo)`` (a bound declared with it), so a
    zero or negative count is refused by the parser, not deep inside the command."""
    for command, sub in _subparsers().items():
        for action in sub._actions:
            if action.type is not None and action.type is not str:
                assert getattr(action.type, "__name__", "").startswith("integer >= "), (command, _name(action))
                assert _refuses(action, "abc") and _refuses(action, "-1000000000"), (command, _name(action))


def _assert_ok_or_one_line(rc: int, out: str, err: str, command: str) -> None:
    assert "Traceback" not in err + out, err
    assert rc in (0, 2), (rc, err)
    if rc == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith(f"sepnms {command}: error: "), err


def _bad_path(kind: str, tmp: Path) -> str:
    if kind == "dir":
        (tmp / "a_dir").mkdir(exist_ok=True)
        return str(tmp / "a_dir")
    if kind == "file":
        (tmp / "junk.bin").write_bytes(b"\x00\xffjunk")
        return str(tmp / "junk.bin")
    if kind == "missing":
        return str(tmp / "missing" / "nothing.here")
    return "/proc/sepnms-nowhere/out"  # nothing can be created there, whoever runs the test


@pytest.mark.parametrize("command,option,kind", CASES, ids=[f"{c} {o} {k}" for c, o, k in CASES])
def test_every_argument_with_a_bad_value(command, option, kind, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may land in the caller's folder
    sub = _subparsers()[command]
    target = next(a for a in sub._actions if _name(a) == option)
    value = {"unknown choice": ["bogus"]}.get(kind)
    if kind.startswith("int "):
        value = [kind[4:]]
    elif kind.startswith("path "):
        value = [_bad_path(kind[5:], tmp_path)]
    if isinstance(target.nargs, int):
        value = value * target.nargs
    argv = [command]
    for action in sub._actions:
        if action is target or not action.required:
            continue
        argv += ([_name(action)] if action.option_strings else []) + _placeholder(action, tmp_path)
    argv += ([option] if target.option_strings else []) + value
    if option != "--config":
        argv += ["--config", "demo"]
    argv += ["--set", f"workdir={tmp_path / 'work'}", "--quiet"]
    capsys.readouterr()
    rc = main(argv)
    out, err = capsys.readouterr()
    _assert_ok_or_one_line(rc, out, err, command)
    if kind.startswith(("int ", "unknown")):  # refused by the parser, naming the argument
        assert rc == 2 and f"argument {option if target.option_strings else target.dest}" in err, err
    if kind.startswith("path ") and (command, option) not in VALID_PATHS:
        assert rc == 2, (argv, out, err)


# ---------------------------------------------------------------------------------------
# the config model: every number through `sepnms config`, a few through every command

REFUSED_ALWAYS = {"nan": ".nan", "inf": ".inf", "-inf": "-.inf", "word": "abc", "list": "[1]"}


@pytest.mark.parametrize("leaf", LEAVES, ids=lambda leaf: leaf.name)
def test_every_config_number_with_a_bad_value(leaf, capsys):
    from test_config_bounds import _refused

    for kind, text in {**REFUSED_ALWAYS, "zero": "0", "negative": "-1", "huge": "1e300"}.items():
        if leaf.index is None:
            override = f"{leaf.key}={text}"
        else:  # replace one element of a tuple / list / dict value, written as YAML flow
            from sepnms.config import Config

            node = Config().model_dump(mode="json")
            for p in leaf.key.split("."):
                node = node[p]
            if isinstance(node, dict):
                items = ", ".join(f"{k}: {text if k == leaf.index else v}" for k, v in node.items())
                override = f"{leaf.key}={{{items}}}"
            else:
                items = ", ".join(text if i == leaf.index else str(v) for i, v in enumerate(node))
                override = f"{leaf.key}=[{items}]"
        capsys.readouterr()
        rc = main(["config", "--config", "demo", "--set", override])
        out, err = capsys.readouterr()
        _assert_ok_or_one_line(rc, out, err, "config")
        if kind in REFUSED_ALWAYS:
            assert rc == 2 and leaf.key in err, (override, err)
        elif rc == 2:
            assert leaf.key in err, (override, err)
        value = {"zero": 0, "negative": -1, "huge": 1e300}[kind] if kind not in REFUSED_ALWAYS else None
        if value is not None and leaf.kind is int and kind == "huge":
            continue
        if value is not None:
            assert (rc == 2) == _refused(leaf, value if leaf.kind is float else int(value)), (override, rc, err)


BAD_FOR_EVERY_COMMAND = ["detector.det_lower_step=0", "grounding.eval_every=0", "evaluate.hit_iou=.nan", "train.lr_head=.inf",
                         "images.max_pixels=abc"]


@pytest.mark.parametrize("command", sorted(_subparsers()))
def test_every_command_validates_the_config(command, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sub = _subparsers()[command]
    argv = [command]
    for action in sub._actions:
        if action.required:
            argv += ([_name(action)] if action.option_strings else []) + _placeholder(action, tmp_path)
    for override in BAD_FOR_EVERY_COMMAND:
        capsys.readouterr()
        rc = main([*argv, "--config", "demo", "--set", override, "--quiet"])
        out, err = capsys.readouterr()
        _assert_ok_or_one_line(rc, out, err, command)
        assert rc == 2 and override.split("=")[0] in err, (command, override, err)
        assert list(tmp_path.iterdir()) == [], "a refused config wrote something"
