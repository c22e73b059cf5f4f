"""``edgecelery pilot``: what runs inside a pilot's batch allocation."""

from __future__ import annotations

from pathlib import Path

import click

from edgeceleryapp.cli import CONTEXT


@click.group(context_settings=CONTEXT)
def pilot() -> None:
    """Pilots: one batch allocation running many subjobs (started by the site worker)."""


@pilot.command("run", context_settings=CONTEXT)
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
def run(directory: Path) -> None:
    """Run the launcher of the pilot whose files are in DIRECTORY: take the subjobs assigned
    to it and run them until it has been idle for its idle time or the scheduler stops it.
    Needs no broker and no database, only the shared file system."""
    from edgeceleryapp.pilot_launcher import run as run_launcher

    click.echo(f"pilot ended: {run_launcher(directory)}")
