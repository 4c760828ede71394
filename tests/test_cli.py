"""The command line's contract: a user's mistake is one line and exit code 2; a bug of ours keeps its
traceback, under one line that says it is a bug and how to report it."""

import pytest

from qwentune import __version__, cli


def test_a_bug_keeps_its_traceback_and_says_it_is_ours(monkeypatch, capsys):
    def broken(args, extra):
        raise KeyError("something qwentune got wrong")

    monkeypatch.setattr(cli, "cmd_datasets", broken)
    assert cli.main(["datasets"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "KeyError: 'something qwentune got wrong'" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: this is a bug in qwentune, not a problem with your input; please report it")
    assert f"qwentune {__version__}" in last and "torch " in last


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"qwentune {__version__}"
