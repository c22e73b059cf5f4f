"""What the fakes share in reading a command line and a job script the way the real tools do;
each fake passes its tool's own option sets and complaints."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import engine

Options = dict[str, list[str]]  # option -> its values, in the order given
Complaint = tuple[str, int]  # the tool's message ({tool}, {arg}, {name} filled in), exit code


def parse(
    args: list[str],
    tool: str,
    with_value: Collection[str],
    flags: Collection[str],
    unknown: Complaint,
    *,
    missing: Complaint | None = None,
    optional: Collection[str] = (),
    inline: bool = False,
    options_end: bool = True,
) -> tuple[Options, list[str]]:
    """Options and operands. ``missing`` complains about an option given no value (None: the
    value is empty); an ``optional`` option takes no value when the next argument is an
    option; ``inline`` accepts ``--key=value``; with ``options_end`` the first operand ends
    the options (it is the command, the rest its arguments)."""
    opts: Options = {}
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        key, eq, value = arg.partition("=")
        if rest and options_end:
            rest.append(arg)
        elif arg in flags:
            opts.setdefault(arg, []).append("")
        elif inline and eq and key in with_value:
            opts.setdefault(key, []).append(value)
        elif arg in with_value:
            given = args[i + 1] if i + 1 < len(args) else None
            if given is None and missing is not None:
                complain(missing, tool, arg)
            if arg in optional and (given or "-").startswith("-"):
                given, i = "", i - 1
            opts.setdefault(arg, []).append(given or "")
            i += 1
        elif arg.startswith("-"):
            complain(unknown, tool, arg)
        else:
            rest.append(arg)
        i += 1
    return opts, rest


def complain(complaint: Complaint, tool: str, arg: str) -> None:
    text, code = complaint
    engine.fail(text.format(tool=tool, arg=arg, name=arg.lstrip("-")), code)


def last(opts: Options) -> dict[str, str]:
    """Each option's last value: for the tools where a repeated option overrides."""
    return {key: values[-1] for key, values in opts.items()}


def submitted(cli: dict[str, Any], script: str, prefix: str, read: Callable) -> dict[str, Any]:
    """The script's directive options under the command line's, which win as they do for the
    real submit commands."""
    opts, _ = read(engine.directives(script, prefix))
    return opts | cli


def refuse_if_asked(default: str, code: int, before: str = "") -> None:
    """Submission fails when the fault file says so, in the tool's words (see engine.py)."""
    refused = engine.refusal(default)
    if refused:
        engine.fail(before + refused, code)


def seconds(text: str) -> int:
    """``[[hh:]mm:]ss`` as qsub's walltime and h_rt take it."""
    parts = [int(p) for p in text.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    return parts[0] * 3600 + parts[1] * 60 + parts[2]
