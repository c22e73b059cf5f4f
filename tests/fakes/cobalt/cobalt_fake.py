"""Fake Cobalt (1.0.x as on ALCF Theta): qsub, qstat, qdel.

``qsub`` reads ``#COBALT`` lines (script mode), requires ``-t`` and ``-n`` and prints the job id
alone; ``qstat [-f] [-l] [--header=Jobid:JobName:State] [ids]`` prints a table under a
``=====`` rule, or with ``-l`` one block per job ("Jobid: 123456", then indented
"State : queued" lines); when none of the ids it is given exists it prints nothing and exits 1
(as PSI/J's Cobalt executor notes). States: queued, user_hold, starting, running, exiting,
killing. A finished job leaves qstat at once; what happened is in its ``.cobaltlog``
(``<cwd>/<jobid>.cobaltlog``, or ``--debuglog``), whose last line says "task completed normally
with an exit code of N; initiating job cleanup and removal". The last lines for the faults are
modelled: "maximum execution time exceeded", "node failure", "preempted", "killed by qdel".

``nodelist`` prints one line per node ($FAKE_NODES of them, Theta's ``c0-0c0s0nN`` names)
under the header "Node_id Name Queues Status MCDRAM NUMA Backfill" and a ``=====`` rule:
Status "busy" for a node a running job holds, else "idle"; while a job waits in the queue
Cobalt drains nodes for it, and an idle node's Backfill is how long until the soonest
running job's wall time ends (``HH:MM:SS``), otherwise "-". With the ``unreachable`` fault it
says "failed to connect to system component" and exits 1, as the real client does.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import common
import engine

WITH_VALUE = {"-A", "-q", "-t", "-n", "-o", "-e", "-O", "-M", "-u", "--cwd", "--jobname"}
WITH_VALUE |= {"--proccount", "--mode", "--debuglog", "--env", "--attrs", "--header"}
FLAGS = {"-h", "-f", "-l", "--full", "--long"}
UNKNOWN = (
    "Usage: {tool}.py [options] <executable> [<excutable options>]\n"
    "{tool}.py: error: no such option: {arg}",
    2,
)
MISSING = ("{tool}: option {arg} requires an argument", 1)
FIELDS = {
    "jobid": lambda j: str(j["id"]),
    "jobname": lambda j: j["name"],
    "user": lambda j: j["owner"],
    "state": lambda j: state(j),
    "queue": lambda j: j["queue"],
    "nodes": lambda j: str(j["nodes"]),
    "walltime": lambda j: (
        f"{(j['walltime'] or 0) // 3600:02d}:{(j['walltime'] or 0) % 3600 // 60:02d}:00"
    ),
    "project": lambda j: j["account"],
    "location": lambda j: "fakenode01" if j["state"] == "running" else "None",
}
ENDINGS = {
    "": "task completed normally with an exit code of {code}; initiating job cleanup and removal",
    "timeout": "maximum execution time exceeded; initiating job termination and removal",
    "node_fail": "task ended abnormally: node failure on fakenode01; initiating job cleanup "
    "and removal",
    "preempted": "job preempted; initiating job termination and removal",
    "cancelled": "job killed by qdel; initiating job termination and removal",
    "killed": "task completed abnormally; initiating job cleanup and removal",
}


def parse(args: list[str], tool: str) -> tuple[dict[str, str], list[str]]:
    opts, rest = common.parse(args, tool, WITH_VALUE, FLAGS, UNKNOWN, missing=MISSING, inline=True)
    return common.last(opts), rest


def minutes(text: str) -> int:
    if ":" not in text:
        return int(text)
    parts = [int(p) for p in text.split(":")]
    return parts[0] * 60 + parts[1]


def qsub(args: list[str]) -> None:
    cli, rest = parse(args, "qsub")
    if not rest:
        engine.fail("qsub.py: error: no executable specified", 1)
    script = os.path.abspath(rest[0])
    if not os.access(script, os.X_OK):
        engine.fail(f"qsub.py: error: command {script} is not executable", 1)
    text = Path(script).read_text()
    opts = common.submitted(cli, text, "#COBALT", lambda found: parse(found, "qsub"))
    for needed, word in (("-t", "time"), ("-n", "nodecount")):
        if needed not in opts:
            engine.fail(f"qsub.py: error: '{word}' not provided", 1)
    queue = opts.get("-q", "default")
    common.refuse_if_asked(f"Failed to submit job: queue '{queue}' does not exist", 1)
    cwd = opts.get("--cwd", os.getcwd())
    with engine.state() as data:
        job = engine.new_job(
            data,
            first_id=354000,
            name=opts.get("--jobname", "N/A"),
            queue=queue,
            account=opts.get("-A", ""),
            script=script,
            cwd=cwd,
            nodes=int(opts["-n"]),
            walltime=minutes(opts["-t"]) * 60,
            held="-h" in opts,
        )
        prefix = opts.get("-O", os.path.join(cwd, str(job["id"])))
        job["out"] = opts.get("-o", prefix + ".output")
        job["err"] = opts.get("-e", prefix + ".error")
        job["extra"]["cobaltlog"] = opts.get("--debuglog", prefix + ".cobaltlog")
        log(job, f"qsub {' '.join(args)}", f"submitted with cwd set to: {cwd}")
        tick(data)
    print(job["id"])


def log(job: dict, *lines: str) -> None:
    stamp = time.strftime("%a %b %d %H:%M:%S %Y +0000 (UTC)", time.gmtime())
    with open(job["extra"]["cobaltlog"], "a") as fh:
        if not os.path.getsize(job["extra"]["cobaltlog"]):
            fh.write(f"Jobid: {job['id']}\n")
        for line in lines:
            fh.write(line if line.startswith("qsub") else f"{stamp} Info: {line}")
            fh.write("\n")


def job_env(job: dict) -> dict[str, str]:
    return {"COBALT_JOBID": str(job["id"]), "COBALT_PARTSIZE": str(job["nodes"])}


def tick(data: dict) -> None:
    engine.tick(data, job_env)
    for job in engine.visible(data):
        if job["state"] == "done" and not job["extra"].get("logged"):
            log(job, ENDINGS[job["cause"]].format(code=job["exit_code"]))
            job["extra"]["logged"] = True


def state(job: dict) -> str:
    if job["state"] == "running":
        return "running"
    return "user_hold" if job["held"] else "queued"


def qstat(args: list[str]) -> None:
    opts, ids = parse(args, "qstat")
    header = [
        h for h in opts.get("--header", "JobID:User:WallTime:Nodes:State:Location").split(":")
    ]
    for name in header:
        if name.lower() not in FIELDS:
            engine.fail(f"qstat.py: error: unknown header field {name}", 1)
    with engine.state() as data:
        tick(data)
        jobs = [j for j in engine.visible(data) if j["state"] != "done"]
    if "-u" in opts:
        jobs = [j for j in jobs if j["owner"] == opts["-u"]]
    if ids:
        jobs = [j for j in jobs if str(j["id"]) in ids]
        if not jobs:
            sys.exit(1)
    rows = [[FIELDS[h.lower()](j) for h in header] for j in jobs]
    if "-l" in opts or "--long" in opts:
        for row in rows:
            print(f"{header[0]}: {row[0]}")
            for name, value in zip(header[1:], row[1:], strict=True):
                print(f"    {name:<12}: {value}")
            print()
        return
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("=" * (sum(widths) + 2 * (len(widths) - 1)))
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def qdel(args: list[str]) -> None:
    _opts, ids = parse(args, "qdel")
    deleted = []
    with engine.state() as data:
        tick(data)
        for wanted in ids:
            job = next((j for j in engine.visible(data) if str(j["id"]) == wanted), None)
            if job is not None and job["state"] != "done":
                engine.cancel(job)
                deleted.append(job)
        tick(data)
    if deleted:
        print("      Deleted Jobs\nJobID   User\n" + "=" * 20)
        for job in deleted:
            print(f"{job['id']:<7} {job['owner']}")


def nodelist(args: list[str]) -> None:
    if args:
        engine.fail(f"Usage: nodelist.py\nnodelist.py: error: no such option: {args[0]}", 2)
    engine.unreachable("failed to connect to system component", 1)
    with engine.state() as data:
        tick(data)
        held = engine.occupancy(data)
        waiting = any(j["state"] == "queued" and not j["held"] for j in engine.visible(data))
    now = time.time()
    ends = [j["started"] + j["walltime"] for j in held if j and j["walltime"]]
    left = "-"
    if waiting and ends:
        seconds = max(0, int(min(ends) - now))
        left = f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    header = ["Node_id", "Name", "Queues", "Status", "MCDRAM", "NUMA", "Backfill"]
    rows = []
    for i, job in enumerate(held):
        status, free_for = ("busy", "-") if job else ("idle", left)
        rows.append([str(i), f"c0-0c0s0n{i}", "default", status, "cache", "quad", free_for])
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    print("=" * (sum(widths) + 2 * (len(widths) - 1)))
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


TOOLS = {"qsub": qsub, "qstat": qstat, "qdel": qdel, "nodelist": nodelist}
