"""The body every batch script shares: enter the work directory, run the application, record
its exit code in a file the poller reads (docs/architecture.md, hop 7: fast and
authoritative completion); and the detached run of a script that the ``local`` scheduler and
the test fakes both use.

Every value is quoted with ``shlex.quote``: job text can appear here only as inert data.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping
from pathlib import Path

from edgeceleryapp.errors import PermanentError

CONTROL_DIR = ".edgecelery"
EXIT_CODE_FILE = f"{CONTROL_DIR}/exitcode"
SCRIPT_FILE = f"{CONTROL_DIR}/job.sh"
STREAMS = ("out", "err")
# A fixed program; every job-derived value reaches it as a positional argument, never as text.
# The pid is written with noclobber, so a doubled start runs the script once.
WRAPPER = (
    'set -C; { echo "$$" > "$1"; } 2>/dev/null || exit 0; set +C; '
    '/bin/sh "$3" > "$4" 2> "$5"; echo "$?" > "$2.part"; mv -f "$2.part" "$2"'
)


def render_body(workdir: Path, argv: list[str], env: dict[str, str] | None = None) -> list[str]:
    quote = shlex.quote
    lines = [f"cd -- {quote(str(workdir))} || exit 97"]
    for key, value in sorted((env or {}).items()):
        if not key.isidentifier():
            raise PermanentError(f"environment name {key!r} is not an identifier")
        lines.append(f"{key}={quote(value)}; export {key}")
    lines += [
        " ".join(quote(a) for a in argv),
        "rc=$?",
        f"printf '%s\\n' \"$rc\" > {quote(EXIT_CODE_FILE + '.part')}"
        f" && mv -f {quote(EXIT_CODE_FILE + '.part')} {quote(EXIT_CODE_FILE)}",
        'exit "$rc"',
    ]
    return lines


def job_workdir(site_root: Path, subjob_id: int) -> Path:
    """Where a subjob runs at its site: every attempt shares it, so its files carry on."""
    return site_root / "jobs" / str(subjob_id)


def stream_file(workdir: Path, attempt: int, stream: str) -> Path:
    """The file the batch system writes an attempt's standard output (``out``) or error
    (``err``) to. Each attempt has its own, so a resubmission or a retry never overwrites
    the output that explains why the one before failed."""
    if stream not in STREAMS:
        raise ValueError(f"stream must be one of {', '.join(STREAMS)}, not {stream!r}")
    return workdir / CONTROL_DIR / f"batch.{attempt}.{stream}"


def read_exit_code(workdir: Path) -> int | None:
    """The application's exit code if the batch script got as far as writing it."""
    return read_int(workdir / EXIT_CODE_FILE)


def read_int(path: Path) -> int | None:
    """The number a file holds, None while it holds none (absent, or half written)."""
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def start_detached(
    mark: str,
    pid_file: Path,
    exit_file: Path,
    files: tuple[str | Path, str | Path, str | Path],
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
) -> None:
    """Run a script (``files``: script, stdout, stderr) in a new session that outlives the
    caller, its pid in ``pid_file`` and its exit status in ``exit_file``. ``mark`` is in the
    process's command line so that ``alive`` never mistakes a reused pid for it."""
    subprocess.run(
        ["setsid", "-f", "/bin/sh", "-c", WRAPPER, mark, str(pid_file), str(exit_file)]
        + [str(f) for f in files],
        cwd=cwd,
        env=None if env is None else {**os.environ, **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )


def alive(pid_file: Path, mark: str) -> bool:
    """Whether the run that ``start_detached`` recorded in ``pid_file`` still runs."""
    pid = read_int(pid_file)
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if pid is not None else b""
    except (FileNotFoundError, ProcessLookupError):
        return False
    return mark.encode() in cmdline and str(pid_file).encode() in cmdline
