"""``edgecelery demo``: the whole service on this machine, one Argo job end to end.

A private Redis on a free loopback port, an Argo worker (with the poll schedule) and one worker
for each of two sites named after the HUST'17 paper's Figure 1 (an HTCondor cluster, then
Mira), both on the local scheduler. It submits a two-subjob job modelled on Table 3, prints
every status message as it arrives, shows the output, and stops all it started.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import signal
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from edgeceleryapp.cli import CONTEXT, handle_errors

if TYPE_CHECKING:
    from edgeceleryapp.devstack import DevStack

SITES = ("hep_cluster", "mira")
ROUTING_KEY = "atlas_job_monitor"


def install_demo_apps(root: Path, sites: tuple[str, str] = SITES) -> None:
    """Copy the demo scripts into place and register them (the paper's Table 2 style)."""
    from edgeceleryapp import applications

    bin_dir = root / "apps"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in ("alpgen_cmdline.py", "warmup.py", "wjets.py", "presubmit.sh", "postsubmit.sh"):
        text = resources.files("edgeceleryapp.demo").joinpath(name).read_text()
        if name.endswith(".py"):
            text = text.replace("#!/usr/bin/env python3", f"#!{sys.executable}", 1)
        target = bin_dir / name
        target.write_text(text)
        target.chmod(0o755)
    common = {
        "config_script": str(bin_dir / "alpgen_cmdline.py"),
        "preprocess": str(bin_dir / "presubmit.sh"),
        "postprocess": str(bin_dir / "postsubmit.sh"),
    }
    applications.add_app(
        "alpGen_warmup",
        sites[0],
        str(bin_dir / "warmup.py"),
        description="AlpGen warm-up grid (serial)",
        **common,
    )
    applications.add_app(
        "alpGen-wjets",
        sites[1],
        str(bin_dir / "wjets.py"),
        description="W-boson to 4 jet events at 13TeV using AlpGen",
        **common,
    )


def demo_message(input_url: str, output_url: str, sites: tuple[str, str] = SITES) -> dict:
    """An Argo job shaped like the paper's Table 3, with two subjobs."""
    subjob = {
        "description": "W-boson to 4 jet events at 13TeV using AlpGen",
        "queue": "prod-short",
        "project": "EnergyFEC",
        "wall_time_minutes": 30,
        "num_nodes": 1,
        "processes_per_node": 1,
        "config_file": "alpGen.ini",
    }
    return {
        "name": "alpGenGeneration",
        "description": "W-boson to 4 jet events at 13TeV using AlpGen",
        "user_id": "alpGen.wjet.enu.5jets.13TeV.prodset001.job001",
        "group_identifier": "alpGen.wjet.enu.5jets.13TeV.prodset001",
        "username": "johndoe",
        "email": "johndoe@doe.gov",
        "input_url": input_url,
        "output_url": output_url,
        "job_status_routing_key": ROUTING_KEY,
        "subjobs": [
            {**subjob, "name": "alpGenWarmup", "site": sites[0], "application": "alpGen_warmup"},
            {**subjob, "name": "alpGenGenerator", "site": sites[1], "application": "alpGen-wjets"},
        ],
    }


def _print_status(body: dict[str, Any]) -> None:
    who = (
        f"subjob {body['subjob_id']} @{body['site']}"
        if body["kind"] == "subjob"
        else f"argo {body['argo_job_id']}"
    )
    note = f"  {body['message']}" if body["message"] else ""
    click.echo(
        f"  {body['time'][11:23]}  {who:22} {body['from_state'] or '-':>24} -> "
        f"{body['to_state']}{note}"
    )


def monitoring_settings(password: str, flower_db: Path) -> str:
    """[web] and [flower] tables for the demo: one user ``demo`` with a fresh password."""
    from edgeceleryapp.web.auth import hash_password

    return (
        f'[web]\ncookie_secret = "{secrets.token_hex(32)}"\neditors = ["demo"]\n'
        f'[web.users]\ndemo = "{hash_password(password, iterations=100_000)}"\n'
        f'[flower]\nbasic_auth = ["demo:{password}"]\ndb = "{flower_db}"\n'
    )


def _run_job(stack: DevStack, password: str, serve: bool, timeout: float, started: float) -> str:
    """The demo on a running stack, its job browser and Flower up around it; returns the
    state the Argo job ended in."""
    from edgeceleryapp.devstack import free_port
    from edgeceleryapp.status_stream import StatusStream
    from workflows.intake import submit_argo

    install_demo_apps(stack.root)
    data_in = stack.data / "input"
    data_in.mkdir(parents=True)
    (data_in / "alpGen.ini").write_text(
        resources.files("edgeceleryapp.demo").joinpath("alpGen.ini").read_text()
    )
    output = stack.data / "output"
    click.echo(f"demo directory: {stack.root}")
    click.echo(f"settings file:  {stack.config}")
    click.echo(f"private Redis:  {stack.broker_url}")
    stack.start_workers(("argo", *SITES))
    click.echo(f"workers up:     argo, {', '.join(SITES)}")
    web = None
    if serve:
        # Only when they stay up: addresses and a password of servers about to stop mislead.
        logs = stack.root / "logs"
        web_port, flower_port = free_port(), free_port()
        web = stack.start_service(["web", "--port", str(web_port)], logs / "web.log")
        stack.start_service(["flower", "--port", str(flower_port)], logs / "flower.log")
        click.echo(
            f"job browser:    http://127.0.0.1:{web_port}/  (user demo, password {password})"
        )
        click.echo(
            f"Flower:         http://127.0.0.1:{flower_port}/  (same; /metrics for Prometheus)"
        )
    done: dict[str, str] = {}

    def on_body(body: dict[str, Any]) -> None:
        _print_status(body)
        if body["kind"] == "argo" and (
            body["to_state"] == "HISTORY" or body["to_state"].endswith("_FAILED")
        ):
            done["state"] = body["to_state"]

    with StatusStream(stack.broker_url, ROUTING_KEY, on_body) as stream:
        argo_id = submit_argo(demo_message(f"local://{data_in}", f"local://{output}"))
        click.echo(f"submitted argo job {argo_id}; status messages on '{ROUTING_KEY}':")
        deadline = time.monotonic() + timeout
        while "state" not in done and time.monotonic() < deadline:
            stream.drain(1)
    state = done.get("state", "TIMEOUT")
    click.echo(f"argo job {argo_id} ended in {state} ({time.monotonic() - started:.1f}s in all)")
    if output.exists():
        click.echo(f"output at {output}:")
        for path in sorted(output.rglob("*")):
            if path.is_file():
                click.echo(f"  {path.relative_to(output)}  {path.stat().st_size} bytes")
    if web is not None:
        click.echo("job browser and Flower stay up; Ctrl-C (or SIGTERM, SIGHUP) stops everything")
        with contextlib.suppress(KeyboardInterrupt):
            web.wait()
    return state


@click.command(context_settings=CONTEXT)
@click.option("--keep", is_flag=True, help="Keep the demo directory afterwards.")
@click.option(
    "--serve", is_flag=True, help="Keep the job browser and Flower up after the job, until Ctrl-C."
)
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for the job.")
@handle_errors
def demo(keep: bool, serve: bool, timeout: float) -> None:
    """Run one two-site Argo job on this machine and show every state change."""
    # Imported here, not at the top: Redis and the database are not loaded for `--help`.
    from edgeceleryapp.devstack import DevStack

    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="edgecelery-demo-"))
    password = secrets.token_urlsafe(12)
    # SIGHUP (a closed terminal) stops the demo as Ctrl-C does; DevStack.running turns
    # SIGTERM into the same unwinding.
    previous_hup = signal.signal(signal.SIGHUP, _interrupt)
    try:
        # The user's own EDGECELERY_* settings apply to the demo too, as to any command.
        with DevStack.running(
            root,
            SITES,
            workers=(),
            keep_settings_env=True,
            extra=monitoring_settings(password, root / "flower.db"),
        ) as stack:
            state = _run_job(stack, password, serve, timeout, started)
        if state != "HISTORY":
            click.echo(f"logs: {root / 'logs'}", err=True)
            keep = True
            sys.exit(1)
    finally:
        signal.signal(signal.SIGHUP, previous_hup)
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
            click.echo(f"removed {root} (its output and logs); run with --keep to keep it")
        else:
            output, logs = root / "data" / "output", root / "logs"
            click.echo(f"kept {root} (output in {output}, logs in {logs})")


def _interrupt(signum: int, _frame: object) -> None:
    """Once: a second signal must not cut the stopping short."""
    signal.signal(signum, signal.SIG_IGN)
    raise KeyboardInterrupt
