"""`hybridopt` help texts: every finetune/export option says what it does and its default, no raw
reST markup in any command's --help, and `hybridopt` with no command prints the usage and exits 2."""
import argparse
import contextlib
import io
import re

import pytest

from hybridopt import cli
from hybridopt.benchmarks.cli import _finetune_parser


def _help(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
    assert e.value.code == 0
    return out.getvalue()


def test_no_command_prints_usage_and_exits_2(capsys):
    assert cli.main([]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("usage: hybridopt <command>") and "export" in captured.err
    assert cli.main(["--help"]) == 0


def test_every_finetune_option_says_what_and_its_default():
    for action in _finetune_parser()._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help and len(action.help) > 10, action.option_strings
        takes_value = not isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
        if takes_value and not action.required and action.dest not in ("config", "task", "method"):
            assert re.search(r"\(default|\(per method", action.help), (action.option_strings, action.help)


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_no_rest_markup_in_help(command):
    text = _help([command, "--help"])
    assert not re.search(r"``|:(func|class|mod|meth|data):`", text), text[:400]
