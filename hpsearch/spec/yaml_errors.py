"""YAML failures in a user's words: PyYAML's problems as fixes, and the key path of a line.

When the YAML cannot be parsed there is no node tree to ask where a line belongs, so the key path
is read from indentation (`key_path_at`), which is right for the block style study files use.
"""

from __future__ import annotations

import re

import yaml

from hpsearch.spec._base import KeyPath


def opened(e: yaml.MarkedYAMLError) -> str | None:
    """What the error is inside of, if it is an unclosed `{`, `[` or quote."""
    context = e.context or ""
    for words, opener in (("flow mapping", "`{`"), ("flow sequence", "`[`"), ("quoted", "quote")):
        if words in context:
            return opener
    return None


def yaml_message(e: yaml.MarkedYAMLError) -> str:
    """PyYAML's problem in words a user can act on."""
    problem = e.problem or e.context or "invalid YAML"
    opener = opened(e)
    if "'\\t'" in problem or "tab" in problem:
        return "a tab is used for indentation; YAML indents with spaces only: replace the tab"
    if opener == "quote":
        return f"the quote opened here is never closed ({problem}); close it"
    if opener:
        return f"the {opener} opened here is not closed ({problem}); close it or add the `,`"
    if "mapping values are not allowed here" in problem:
        return (
            "a `:` where no `key: value` can start; check this line's indentation, or quote "
            "a value that holds `: `"
        )
    if "found undefined alias" in problem:
        name = problem.rpartition(" ")[2].strip("'")
        return f"`*{name}` names no anchor `&{name}` defined above it; define it or fix the name"
    if "found duplicate anchor" in (e.context or ""):
        name = (e.context or "").split("'")[1]
        first = f" (first on line {e.context_mark.line + 1})" if e.context_mark else ""
        return f"the anchor `&{name}` is defined twice{first}; rename one"
    if "another document" in (e.problem or "") or "single document" in (e.context or ""):
        return "the file holds more than one YAML document (`---`); keep one study per file"
    if "could not find expected ':'" in problem:
        return "a key is missing its `:`; write `key: value`"
    if "expected <block end>" in problem or "did not find expected" in problem:
        return "this line's indentation does not match the lines it belongs with; align it"
    if "for merging" in problem:
        return "`<<:` merges a mapping (`<<: *defaults`), but got another kind of value"
    return f"{problem}; check indentation, colons and quotes"


_KEY_LINE = re.compile(
    r"""^(?P<indent>[ \t]*)(?P<dashes>(?:-[ \t]+)*)
    (?P<key>"[^"]*"|'[^']*'|[^\s#'"{}\[\],:&*!|>%@`-][^#:]*?)[ \t]*:(?:[ \t]|$)""",
    re.X,
)


def key_path_at(text: str, line: int) -> KeyPath:
    """The key path of a (block-style) YAML line, from indentation alone.

    For errors where the YAML could not be parsed, so no node tree exists to ask.
    """
    stack: list[tuple[int, str]] = []
    for raw in text.splitlines()[:line]:
        match = _KEY_LINE.match(raw)
        if match is None:
            continue
        indent = len(match["indent"]) + len(match["dashes"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"].strip("'\"")))
    return tuple(key for _, key in stack)
