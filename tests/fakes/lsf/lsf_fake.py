"""Fake IBM Spectrum LSF 10.1: bsub, bjobs, bkill.

Copies LSF 10.1.0 (Fix Pack 9 and later, which have ``bjobs -json``): ``bsub`` reads a job
script with ``#BSUB`` lines on stdin (``bsub < job.sh``) and answers "Job <123> is submitted
to queue <normal>."; ``bjobs -o "fields" [-json] [-noheader] [-a] [-J name] [ids]``; finished
jobs stay visible for CLEAN_PERIOD ($FAKE_CLEAN_PERIOD, default 3600 s); errors are
"Job <9> is not found" with exit 255 (in ``-json`` output an ``ERROR`` record instead).

Ended jobs are DONE, or EXIT with an EXIT_CODE and an exit reason as bjobs -l prints it:
TERM_OWNER (bkill), TERM_PREEMPT, TERM_RUNLIMIT, and for a node failure
TERM_REMOVE_HUNG_JOB (the job removed after its execution host became unavailable, as
REMOVE_HUNG_JOBS_FOR=host_unavail does; the wording is modelled).
"""

from __future__ import annotations

import json
import os
import sys
import time

import common
import engine

WITH_VALUE = {"-J", "-q", "-P", "-W", "-n", "-R", "-o", "-e", "-oo", "-eo", "-cwd", "-G"}
WITH_VALUE |= {"-u", "-m", "-g", "-nnodes", "-alloc_flags", "-M", "-L", "-app"}
FLAGS = {"-H", "-r", "-rn", "-x", "-B", "-N", "-a", "-json", "-noheader", "-l", "-w", "-p"}
UNKNOWN = ("{tool}: illegal option -- {name}\nUsage: {tool} ...", 255)
MISSING = ("{tool}: option requires an argument -- {arg}", 255)
REASONS = {
    "cancelled": ("TERM_OWNER: job killed by owner", 130),
    "preempted": ("TERM_PREEMPT: job killed after preemption", 130),
    "timeout": ("TERM_RUNLIMIT: job killed after reaching LSF run time limit", 140),
    "node_fail": (
        "TERM_REMOVE_HUNG_JOB: job removed from the LSF system after its execution host "
        "became unavailable",
        None,
    ),
    "killed": ("TERM_UNKNOWN: LSF cannot determine a termination reason", 137),
}


def parse(args: list[str], tool: str) -> tuple[dict[str, str], list[str]]:
    flags = FLAGS - {"-a"} if tool == "bsub" else FLAGS
    opts, rest = common.parse(args, tool, WITH_VALUE, flags, UNKNOWN, missing=MISSING)
    return common.last(opts), rest


def minutes(text: str) -> int:
    hours, _, mins = text.rpartition(":")
    return int(hours or 0) * 60 + int(mins)


def bsub(args: list[str]) -> None:
    cli, command = parse(args, "bsub")
    if command:
        engine.fail("bsub: this fake takes the job script on stdin (bsub < job.sh)", 255)
    text = sys.stdin.read()
    opts = common.submitted(cli, text, "#BSUB", lambda found: parse(found, "bsub"))
    queue = opts.get("-q", "normal")
    common.refuse_if_asked(f"{queue}: No such queue. Job not submitted.", 255)
    total = int(opts.get("-n", "1"))
    with engine.state() as data:
        job = engine.new_job(
            data,
            first_id=1001,
            name=opts.get("-J", "NONAME"),
            queue=queue,
            account=opts.get("-P", "default"),
            cwd=opts.get("-cwd", os.getcwd()),
            nodes=1,
            ppn=total,
            walltime=minutes(opts["-W"]) * 60 if "-W" in opts else None,
            held="-H" in opts,
        )
        for key, stream in (("out", "-o"), ("err", "-e")):
            path = opts.get(stream) or opts.get(stream + stream[-1])
            if path:
                job[key] = path.replace("%J", str(job["id"]))
        engine.save_script(job, text)
        engine.tick(data, job_env)
    print(f"Job <{job['id']}> is submitted to queue <{queue}>.")


def job_env(job: dict) -> dict[str, str]:
    return {"LSB_JOBID": str(job["id"]), "LSB_JOBNAME": job["name"], "LSB_QUEUE": job["queue"]}


def stat(job: dict) -> str:
    if job["state"] == "running":
        return "RUN"
    if job["state"] == "queued":
        return "PSUSP" if job["held"] else "PEND"
    return "DONE" if job["exit_code"] == 0 and not job["cause"] else "EXIT"


def field(job: dict, name: str) -> str:
    name = name.lower()
    if name == "jobid":
        return str(job["id"])
    if name in ("job_name", "name"):
        return job["name"]
    if name == "stat":
        return stat(job)
    if name == "queue":
        return job["queue"]
    if name == "user":
        return job["owner"]
    if name == "proj_name":
        return job["account"]
    if name == "exit_code":
        if stat(job) != "EXIT":
            return ""
        code = REASONS[job["cause"]][1] if job["cause"] else job["exit_code"]
        return "" if code is None else str(code)
    if name == "exit_reason":
        return REASONS[job["cause"]][0] if stat(job) == "EXIT" and job["cause"] else ""
    engine.fail(f"{name}: Illegal field name", 255)
    return ""


def bjobs(args: list[str]) -> None:
    opts, ids = parse(args, "bjobs")
    spec = opts.get("-o", "jobid user stat queue job_name")
    delimiter = " "
    if "delimiter=" in spec:
        spec, _, tail = spec.partition("delimiter=")
        delimiter = tail.strip().strip("'\"")
    fields = spec.split()
    clean = float(os.environ.get("FAKE_CLEAN_PERIOD", "3600"))
    with engine.ticked(job_env) as data:
        jobs = [
            j
            for j in engine.visible(data)
            if j["state"] != "done" or time.time() - j["ended"] < clean
        ]
    if not ids and "-a" not in opts:
        jobs = [j for j in jobs if j["state"] != "done"]
    if "-J" in opts:
        jobs = [j for j in jobs if j["name"] == opts["-J"]]
    records: list[dict] = []
    missing: list[str] = []
    if ids:
        for wanted in ids:
            job = next((j for j in jobs if str(j["id"]) == wanted), None)
            if job is None:
                missing.append(wanted)
                records.append({"JOBID": wanted, "ERROR": f"Job <{wanted}> is not found"})
            else:
                records.append({f.upper(): field(job, f) for f in fields})
    else:
        records = [{f.upper(): field(j, f) for f in fields} for j in jobs]
        if not jobs:
            missing.append(opts.get("-J", ""))
    if "-json" in opts:
        print(json.dumps({"COMMAND": "bjobs", "JOBS": len(records), "RECORDS": records}, indent=2))
    else:
        rows = [r for r in records if "ERROR" not in r]
        if rows and "-noheader" not in opts:
            print(delimiter.join(f.upper() for f in fields))
        for row in rows:
            print(delimiter.join(row[f.upper()] or "-" for f in fields))
        for wanted in missing:
            sys.stderr.write(f"Job <{wanted}> is not found\n" if wanted else "No job found\n")
    sys.exit(255 if missing else 0)


def bkill(args: list[str]) -> None:
    _opts, ids = parse(args, "bkill")
    code = 0
    with engine.ticked(job_env) as data:
        for wanted in ids:
            job = next((j for j in engine.visible(data) if str(j["id"]) == wanted), None)
            if job is None:
                sys.stderr.write(f"Job <{wanted}>: No matching job found\n")
                code = 255
            elif job["state"] == "done":
                sys.stderr.write(f"Job <{wanted}>: Job has already finished\n")
                code = 255
            else:
                engine.cancel(job)
                print(f"Job <{wanted}> is being terminated")
    sys.exit(code)


TOOLS = {"bsub": bsub, "bjobs": bjobs, "bkill": bkill}
