"""Where a `{name}` placeholder may sit in a command so that its value is never run as code.

Two rules, both applied at `validate`:
1. A placeholder is a whole word or sits among plain characters only (`--lr={lr}`,
   `runs/{name}.pt`): a space, quote, `$`, `;`, parenthesis, ... beside it means the word is code
   or a string that something will parse (`sh -c 'echo {x}'`, `python3 -c'print({x})'`,
   `node --eval=f({x})`, `ssh host 'cmd {x}'`), whichever program reads it.
2. A plain word is still refused where a program reads it as code or as the program to run: the
   first word, and after any shell or interpreter (wherever it appears: `env sh`, `xargs sh`,
   `find -exec sh`, `busybox sh`, `/bin/sh`, `python3.11`) its options, the value of a code flag
   (`-c`, `-e`, `-lc`, `-e{x}`, `--eval={x}`), the shell's code operand and the script operand.
   After programs that join their arguments into a shell line (`ssh`, `watch`, `su`, ...) or
   whose command option takes the rest of the line (`pwsh -Command`, `cmd /c`), every word is.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator
from pathlib import Path

from hpsearch.errors import ObjectiveError
from hpsearch.objective.command_wrappers import wrapped_words

_PLAIN = re.compile(r"[A-Za-z0-9_.,:/=+@%-]*")
_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "fish", "csh", "tcsh",
                     "yash", "posh", "rbash", "elvish", "nu", "xonsh"})  # fmt: skip
# Letters of a short-flag cluster that take a value (attached or the next word), per family; a
# code letter makes that value code.
_ARG_LETTERS = {
    "python": "cmWX", "perl": "eEIMm", "ruby": "erICEF", "node": "eprC", "php": "rBRFEfdcz",
}  # fmt: skip
_CODE_LETTERS = {"python": "c", "perl": "eE", "ruby": "e", "node": "ep", "php": "rBRFE"}
_LONG_CODE = ("--eval", "--print", "--command", "--exec", "--execute", "--code", "--run")
_LONG_ARG = ("--require", "--import", "--loader", "--experimental-loader", "--input-type",
             "--conditions", "--env-file", "--title", "--rcfile", "--init-file",
             "--check-hash-based-pycs")  # fmt: skip
_FAMILIES = {
    "python": "python", "pypy": "python", "perl": "perl", "ruby": "ruby", "irb": "ruby",
    "node": "node", "nodejs": "node", "deno": "node", "bun": "node", "php": "php",
}  # fmt: skip
# Programs that run a word as code with a generic flag (`lua -e`, `Rscript -e`, `awk PROGRAM`).
_OTHER_INTERPRETERS = frozenset({
    "busybox", "toybox", "Rscript", "julia", "lua", "luajit", "tclsh", "wish", "osascript",
    "awk", "gawk", "mawk", "nawk", "sed", "gsed", "gdb", "vim", "nvim", "emacs", "sqlite3",
    "guile", "racket", "sbcl", "clisp", "ghci", "runghc", "jshell", "escript", "elixir", "raku",
    "perl6", "octave", "tmux", "nix-shell",
})  # fmt: skip
# Programs whose remaining words form one shell (or similar) line.
_REST_IS_CODE = frozenset({"ssh", "watch", "su", "runuser", "parallel", "flock", "pwsh",
                           "powershell", "cmd", "cmd.exe", "xterm"})  # fmt: skip
_GENERIC_CODE = frozenset({"-c", "-e", "-E", "-r", "-x", "-ex", "--eval", "--command", "-Command",
                           "-f", "-i", "-l"})  # fmt: skip


def fields(token: str) -> list[str]:
    """The `{name}` fields of one word."""
    try:
        return [field for _, field, _, _ in string.Formatter().parse(token) if field is not None]
    except ValueError as e:
        raise ObjectiveError(
            f"bad placeholder in {token!r}: {e}; a literal brace is written twice: "
            "`${{HOME}}` passes `${HOME}`"
        ) from None


def _literal(token: str) -> str:
    return "".join(text for text, _, _, _ in string.Formatter().parse(token))


def _name(word: str) -> str:
    """`/usr/bin/python3.11` -> `python`; `busybox` stays."""
    return Path(word).name.rstrip("0123456789.-") or Path(word).name


def _family(word: str) -> str | None:
    name = _name(word)
    if name in _SHELLS or name in _REST_IS_CODE or name in _OTHER_INTERPRETERS:
        return name if name in _REST_IS_CODE else ("shell" if name in _SHELLS else "other")
    return _FAMILIES.get(name) or _FAMILIES.get(name.lower())


def check_template(argv: list[str]) -> None:
    """Refuse a placeholder whose value would be run as code or pick the program.

    Raises:
        ObjectiveError: naming the placeholder, why, and the fix.
    """
    for token in argv:
        for field in fields(token):
            if not field:
                raise ObjectiveError(f"an empty placeholder `{{}}` in {token!r}; name it")
        if fields(token) and not _PLAIN.fullmatch(_literal(token)):
            why = (
                f"{token!r} holds characters beside it (a space, quote, `$`, `;`, bracket...) "
                "that a shell or interpreter reads as code, so its value would be too"
            )
            raise _refusal(fields(token)[0], why)
    if argv and fields(argv[0]):
        raise _refusal(fields(argv[0])[0], "it is the program to run")
    for k, reason in (*_code_words(argv), *wrapped_words(argv)):
        if fields(argv[k]):
            raise _refusal(fields(argv[k])[0], reason)


def _refusal(field: str, why: str) -> ObjectiveError:
    return ObjectiveError(
        f"`{{{field}}}` cannot go there: {why}, so a value such as `$(rm -rf ~)` could run; pass "
        "each value as a whole argument of your program (`--lr {lr}` or `--lr={lr}`), or read it "
        f'from the environment instead, as "$HPSEARCH_PARAM_{field.upper()}" (double quotes '
        "included), which a shell passes as a value and never runs"
    )


def _code_words(argv: list[str]) -> Iterator[tuple[int, str]]:
    """(index, why) of each word that an interpreter in `argv` reads as code or options."""
    names: set[int] = set()  # `$0` of `sh -c CODE NAME ...`: a name, not a program
    for k, word in enumerate(argv):
        family = _family(word)
        if family is None or k in names:
            continue
        program = Path(word).name
        if family in _REST_IS_CODE:
            for j in range(k + 1, len(argv)):
                yield j, f"`{program}` runs the words after it as a command line"
            continue
        own = [k + 1 + j for j in _interpreter_words(family, argv[k + 1 :])]
        for j in own:
            yield j, f"`{program}` reads it as code, a script or one of its options"
        if family == "shell" and own and any(_shell_code_flag(argv[j]) for j in own):
            names.add(own[-1] + 1)


def _shell_code_flag(word: str) -> bool:
    return word.startswith("-") and not word.startswith("--") and "c" in word


def _interpreter_words(family: str, rest: list[str]) -> Iterator[int]:
    """Indexes in `rest` (the words after an interpreter) of its options, their values, and its
    first operand (the code of `sh -c`, or the script or program when no code flag came)."""
    takes_next = code_given = False
    for j, word in enumerate(rest):
        if takes_next:
            yield j
            takes_next = False
            if family == "python" and code_given:
                return  # python's `-c CODE` / `-m MODULE` end its options: the rest is argv
        elif word == "--":
            if j + 1 < len(rest) and not code_given:
                yield j + 1
            return
        elif len(word) > 1 and word[0] in "-+":
            yield j
            takes_next, code = _option(family, word)
            code_given = code_given or code
            if family == "python" and code and not takes_next:
                return  # `-cCODE` / `-mMODULE`, attached
        else:
            if family == "shell" or not code_given:
                yield j  # the shell's code or script, another interpreter's script or program
            if family == "node" and word == "eval" and j + 1 < len(rest):
                yield j + 1  # `deno eval CODE`
            return


def _option(family: str, word: str) -> tuple[bool, bool]:
    """(whether the option takes the next word as its value, whether it gives the code)."""
    if word.startswith("--"):
        name, eq, _ = word.partition("=")
        code = name in _LONG_CODE
        return not eq and (code or name in _LONG_ARG), code
    if family == "shell":
        return word[-1] in "oO", False
    if family == "other":
        code = word in _GENERIC_CODE or word[-1] in "ce"
        return code, code
    letters = _ARG_LETTERS[family]
    if family == "node":  # no attached values: `-pe CODE` is `-p -e CODE`
        return word[-1] in letters, bool(set(word[1:]) & set(_CODE_LETTERS["node"]))
    for i, letter in enumerate(word[1:], start=1):
        if letter in letters:
            code = letter in _CODE_LETTERS[family] or (family == "python" and letter == "m")
            return i == len(word) - 1, code  # a value attached to the cluster, or the next word
    return False, False
