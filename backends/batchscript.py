"""The body every batch script shares: enter the work directory, run the application, record
its exit code in a file the poller reads (docs/architecture.md, hop 7: fast and authoritative
completion).

Every value is quoted with ``shlex.quote``: job text can appear here only as inert data.
"""

from __future__ import annotations

import shlex
from pathlib import Path

CONTROL_DIR = ".edgecelery"
EXIT_CODE_FILE = f"{CONTROL_DIR}/exitcode"
SCRIPT_FILE = f"{CONTROL_DIR}/job.sh"


def render_body(workdir: Path, argv: list[str], env: dict[str, str] | None = None) -> list[str]:
    quote = shlex.quote
    lines = [f"cd -- {quote(str(workdir))} || exit 97"]
    for key, value in sorted((env or {}).items()):
        if not key.isidentifier():
            raise ValueError(f"environment name {key!r} is not an identifier")
        lines.append(f"{key}={quote(value)}; export {key}")
    lines += [
        " ".join(quote(a) for a in argv),
        "rc=$?",
        f"printf '%s\\n' \"$rc\" > {quote(EXIT_CODE_FILE + '.part')}"
        f" && mv -f {quote(EXIT_CODE_FILE + '.part')} {quote(EXIT_CODE_FILE)}",
        'exit "$rc"',
    ]
    return lines


def read_exit_code(workdir: Path) -> int | None:
    """The application's exit code if the batch script got as far as writing it."""
    try:
        text = (workdir / EXIT_CODE_FILE).read_text().strip()
    except FileNotFoundError:
        return None
    try:
        return int(text)
    except ValueError:
        return None
