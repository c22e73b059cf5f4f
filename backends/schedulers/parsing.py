"""What the plug-ins' pure parsing hooks share: the shapes the tools print ids in, and listings
of named jobs (the tools that find a job by listing them all and matching its name)."""

from __future__ import annotations

import re

from backends.schedulers.base import BatchStatus


def is_id(text: str) -> bool:
    """A batch job id as the tools print them: a number, maybe with the server's name."""
    return text.split(".")[0].isdigit()


def last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def first_group(pattern: re.Pattern[str], output: str) -> str | None:
    match = pattern.search(output)
    return None if match is None else match.group(1)


Listing = dict[str, tuple[str, BatchStatus]]  # id -> (job name, status), for tools that name jobs


def named(listing: Listing, name: str) -> list[str]:
    return [job_id for job_id, (job_name, _) in listing.items() if job_name == name]


def states(listing: Listing) -> dict[str, BatchStatus]:
    return {job_id: status for job_id, (_, status) in listing.items()}
