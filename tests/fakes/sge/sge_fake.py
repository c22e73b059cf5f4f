"""Fake Grid Engine: qsub, qstat, qdel, qacct, as Son of Grid Engine 8.1.9 (Debian 12's
gridengine packages) prints them.

``qsub`` reads ``#$`` lines and answers 'Your job 123 ("name") has been submitted';
``qstat -xml`` lists the caller's pending and running jobs (finished jobs leave qstat at once);
``qacct -j <id|name|pattern>`` prints the accounting record of finished jobs, with its
``failed`` code and ``exit_status``; before the cell's first job has ended it fails with
'<SGE_ROOT>/default/common/accounting: No such file or directory', as the real one does
(scripts/gridengine.sh runs the real one; tests/integration/test_gridengine.py). Errors:
'Unable to run job: ...' / 'Exiting.' and exit 1; qdel's 'denied: job "7" does not exist'
goes to stdout.

Ended jobs in qacct: normal exit "failed 0", qdel "failed 100 : assumedly after job" with exit
status 137, the h_rt limit "failed 37 : qmaster enforced h_rt, h_cpu, or h_vmem limit", a node
failure "failed 25 : rescheduling" (the record Grid Engine writes for a run lost with its
host; modelled). Grid Engine preempts by suspending (state S); a preemption that kills the
job is accounted like qdel.
"""

from __future__ import annotations

import fnmatch
import os
import sys
import time
from pathlib import Path

import common
import engine

CELL_HOST = "fakenode01"
WITH_VALUE = {"-N", "-q", "-P", "-A", "-l", "-o", "-e", "-j", "-S", "-wd", "-r", "-b"}
WITH_VALUE |= {"-m", "-M", "-hold_jid", "-u", "-s", "-d", "-pe", "-js"}
FLAGS = {"-terse", "-cwd", "-h", "-V", "-xml", "-f", "-ext", "-now"}
UNKNOWN = ('error: ERROR! invalid option argument "{arg}"\nUsage: {tool} ...', 1)
FAILED = {
    "": (0, None),
    "cancelled": (100, 137),
    "preempted": (100, 137),
    "killed": (100, 137),
    "timeout": (37, 137),
    "node_fail": (25, 137),
}
FAILED_TEXT = {
    0: "0",
    25: "25  : rescheduling",
    37: "37  : qmaster enforced h_rt, h_cpu, or h_vmem limit",
    100: "100 : assumedly after job",
}


def parse(args: list[str], tool: str) -> tuple[common.Options, list[str]]:
    optional = {"-j"} if tool == "qacct" else ()
    return common.parse(args, tool, WITH_VALUE, FLAGS, UNKNOWN, optional=optional)


def qsub(args: list[str]) -> None:
    cli, rest = parse(args, "qsub")
    if not rest:
        engine.fail("Unable to read script file because of error: no script given\nExiting.", 1)
    try:
        text = Path(rest[0]).read_text()
    except OSError as exc:
        engine.fail(f"Unable to read script file because of error: {exc.strerror}\nExiting.", 1)
    opts = common.submitted(cli, text, "#$", lambda found: parse(found, "qsub"))
    queue = (opts.get("-q") or ["all.q"])[-1]
    common.refuse_if_asked(
        f'Unable to run job: Job was rejected because job requests unknown queue "{queue}".'
        "\nExiting.",
        1,
    )
    walltime = None
    for res in ",".join(opts.get("-l", [])).split(","):
        key, _, value = res.partition("=")
        if key in ("h_rt", "s_rt"):
            walltime = common.seconds(value)
    name = (opts.get("-N") or [os.path.basename(rest[0])])[-1]
    with engine.state() as data:
        job = engine.new_job(
            data,
            name=name,
            queue=queue,
            account=(opts.get("-P") or ["NONE"])[-1],
            script=os.path.abspath(rest[0]),
            cwd=(
                opts.get("-wd") or [os.getcwd() if "-cwd" in opts else os.environ.get("HOME", "/")]
            )[-1],
            out=(opts.get("-o") or [os.devnull])[-1],
            err=(opts.get("-e") or [os.devnull])[-1],
            walltime=walltime,
            held="-h" in opts,
        )
        engine.tick(data, job_env)
    if "-terse" in opts:
        print(job["id"])
    else:
        print(f'Your job {job["id"]} ("{name}") has been submitted')


def job_env(job: dict) -> dict[str, str]:
    return {"JOB_ID": str(job["id"]), "JOB_NAME": job["name"], "QUEUE": job["queue"]}


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t))


def qstat(args: list[str]) -> None:
    opts, _ = parse(args, "qstat")
    if "-j" in opts:
        engine.fail("this fake answers qstat [-xml] [-u user] only", 1)
    user = (opts.get("-u") or [engine.owner()])[-1]
    with engine.ticked(job_env) as data:
        jobs = [
            j
            for j in engine.visible(data)
            if j["state"] != "done" and (user == "*" or j["owner"] == user)
        ]
    running = [j for j in jobs if j["state"] == "running"]
    pending = [j for j in jobs if j["state"] == "queued"]
    if "-xml" not in opts:
        if jobs:
            print("job-ID  prior   name       user         state submit/start at     queue")
            print("-" * 92)
        for j in jobs:
            st = "r" if j in running else ("hqw" if j["held"] else "qw")
            at = time.strftime("%m/%d/%Y %H:%M:%S", time.localtime(j["started"] or j["submitted"]))
            print(f"{j['id']:>7} 0.55500 {j['name'][:10]:<10} {j['owner'][:12]:<12} {st:<5} {at}")
        return
    out = [
        "<?xml version='1.0'?>",
        '<job_info  xmlns:xsd="http://arc.liv.ac.uk/repos/darcs/sge/source/dist/util/resources/'
        'schemas/qstat/qstat.xsd">',
        "  <queue_info>",
    ]
    for j in running:
        out += element(j, "running", "r", f"<JAT_start_time>{iso(j['started'])}</JAT_start_time>")
    out += ["  </queue_info>", "  <job_info>"]
    for j in pending:
        state = "hqw" if j["held"] else "qw"
        when = f"<JB_submission_time>{iso(j['submitted'])}</JB_submission_time>"
        out += element(j, "pending", state, when)
    out += ["  </job_info>", "</job_info>"]
    print("\n".join(out))


def element(job: dict, kind: str, state: str, when: str) -> list[str]:
    queue = f"{job['queue']}@{CELL_HOST}" if kind == "running" else ""
    return [
        f'    <job_list state="{kind}">',
        f"      <JB_job_number>{job['id']}</JB_job_number>",
        f"      <JAT_prio>{0.555 if kind == 'running' else 0:.5f}</JAT_prio>",
        f"      <JB_name>{escape(job['name'])}</JB_name>",
        f"      <JB_owner>{job['owner']}</JB_owner>",
        f"      <state>{state}</state>",
        f"      {when}",
        f"      <queue_name>{queue}</queue_name>",
        f"      <slots>{job['nodes'] * job['ppn']}</slots>",
        "    </job_list>",
    ]


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def qacct(args: list[str]) -> None:
    opts, _ = parse(args, "qacct")
    wanted = (opts.get("-j") or [""])[-1]
    days = float((opts.get("-d") or ["0"])[-1])
    with engine.ticked(job_env) as data:
        jobs = [j for j in engine.visible(data) if j["state"] == "done"]
        ever_ended = any(j["state"] == "done" for j in data["jobs"].values())
    if not ever_ended:
        # qmaster writes the accounting file when the first job of the cell ends.
        root = os.environ.get("SGE_ROOT", "/var/lib/gridengine")
        engine.fail(f"{root}/default/common/accounting: No such file or directory", 1)
    if days:
        jobs = [j for j in jobs if time.time() - j["ended"] <= days * 86400]
    if wanted:
        jobs = [j for j in jobs if str(j["id"]) == wanted or fnmatch.fnmatchcase(j["name"], wanted)]
    if not jobs:
        kind = "id" if wanted.isdigit() else "name"
        engine.fail(f"error: job {kind} {wanted} not found", 1)

    def stamp(t: float | None) -> str:
        return time.strftime("%a %b %d %H:%M:%S %Y", time.localtime(t)) if t else "-/-"

    for j in jobs:
        failed, killed_status = FAILED[j["cause"]]
        status = j["exit_code"] if killed_status is None else killed_status
        rows = [
            ("qname", j["queue"]),
            ("hostname", CELL_HOST),
            ("group", j["owner"]),
            ("owner", j["owner"]),
            ("project", j["account"]),
            ("department", "defaultdepartment"),
            ("jobname", j["name"]),
            ("jobnumber", j["id"]),
            ("taskid", "undefined"),
            ("account", "sge"),
            ("priority", 0),
            ("qsub_time", stamp(j["submitted"])),
            ("start_time", stamp(j["started"])),
            ("end_time", stamp(j["ended"])),
            ("granted_pe", "NONE"),
            ("slots", j["nodes"] * j["ppn"]),
            ("failed", FAILED_TEXT[failed]),
            ("exit_status", status if status is not None else 0),
            ("ru_wallclock", f"{int((j['ended'] or 0) - (j['started'] or j['ended'] or 0))}s"),
        ]
        print("=" * 62)
        for key, value in rows:
            print(f"{key:<13}{value}")


def qdel(args: list[str]) -> None:
    _opts, ids = parse(args, "qdel")
    code = 0
    who = engine.owner()
    with engine.ticked(job_env) as data:
        for wanted in ids:
            job = next(
                (
                    j
                    for j in engine.visible(data)
                    if str(j["id"]) == wanted and j["state"] != "done"
                ),
                None,
            )
            if job is None:
                print(f'denied: job "{wanted}" does not exist')  # on stdout, as qdel does
                code = 1
                continue
            running = job["state"] == "running"
            engine.cancel(job)
            if running:
                print(f"{who} has registered the job {wanted} for deletion")
            else:
                print(f"{who} has deleted job {wanted}")
    sys.exit(code)


TOOLS = {"qsub": qsub, "qstat": qstat, "qdel": qdel, "qacct": qacct}
