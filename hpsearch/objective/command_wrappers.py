"""Programs that run another program named among their words (`env`, `xargs`, `timeout`,
`find -exec`, ...): the word they run, `env -S`'s command line, and variables that make a
program load code (`env LD_PRELOAD=...`) are code too, so a placeholder there is refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

# name -> (short options that take a value, operands before the program)
_WRAPPERS = {
    "xargs": ("IiLlnPsdEa", 0), "timeout": ("sk", 1), "nice": ("n", 0), "nohup": ("", 0),
    "setsid": ("", 0), "time": ("fo", 0), "command": ("", 0), "exec": ("a", 0),
    "stdbuf": ("ioe", 0), "taskset": ("", 1), "ionice": ("cnp", 0), "chrt": ("", 1),
    "sudo": ("ugCDhpRrtTU", 0), "doas": ("uC", 0), "unbuffer": ("", 0), "chroot": ("", 1),
    "strace": ("abeEoOpPsSuUX", 0), "ltrace": ("aeEnoOpsSuX", 0), "valgrind": ("", 0),
    "numactl": ("CNmipP", 0), "caffeinate": ("tw", 0), "systemd-run": ("pEu", 0),
    "srun": ("AcDeGJmnNopqtw", 0), "mpirun": ("nHx", 0), "mpiexec": ("nHx", 0),
    "torchrun": ("", 0), "accelerate": ("", 1), "deepspeed": ("", 0),
}  # fmt: skip
_FIND_EXEC = frozenset({"-exec", "-execdir", "-ok", "-okdir"})
# Variables that make the program they are set for load or run code.
_CODE_VARIABLES = frozenset({
    "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "DYLD_INSERT_LIBRARIES", "BASH_ENV", "ENV",
    "PROMPT_COMMAND", "PYTHONSTARTUP", "PYTHONPATH", "PYTHONHOME", "PYTHONINSPECT",
    "PERL5OPT", "PERL5LIB", "PERLLIB", "RUBYOPT", "RUBYLIB", "NODE_OPTIONS", "NODE_PATH",
    "GIT_SSH_COMMAND", "SHELLOPTS", "PS4", "IFS", "PATH",
})  # fmt: skip


def wrapped_words(argv: list[str]) -> Iterator[tuple[int, str]]:
    """(index, why) of each word that a wrapper in `argv` runs as a program or as code."""
    for k, word in enumerate(argv):
        name = Path(word).name
        if name == "env":
            yield from _env(argv, k)
        elif name == "find":
            for j in range(k + 1, len(argv) - 1):
                if argv[j] in _FIND_EXEC:
                    yield j + 1, f"`find {argv[j]}` runs it as a program"
        elif name in _WRAPPERS:
            index = _program(argv, k, *_WRAPPERS[name])
            if index is not None:
                yield index, f"`{name}` runs it as a program"


def _program(argv: list[str], k: int, valued: str, leading: int) -> int | None:
    """The index of the program a wrapper at `k` runs (after its options and operands)."""
    j, operands = k + 1, 0
    while j < len(argv):
        word = argv[j]
        if word == "--":
            j += 1
            continue
        if word.startswith("-") and len(word) > 1:
            takes = not word.startswith("--") and word[-1] in valued
            j += 2 if takes else 1
            continue
        if operands == leading:
            return j
        operands += 1
        j += 1
    return None


def _env(argv: list[str], k: int) -> Iterator[tuple[int, str]]:
    j = k + 1
    while j < len(argv):
        word = argv[j]
        if word.startswith(("-S", "--split-string")):
            yield j, "`env -S` splits it into a command line"
            if word in ("-S", "--split-string"):
                yield j + 1, "`env -S` splits it into a command line"
            return
        if word.startswith("-") and len(word) > 1:
            j += 2 if word in ("-u", "-C", "--unset", "--chdir") else 1
            continue
        name, eq, _ = word.partition("=")
        if not eq:
            yield j, "`env` runs it as a program"
            return
        if name in _CODE_VARIABLES or name.startswith(("LD_", "DYLD_", "BASH_FUNC_")):
            yield j, f"`env` sets {name}, which makes a program load or run code"
        j += 1
