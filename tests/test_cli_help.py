"""`hpsearch --help` and `--version` import no command module, and say what the modules say."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hpsearch.cli import main
from hpsearch.commands import HELPS, NAMES, command


def test_the_help_table_is_each_commands_own_help() -> None:
    assert list(HELPS) == list(NAMES)
    assert {n: command(n).HELP for n in NAMES} == HELPS


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_import_neither_optuna_nor_a_command(flag: str) -> None:
    code = (
        "import sys\nfrom hpsearch.cli import main\n"
        f"try:\n    main([{flag!r}])\nexcept SystemExit:\n    pass\n"
        "loaded = [m for m in sys.modules\n"
        "          if m == 'optuna' or m.startswith('hpsearch.commands.')]\n"
        "print(loaded)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_a_command_still_gets_its_own_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["status", "--help"])
    assert "--watch" in capsys.readouterr().out
