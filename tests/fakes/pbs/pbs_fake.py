"""Fake PBS: qsub, qstat, qselect, qdel, in two dialects picked by $FAKE_PBS_FLAVOR.

``pbspro`` (the default) copies OpenPBS / PBS Professional 22.05: ``qstat -f -F json`` with
``-x`` for finished (history) jobs in state F, ``qselect -x -N``, ids ``123.pbsserver``.
``torque`` copies TORQUE 6.1: ``qstat -x`` prints XML, ``qstat -f`` text, completed jobs stay
in state C for keep_completed ($FAKE_KEEP_COMPLETED seconds, default 300); ids
``123.torqueserver``. Errors are the tools' texts and exit codes: an unknown id is
"Unknown Job Id" with exit 153 (PBSE_UNKJOBID 15001 & 0xff), answered alongside the known jobs.

How a fault looks (the exit statuses are the documented JOB_EXEC_* / 256+signal values; the
comments are modelled on the servers' wording): a node failure ends the job with exit status
-3 and a comment naming the down node; a preemption with 271 and "preempted"; the wall-time
limit with -29 (PBS Pro JOB_EXEC_KILL_WALLTIME) or -11 (TORQUE JOB_EXEC_OVERLIMIT_WT); qdel of
a running job with 271 (SIGTERM).

Nodes and server, for backfill windows: ``pbsnodes -a -F json`` (PBS Pro: ``nodes`` keyed by
name, ``state`` "free" or "job-busy", ``jobs`` on a busy node) and ``pbsnodes -x`` (TORQUE:
``<Data><Node>`` with ``state`` "free" or "job-exclusive" and ``jobs``); ``qstat -B -f -F
json`` (PBS Pro: ``Server`` keyed by name, ``state_count``, ``resources_max.walltime`` when
$FAKE_MAX_WALLTIME is set) and ``qstat -B -f`` (TORQUE: ``Server: name`` and ``key = value``
lines). Nodes are ``fakenode01``... ($FAKE_NODES of them). With the ``unreachable`` fault
both fail with "cannot connect to server" (PBSE_NOSERVER 15010 as errno).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import common
import engine

FLAVOR = os.environ.get("FAKE_PBS_FLAVOR", "pbspro")
PRO = FLAVOR == "pbspro"
SERVER = "pbsserver" if PRO else "torqueserver"
NODE = "fakenode01"
VERSION = "22.05.11" if PRO else "6.1.3"
WITH_VALUE = set("NqAloeWrjvSPmMJacCuFs")


def job_id(job: dict) -> str:
    return f"{job['id']}.{SERVER}"


def parse_options(args: list[str], tool: str) -> tuple[dict[str, list[str]], list[str]]:
    opts: dict[str, list[str]] = {}
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("-") and len(arg) >= 2 and arg != "-":
            flag = arg[1]
            if flag in WITH_VALUE:
                value = arg[2:] or (args[i + 1] if i + 1 < len(args) else None)
                if value is None:
                    engine.fail(f"{tool}: option requires an argument -- '{flag}'", 2)
                opts.setdefault(flag, []).append(value)
                i += 1 if arg[2:] else 2
                continue
            if flag in "VhzHxftB":
                opts.setdefault(flag, []).append("")
                i += 1
                continue
            engine.fail(f"{tool}: invalid option -- '{flag}'\nusage: {tool} [options]", 2)
        rest.append(arg)
        i += 1
    return opts, rest


def hms(total: int | None) -> str:
    total = total or 0
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


def qsub(args: list[str]) -> None:
    cli, rest = parse_options(args, "qsub")
    if not rest:
        engine.fail("qsub: a script file is required (jobs from stdin are not supported here)", 2)
    script = Path(rest[0])
    try:
        text = script.read_text()
    except OSError:
        engine.fail(f"qsub: script file:: No such file or directory ({script})", 2)
    opts = common.submitted(cli, text, "#PBS", lambda found: parse_options(found, "qsub"))
    nodes = ppn = 1
    walltime = None
    for res in ",".join(opts.get("l", [])).split(","):
        key, _, value = res.partition("=")
        if key == "walltime":
            walltime = common.seconds(value)
        elif key == "select" and PRO:
            chunks = value.split(":")
            nodes = int(chunks[0]) if chunks[0].isdigit() else 1
            for chunk in chunks[1:]:
                if chunk.startswith("ncpus="):
                    ppn = int(chunk[6:])
        elif key == "nodes" and not PRO:
            first, *rest_ = value.split(":")
            nodes = int(first) if first.isdigit() else 1
            ppn = next((int(c[4:]) for c in rest_ if c.startswith("ppn=")), 1)
        elif key == "select":  # TORQUE has no select statement
            engine.fail(
                "qsub: submit error (Unknown resource type  MSG=cannot locate resource select)", 1
            )
    queue = (opts.get("q") or ["workq" if PRO else "batch"])[-1]
    refusal = "qsub: Unknown queue" if PRO else "qsub: submit error (Unknown queue)"
    common.refuse_if_asked(refusal, 170 if PRO else 1)
    with engine.state() as data:
        job = engine.new_job(
            data,
            name=(opts.get("N") or [script.name])[-1],
            queue=queue,
            account=(opts.get("A") or [""])[-1],
            script=str(script.resolve()),
            cwd=os.environ.get("HOME", "/"),
            out=(opts.get("o") or [os.devnull])[-1].split(":", 1)[-1],
            err=(opts.get("e") or [os.devnull])[-1].split(":", 1)[-1],
            nodes=nodes,
            ppn=ppn,
            walltime=walltime,
            held="h" in opts,
            extra={"rerunable": (opts.get("r") or ["y"])[-1] == "y", "args": str(script)},
        )
        engine.tick(data, job_env)
    if "z" not in opts:
        print(job_id(job))


def job_env(job: dict) -> dict[str, str]:
    return {
        "PBS_JOBID": job_id(job),
        "PBS_JOBNAME": job["name"],
        "PBS_QUEUE": job["queue"],
        "PBS_O_WORKDIR": job["cwd"],
    }


def letter(job: dict) -> str:
    if job["state"] == "done":
        return "F" if PRO else "C"
    if job["state"] == "running":
        return "R"
    return "H" if job["held"] else "Q"


def exit_status(job: dict) -> int | None:
    cause = job["cause"]
    if job["state"] != "done" or (cause == "cancelled" and not job["started"]):
        return None
    if cause == "node_fail":
        return -3
    if cause in ("preempted", "cancelled"):
        return 271
    if cause == "timeout":
        return -29 if PRO else -11
    if cause == "killed":
        return 265
    return job["exit_code"]


def comment(job: dict) -> str:
    at = time.strftime("%a %b %d at %H:%M", time.localtime(job["started"] or time.time()))
    cause = job["cause"]
    if cause == "node_fail":
        return (
            f"Job run at {at} on ({NODE}:ncpus={job['ppn']}) and killed: execution node {NODE} down"
        )
    if cause == "preempted":
        return f"Job preempted by deletion at {at}"
    if cause == "timeout":
        return f"Job run at {at} and killed: walltime exceeded limit {hms(job['walltime'])}"
    if job["state"] == "done":
        return f"Job run at {at} on ({NODE}:ncpus={job['ppn']}) and finished"
    if job["state"] == "running":
        return f"Job run at {at} on ({NODE}:ncpus={job['ppn']})"
    return "Not Running: Insufficient amount of resource: ncpus "


def attributes(job: dict) -> dict:
    def stamp(t: float | None) -> object:
        if t is None:
            return None
        return time.strftime("%a %b %d %H:%M:%S %Y", time.localtime(t)) if PRO else int(t)

    attrs: dict = {
        "Job_Name": job["name"],
        "Job_Owner": f"{job['owner']}@{SERVER}",
        "job_state": letter(job),
        "queue": job["queue"],
        "server": SERVER,
        "ctime": stamp(job["submitted"]),
        "Error_Path": f"{SERVER}:{job['err']}",
        "Output_Path": f"{SERVER}:{job['out']}",
        "qtime": stamp(job["submitted"]),
        "Rerunable": "True" if job["extra"].get("rerunable") else "False",
        "Resource_List": (
            {"ncpus": job["ppn"] * job["nodes"], "nodect": job["nodes"]}
            | {"select": f"{job['nodes']}:ncpus={job['ppn']}", "walltime": hms(job["walltime"])}
            if PRO
            else {
                "nodect": job["nodes"],
                "nodes": f"{job['nodes']}:ppn={job['ppn']}",
                "walltime": hms(job["walltime"]),
            }
        ),
        "comment": comment(job),
        "Submit_arguments" if PRO else "submit_args": job["extra"].get("args", ""),
    }
    if job["account"]:
        attrs["Account_Name"] = job["account"]
    if job["started"]:
        attrs["exec_host"] = f"{NODE}/0"
        attrs["stime" if PRO else "start_time"] = stamp(job["started"])
        attrs["run_count" if PRO else "start_count"] = 1
    if PRO:
        attrs["substate"] = {"F": 92, "R": 42, "H": 20, "Q": 10}[letter(job)]
        attrs["project"] = "_pbs_project_default"
    code = exit_status(job)
    if code is not None:
        attrs["Exit_status" if PRO else "exit_status"] = code
    if not PRO and job["state"] == "done":
        attrs["comp_time"] = stamp(job["ended"])
    return {k: v for k, v in attrs.items() if v is not None}


def listed(data: dict, history: bool) -> list[dict]:
    keep = float(os.environ.get("FAKE_KEEP_COMPLETED", "300"))
    jobs = []
    for job in engine.visible(data):
        if job["state"] == "done":
            if PRO and not history:
                continue
            if not PRO and time.time() - job["ended"] > keep:
                continue
        jobs.append(job)
    return jobs


def lookup(jobs: list[dict], wanted: str) -> dict | None:
    number = wanted.split(".", 1)[0]
    return next((j for j in jobs if str(j["id"]) == number), None)


def qstat(args: list[str]) -> None:
    opts, ids = parse_options(args, "qstat")
    if "B" in opts:
        server_status(opts)
        return
    json_out = PRO and opts.get("F", [""])[-1] == "json"
    history = PRO and "x" in opts
    xml_out = not PRO and "x" in opts
    with engine.ticked(job_env) as data:
        jobs = listed(data, history)
        every = listed(data, True)
    errors, code = [], 0
    if ids:
        chosen = []
        for wanted in ids:
            job = lookup(jobs, wanted)
            if job is not None:
                chosen.append(job)
            elif PRO and lookup(every, wanted) is not None:
                errors.append(
                    f"qstat: {wanted} Job has finished, use -x or -H to obtain historical job "
                    "information"
                )
                code = code or 35
            else:
                errors.append(f"qstat: Unknown Job Id {'' if PRO else 'Error '}{wanted}")
                code = 153
        jobs = chosen
    if json_out:
        doc = {"timestamp": int(time.time()), "pbs_version": VERSION, "pbs_server": SERVER}
        if jobs:
            doc["Jobs"] = {job_id(j): attributes(j) for j in jobs}
        print(json.dumps(doc, indent=4))
    elif xml_out:
        if jobs:
            sys.stdout.write("<Data>" + "".join(xml_job(j) for j in jobs) + "</Data>\n")
    elif "f" in opts:
        for j in jobs:
            print(f"Job Id: {job_id(j)}")
            for key, value in attributes(j).items():
                if isinstance(value, dict):
                    for sub, item in value.items():
                        print(f"    {key}.{sub} = {item}")
                else:
                    print(f"    {key} = {value}")
            print()
    elif jobs:
        print("Job id            Name             User              Time Use S Queue")
        print("----------------  ---------------- ----------------  -------- - -----")
        for j in jobs:
            print(
                f"{job_id(j):<17} {j['name'][:16]:<16} {j['owner'][:16]:<16}  00:00:00 "
                f"{letter(j)} {j['queue']}"
            )
    for line in errors:
        sys.stderr.write(line + "\n")
    sys.exit(code)


def xml_job(job: dict) -> str:
    def element(key: str, value: object) -> str:
        if isinstance(value, dict):
            inner = "".join(element(k, v) for k, v in value.items())
        else:
            inner = str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        return f"<{key}>{inner}</{key}>"

    body = element("Job_Id", job_id(job))
    return "<Job>" + body + "".join(element(k, v) for k, v in attributes(job).items()) + "</Job>"


def qselect(args: list[str]) -> None:
    opts, _ = parse_options(args, "qselect")
    if "x" in opts and not PRO:
        engine.fail("qselect: invalid option -- 'x'", 2)
    with engine.ticked(job_env) as data:
        jobs = (
            listed(data, "x" in opts)
            if PRO
            else [j for j in listed(data, True) if j["state"] != "done"]
        )
    names = opts.get("N")
    for job in jobs:
        if names and job["name"] != names[-1]:
            continue
        if "u" in opts and job["owner"] != opts["u"][-1]:
            continue
        print(job_id(job))


def qdel(args: list[str]) -> None:
    _opts, ids = parse_options(args, "qdel")
    code = 0
    with engine.ticked(job_env) as data:
        for wanted in ids:
            job = lookup(engine.visible(data), wanted)
            if job is None:
                sys.stderr.write(f"qdel: Unknown Job Id {wanted}\n")
                code = 153
            elif job["state"] == "done":
                if PRO:
                    sys.stderr.write(f"qdel: Job has finished {wanted}\n")
                    code = 35
                else:
                    sys.stderr.write(
                        f"qdel: Request invalid for state of job MSG=invalid state for job - "
                        f"COMPLETE {wanted}\n"
                    )
                    code = 188
            else:
                engine.cancel(job)
    sys.exit(code)


def node_name(index: int) -> str:
    return f"fakenode{index + 1:02d}"


def cannot_connect(tool: str) -> None:
    engine.unreachable(
        f"Connection refused\n{tool}: cannot connect to server {SERVER} (errno=15010)", 1
    )


def pbsnodes(args: list[str]) -> None:
    cannot_connect("pbsnodes")
    json_out = PRO and args[-2:] == ["-F", "json"]
    if not (json_out or (not PRO and args == ["-x"]) or args in (["-a"], [])):
        engine.fail(f"pbsnodes: invalid option -- '{args[0].lstrip('-')[:1]}'", 2)
    with engine.ticked(job_env) as data:
        held = engine.occupancy(data)
    cpus = int(os.environ.get("FAKE_NODE_CPUS", "2"))
    busy = "job-busy" if PRO else "job-exclusive"
    if json_out:
        nodes = {}
        for index, job in enumerate(held):
            name = node_name(index)
            node = {
                "Mom": name,
                "Port": 15002,
                "pbs_version": VERSION,
                "ntype": "PBS",
                "state": busy if job else "free",
                "pcpus": cpus,
                "resources_available": {
                    "arch": "linux",
                    "host": name,
                    "ncpus": cpus,
                    "vnode": name,
                },
                "resources_assigned": {"ncpus": cpus if job else 0},
                "resv_enable": "True",
                "sharing": "default_shared",
            }
            if job:
                node["jobs"] = [f"{job_id(job)}/{i}" for i in range(cpus)]
            nodes[name] = node
        doc = {"timestamp": int(time.time()), "pbs_version": VERSION, "pbs_server": SERVER}
        print(json.dumps(doc | {"nodes": nodes}, indent=4))
        return
    parts = []
    for index, job in enumerate(held):
        jobs = f"<jobs>{','.join(f'{i}/{job_id(job)}' for i in range(cpus))}</jobs>" if job else ""
        parts.append(
            f"<Node><name>{node_name(index)}</name><state>{busy if job else 'free'}</state>"
            f"<power_state>Running</power_state><np>{cpus}</np><ntype>cluster</ntype>{jobs}"
            "<mom_service_port>15002</mom_service_port><mom_manager_port>15003</mom_manager_port>"
            "</Node>"
        )
    sys.stdout.write("<Data>" + "".join(parts) + "</Data>\n")


def server_status(opts: dict[str, list[str]]) -> None:
    cannot_connect("qstat")
    with engine.ticked(job_env) as data:
        jobs = listed(data, False)
    counts = {"Transit": 0, "Queued": 0, "Held": 0, "Waiting": 0, "Running": 0, "Exiting": 0}
    counts |= {"Begun": 0} if PRO else {"Complete": 0}
    for job in jobs:
        key = {"R": "Running", "H": "Held", "Q": "Queued", "C": "Complete"}.get(letter(job))
        if key:
            counts[key] += 1
    attrs: dict = {
        "server_state": "Active",
        "server_host": SERVER,
        "scheduling": "True",
        "total_jobs": len(jobs),
        "state_count": " ".join(f"{k}:{v}" for k, v in counts.items()) + " ",
        "default_queue": "workq" if PRO else "batch",
    }
    if os.environ.get("FAKE_MAX_WALLTIME"):
        attrs["resources_max"] = {"walltime": hms(int(os.environ["FAKE_MAX_WALLTIME"]))}
    attrs |= {"resources_assigned": {"nodect": sum(j["nodes"] for j in jobs if letter(j) == "R")}}
    attrs["pbs_version"] = VERSION
    if PRO and opts.get("F", [""])[-1] == "json":
        doc = {"timestamp": int(time.time()), "pbs_version": VERSION, "pbs_server": SERVER}
        print(json.dumps(doc | {"Server": {SERVER: attrs}}, indent=4))
        return
    print(f"Server: {SERVER}")
    for key, value in attrs.items():
        for sub, item in value.items() if isinstance(value, dict) else [("", value)]:
            print(f"    {key}{'.' + sub if sub else ''} = {item}")
    print()


TOOLS = {"qsub": qsub, "qstat": qstat, "qselect": qselect, "qdel": qdel, "pbsnodes": pbsnodes}
