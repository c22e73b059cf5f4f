"""``edgecelery intake``: the intake queue's refused messages (dead letters)."""

from __future__ import annotations

import json
import sys

import click

from edgeceleryapp.cli import CONTEXT, emit, handle_errors

COLUMNS = ("id", "source", "received_at", "message_id", "body_size", "reason")


@click.group(context_settings=CONTEXT)
def intake() -> None:
    """The intake queue, where production systems put Argo job messages."""


@intake.group("dead-letters", context_settings=CONTEXT)
def dead_letters() -> None:
    """Messages the intake and mail consumers and the job sources refused: undecodable, too
    large or too deep, a bad message_id, an invalid job. Each was acknowledged (it blocks
    nothing) and kept here; an intake message or a source's item was answered with a
    REJECTED status message naming the problems."""


@dead_letters.command("ls", context_settings=CONTEXT)
@click.option(
    "--source",
    default=None,
    help="Only those refused by this consumer (intake, mail) or job source ([[sources]] name).",
)
@click.option("--limit", default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def ls(source: str | None, limit: int, as_json: bool) -> None:
    """List dead letters, newest first."""
    from edgeceleryapp import dead_letters as letters

    emit(letters.listing(source, limit), as_json, COLUMNS)


@dead_letters.command("show", context_settings=CONTEXT)
@click.argument("letter_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@click.option("--raw", is_flag=True, help="Write only the body, as received, to stdout.")
@handle_errors
def show(letter_id: int, as_json: bool, raw: bool) -> None:
    """Show one dead letter: why it was refused, its answer, and its body."""
    from edgeceleryapp import dead_letters as letters

    data = letters.get(letter_id)
    body: bytes = data.pop("body")
    if raw:
        sys.stdout.buffer.write(body)
        return
    text = body.decode("utf-8", "backslashreplace")
    if as_json:
        emit({**data, "body": text}, True)
        return
    for key in ("id", "source", "received_at", "message_id", "content_type", "answer_key"):
        click.echo(f"{key:14} {data[key] if data[key] is not None else ''}")
    click.echo(f"{'body_size':14} {data['body_size']} bytes ({data['body_kept']} kept)")
    click.echo(f"{'answer_sent':14} {data['answer_sent']}")
    click.echo("problems:")
    for error in data["errors"]:
        click.echo(f"  {error['field']}: {error['problem']}")
    if data["answer"] is not None:
        click.echo("answer:\n  " + json.dumps(data["answer"]))
    click.echo("body (non-UTF-8 bytes escaped; --raw for the bytes):")
    click.echo(text, nl=not text.endswith("\n"))


@dead_letters.command("rm", context_settings=CONTEXT)
@click.argument("letter_ids", type=int, nargs=-1, required=True)
@handle_errors
def rm(letter_ids: tuple[int, ...]) -> None:
    """Delete dead letters (all or none)."""
    from edgeceleryapp import dead_letters as letters

    letters.remove(list(letter_ids))
    click.echo(f"removed {len(letter_ids)} dead letter(s)")


@dead_letters.command("resubmit", context_settings=CONTEXT)
@click.argument("letter_id", type=int)
@click.option("--message-id", default=None, help="Use this message_id instead of the letter's.")
@handle_errors
def resubmit(letter_id: int, message_id: str | None) -> None:
    """Run an intake dead letter through intake again (after fixing what refused it: a site
    added, message_max_bytes raised); says the new Argo job's id and removes the letter.
    Refused again, it stays, and the problems are listed (exit code 2)."""
    from workflows.intake_consumer import resubmit as run_again

    argo_id = run_again(letter_id, message_id)
    click.echo(f"dead letter {letter_id} submitted as argo job {argo_id}; the letter is removed")
