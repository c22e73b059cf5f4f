"""Fake HTCondor 10.x (10.0 LTS): condor_submit, condor_q, condor_history, condor_rm.

``condor_submit -terse file`` answers "123.0 - 123.0" (without -terse "Submitting job(s)." /
"1 job(s) submitted to cluster 123."); ``condor_q`` and ``condor_history`` take ids and
``-constraint 'JobBatchName == "name"'``, and with ``-json -attributes a,b`` print a JSON list
of ads (nothing at all when nothing matches). Idle, running and held jobs are in the queue;
completed (JobStatus 4) and removed (3) ones are in the history.

Faults as HTCondor shows them: a preempted job is evicted and goes back to Idle to run again
(NumJobStarts counts the runs); the wall-time limit (allowed_job_duration) holds the job with
HoldReasonCode 46; a node failure holds it by the pool's SYSTEM_PERIODIC_HOLD policy
(HoldReasonCode 26) with a reason naming the lost node (the wording is modelled).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import common
import engine

STATUS = {"queued": 1, "running": 2}
CONSTRAINT = re.compile(r'^\s*JobBatchName\s*==\s*"([^"]*)"\s*$')
UNKNOWN = ('{tool}: unknown argument {arg}\nUse "{tool} -help" for details', 1)
HOLDS = {
    "node_fail": (
        26,
        "Job held by SYSTEM_PERIODIC_HOLD: its execute node slot1@fakenode01 went down "
        "(node failure) and the job lease expired",
    ),
    "timeout": (46, "The job exceeded allowed job duration of {duration}"),
}


def parse(args: list[str], tool: str, with_value: set[str], flags: set[str]) -> tuple[dict, list]:
    complaint = ("{tool}: {arg} requires another argument", 1)
    return common.parse(
        args, tool, with_value, flags, UNKNOWN, missing=complaint, options_end=False
    )


def description(text: str) -> dict[str, str]:
    keys: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.lower().split()[0] == "queue":
            keys["queue"] = line[5:].strip() or "1"
            continue
        key, sep, value = line.partition("=")
        if not sep:
            engine.fail(f"ERROR: on Line: {raw!r} of submit file: syntax error", 1)
        keys[key.strip().lower()] = value.strip()
    return keys


def condor_submit(args: list[str]) -> None:
    opts, rest = parse(args, "condor_submit", {"-append", "-a", "-batch-name"}, {"-terse"})
    if len(rest) != 1:
        engine.fail("ERROR: this fake reads one submit description file", 1)
    keys = description(Path(rest[0]).read_text())
    for extra in opts.get("-append", []) + opts.get("-a", []):
        keys.update(description(extra))
    if "queue" not in keys:
        engine.fail("ERROR: no queue statement in the submit description", 1)
    if "executable" not in keys:
        engine.fail("ERROR: Executable not specified", 1)
    common.refuse_if_asked(
        "ERROR: Failed to commit job submission into the queue.\n"
        "ERROR: Submit requirement ProjectNamed evaluated to false.",
        1,
        before="Submitting job(s)\n",
    )
    initialdir = keys.get("initialdir", os.getcwd())

    def path(key: str) -> str:
        value = keys.get(key, os.devnull)
        return value if os.path.isabs(value) else os.path.join(initialdir, value)

    duration = keys.get("allowed_job_duration")
    with engine.state() as data:
        job = engine.new_job(
            data,
            first_id=100,
            name=(opts.get("-batch-name") or [keys.get("batch_name", "")])[-1].strip('"'),
            queue="",
            account=keys.get("+projectname", "").strip('"'),
            script=path("executable"),
            cwd=initialdir,
            out=path("output"),
            err=path("error"),
            ppn=int(keys.get("request_cpus", "1")),
            walltime=int(duration) if duration and duration.isdigit() else None,
            held=keys.get("hold", "false").lower() == "true",
        )
        tick(data)
    cluster = job["id"]
    if "-terse" in opts:
        print(f"{cluster}.0 - {cluster}.0")
    else:
        print(f"Submitting job(s).\n1 job(s) submitted to cluster {cluster}.")


def job_env(job: dict) -> dict[str, str]:
    return {"_CONDOR_JOB_AD": "", "CONDOR_ID": f"{job['id']}.0"}


def tick(data: dict) -> None:
    engine.tick(data, job_env)
    for job in engine.visible(data):
        if job["state"] == "done" and job["cause"] == "preempted":
            job["extra"]["vacated"] = job["ended"]
            engine.requeue(job)  # evicted: HTCondor runs it again


def in_queue(job: dict) -> bool:
    return job["state"] != "done" or job["cause"] in HOLDS


def ad(job: dict) -> dict:
    starts = job["extra"].get("starts", 0) + (1 if job["started"] else 0)
    out = {
        "ClusterId": job["id"],
        "ProcId": 0,
        "JobBatchName": job["name"],
        "Owner": job["owner"],
        "Cmd": job["script"],
        "Iwd": job["cwd"],
        "NumJobStarts": starts,
        "QDate": int(job["submitted"]),
    }
    if job["account"]:
        out["ProjectName"] = job["account"]
    if job["started"]:
        out["JobCurrentStartDate"] = int(job["started"])
    if "vacated" in job["extra"]:
        out["LastVacateTime"] = int(job["extra"]["vacated"])
    if job["state"] != "done":
        out["JobStatus"] = 5 if job["held"] else STATUS[job["state"]]
        if job["held"]:
            out |= {"HoldReason": "submitted on hold", "HoldReasonCode": 15}
    elif job["cause"] in HOLDS:
        code, reason = HOLDS[job["cause"]]
        seconds = job["walltime"] or 0
        duration = f"{seconds // 86400}+{seconds % 86400 // 3600:02d}:{seconds % 3600 // 60:02d}:00"
        reason = reason.format(duration=duration)
        out |= {"JobStatus": 5, "HoldReasonCode": code, "HoldReason": reason}
    elif job["cause"] == "cancelled":
        out |= {"JobStatus": 3, "RemoveReason": f"via condor_rm (by user {job['owner']})"}
    elif job["cause"] == "killed":
        out |= {"JobStatus": 4, "ExitBySignal": True, "ExitSignal": 9}
        out["CompletionDate"] = int(job["ended"])
    else:
        out |= {"JobStatus": 4, "ExitBySignal": False, "ExitCode": job["exit_code"]}
        out["CompletionDate"] = int(job["ended"])
    return out


def select(jobs: list[dict], opts: dict, ids: list[str]) -> list[dict]:
    if "-constraint" in opts:
        match = CONSTRAINT.match(opts["-constraint"][-1])
        if match is None:
            engine.fail("this fake understands -constraint 'JobBatchName == \"name\"' only", 1)
        jobs = [j for j in jobs if j["name"] == match.group(1)]
    if ids:
        wanted = {i.split(".")[0] for i in ids}
        jobs = [j for j in jobs if str(j["id"]) in wanted]
    return jobs


def show(jobs: list[dict], opts: dict, table_head: str) -> None:
    attrs = ",".join(opts.get("-attributes", [])).split(",") if "-attributes" in opts else None
    ads = [ad(j) for j in jobs]
    if attrs:
        ads = [{k: v for k, v in a.items() if k in attrs} for a in ads]
    if "-json" in opts:
        if ads:
            body = "\n,\n".join(json.dumps(dict(sorted(a.items())), indent=2) for a in ads)
            print(f"[\n{body}\n]")
        return
    print(table_head)
    for a in ads:
        print(f"{a.get('ClusterId')}.0  {a.get('Owner', '')}  {a.get('JobStatus', '')}")


QUERY_VALUES = {"-attributes", "-af", "-constraint", "-limit", "-name", "-pool"}


def condor_q(args: list[str]) -> None:
    opts, ids = parse(args, "condor_q", QUERY_VALUES, {"-json", "-nobatch", "-allusers"})
    with engine.state() as data:
        tick(data)
        jobs = [j for j in engine.visible(data) if in_queue(j)]
    show(select(jobs, opts, ids), opts, "-- Schedd: fakeschedd : <127.0.0.1:9618?...")


def condor_history(args: list[str]) -> None:
    opts, ids = parse(args, "condor_history", QUERY_VALUES, {"-json", "-forwards"})
    with engine.state() as data:
        tick(data)
        jobs = [j for j in engine.visible(data) if not in_queue(j)]
    jobs = sorted(select(jobs, opts, ids), key=lambda j: -j["id"])  # newest first
    if "-limit" in opts:
        jobs = jobs[: int(opts["-limit"][-1])]
    show(jobs, opts, " ID     OWNER          SUBMITTED   RUN_TIME     ST  COMPLETED   CMD")


def condor_rm(args: list[str]) -> None:
    _opts, ids = parse(args, "condor_rm", {"-name"}, {"-forcex"})
    code = 0
    with engine.state() as data:
        tick(data)
        for wanted in ids:
            number = wanted.split(".")[0]
            job = next(
                (j for j in engine.visible(data) if str(j["id"]) == number and in_queue(j)),
                None,
            )
            if job is None:
                sys.stderr.write(f"Job {wanted} not found\n")
                code = 1
                continue
            if job["state"] == "done":  # a held job leaves the queue as removed
                job["cause"] = "cancelled"
            else:
                engine.cancel(job)
            print(f"Job {number}.0 marked for removal")
    sys.exit(code)


TOOLS = {
    "condor_submit": condor_submit,
    "condor_q": condor_q,
    "condor_history": condor_history,
    "condor_rm": condor_rm,
}
