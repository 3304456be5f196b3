"""No parameter value of a `command:` objective is ever parsed as code (issue 23, N2).

A placeholder inside code for a shell or interpreter is refused at `validate` whatever the
spelling; a value that passes runs the real program and never creates the marker file.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpsearch.errors import ObjectiveError
from hpsearch.objective.command import check_template, render, trial_environment

PY = sys.executable
# Each shape runs the code only if the value reaches it; M is the marker file, in the cwd.
REFUSED = [
    "sh -c 'echo {x}'", "sh -c -- 'echo {x}'", "sh -ec 'echo {x}'", "sh -c {x}", "sh -c -- {x}",
    "bash -lc \"echo {x}\"", "bash -l -c {x}", "env sh -c 'echo {x}'", "env A=1 B=2 sh -c {x}",
    "/bin/sh -c 'echo {x}'", "/usr/bin/env -i bash -c {x}", "busybox sh -c 'echo {x}'",
    "dash -c echo{x}", "sh {x}", "sh -o errexit -c {x}",
    "python3 -c'print({x})'", "python -c 'print({x})'", "python3 -c {x}", "python3 -Bc {x}",
    f"{PY} -c {{x}}", f"{PY} -W ignore -c {{x}}", "python3.11 -uc {x}", "python3 -m {x}",
    "python3 {x}", f"{PY} -X dev -c {{x}}", "perl -e'print {x}'", "perl -e {x}", "perl -le {x}",
    "perl -E{x}", "/usr/bin/perl -e 'print {x}'", "node --eval=console.log({x})",
    "node --eval={x}", "node --eval {x}", "node -e {x}", "node -p {x}", "ruby -e {x}",
    "ruby -e'puts {x}'", "pwsh -Command {x}", "pwsh -Command Write-Output {x}",
    "powershell -NoProfile -c {x}", "cmd /c echo {x}", "xargs sh -c 'echo {x}'",
    "xargs -0 sh -c {x}", "find . -maxdepth 0 -exec sh -c 'echo {x}' ;",
    "find . -exec sh -c {x} +",
    "timeout 10 sh -c {x}", "nice -n 5 bash -c {x}", "ssh host train {x}", "watch train {x}",
    "{x}", "{x} --help", "awk {x}", "lua -e {x}", "sed -e {x}", "env -S 'sh -c {x}'",
    "sh -c 'echo ${{HOME}}{x}'", "train --name 'run {x}'", "train --x=$({x})", "env -S{x}",
    "env --split-string={x}", "env -S {x}", "env LD_PRELOAD={x} train", "env BASH_ENV={x} bash x",
    "env {x}", "env -i A=1 {x} --lr 1", "xargs {x}", "xargs -n 1 {x}", "timeout 10 {x}",
    "timeout -s KILL 10 {x}", "nice -n 5 {x}", "nohup {x}", "find . -exec {x} ;",
    "sudo -u me {x}", "node -pe {x}", "deno eval {x}", "python3 -W ignore -c {x}",
    "python3 -I -c{x}", "bash --rcfile {x} -i",
]  # fmt: skip
ALLOWED = [
    f"{PY} -c 'import sys; print(sys.argv[1:])' {{x}}", "sh -c 'echo \"$1\"' sh {x}",
    "sh -c 'echo \"$HPSEARCH_PARAM_X\"'", "env A=1 echo --x={x}", "echo {x}",
    "perl -e 'print @ARGV' {x}", "node -e 'console.log(process.argv)' {x}",
    "echo --lr={x} runs/{x}.pt", "sh -c 'echo \"$@\"' -- {x}", f"{PY} -m json.tool {{x}}",
    f"{PY} -m json.tool --indent={{x}}", "env LR={x} echo", "timeout 10 echo {x}",
    "nice -n 5 echo --lr={x}", "find . -maxdepth 0 -exec echo {x} ;",
    f"{PY} -u -m json.tool --sort-keys {{x}}",
]  # fmt: skip
HOSTILE = [
    "$(touch M)", "`touch M`", ";touch M", "' ; touch M ; '", "\" ; touch M ; \"", "\n touch M",
    "__import__('os').system('touch M')", "open('M','w')", "system('touch M')",
    "require('fs').writeFileSync('M','')", "File.write('M','')", "touch M", "-c touch M",
    "0); open('M','w'); (0", "1;system(q{touch M})", "x}; touch M; {", "|touch M", "&& touch M",
]  # fmt: skip


@pytest.mark.parametrize("template", REFUSED)
def test_a_placeholder_where_a_value_would_be_code_is_refused(template: str) -> None:
    with pytest.raises(ObjectiveError, match=r"HPSEARCH_PARAM_X"):
        check_template(template)


@pytest.mark.parametrize("template", ALLOWED)
def test_a_value_as_a_whole_argument_is_allowed(template: str) -> None:
    check_template(template)


def _installed(argv: list[str]) -> bool:
    return all(shutil.which(w) or Path(w).exists() for w in argv[:1])


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    template=st.sampled_from(REFUSED + ALLOWED),
    value=st.one_of(st.sampled_from(HOSTILE), st.text(min_size=1, max_size=30)),
)
def test_no_hostile_value_ever_runs_in_any_command_shape(
    tmp_path_factory: pytest.TempPathFactory, template: str, value: str
) -> None:
    """Each shape is refused at validate, or run for real: the marker never appears."""
    value = value.replace("\x00", "")  # no program can receive a NUL in argv or environ
    try:
        argv = render(template, {"x": value})
    except ObjectiveError:
        assert template in REFUSED
        return
    assert template in ALLOWED
    if not _installed(argv) or argv[0] in {"xargs", "find"}:
        return
    cwd = tmp_path_factory.mktemp("shape")
    env = trial_environment({"HPSEARCH_PARAM_X": value})
    subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, timeout=30, stdin=subprocess.DEVNULL
    )
    assert not (cwd / "M").exists(), (template, value)
