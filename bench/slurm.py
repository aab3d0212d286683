#!/usr/bin/env python3
"""aside on Slurm next to Slurm by hand (`sbatch` and polling), in one run.

Usage: bench/slurm [--samples N]   (bench/slurm builds the release binary, starts a single-node
cluster with .ci/slurm-up unless SLURM_CONF names one, and runs this; the table goes into
BENCHMARKS.md between its "slurm" markers.)

Rows, each sampled N times, aside and by-hand interleaved:
- submit → queued shown: from starting `aside run --on slurm` to its answer (which says
  `queued`), against `sbatch --parsable` and then `squeue --json` listing the job.
- a job's end → its result in the inbox: from the timestamp the job's command writes as its
  last act to the first `aside inbox --json` that holds the result, against the first
  `sacct -c -j ID` that says COMPLETED; both polled every 20 ms.
Nothing here asserts: the numbers are the output.
"""

import argparse
import json
import os
import subprocess
import tempfile
import time

from report import ROOT, median_range, platform_line, write_section

ASIDE = os.path.join(ROOT, "target", "release", "aside")
WORK = tempfile.mkdtemp(prefix="asslurm", dir="/tmp")
POLL = 0.02


def out(argv, env):
    return subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout


def wait_until(check, limit=120):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(POLL)
    raise TimeoutError("no answer within the limit")


def stamp_script(i):
    path = os.path.join(WORK, f"stamp-{i}")
    return path, f"date +%s%N > {path}.tmp && mv {path}.tmp {path}"


def read_stamp(path):
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def aside_sample(env, i):
    path, cmd = stamp_script(f"a{i}")
    t0 = time.time_ns()
    info = json.loads(out([ASIDE, "run", "--json", "--on", "slurm", "--name", f"b{i}", cmd], env))
    submit = (time.time_ns() - t0) / 1e6
    assert info["status"] == "queued", info

    def in_inbox():
        inbox = json.loads(out([ASIDE, "inbox", "--json"], env))
        return any(n["result"]["name"] == f"b{i}" for n in inbox["notifications"])

    wait_until(in_inbox)
    seen = time.time_ns()
    end = wait_until(lambda: read_stamp(path))
    out([ASIDE, "inbox", "--drain"], env)
    return submit, (seen - end) / 1e6


def by_hand_sample(env, i):
    path, cmd = stamp_script(f"h{i}")
    script = os.path.join(WORK, f"job-{i}.sh")
    with open(script, "w") as f:
        f.write("#!/bin/sh\n" + cmd + "\n")
    t0 = time.time_ns()
    job = out(["sbatch", "--parsable", "--output=/dev/null", script], env).strip().split(";")[0]

    def listed():
        jobs = json.loads(out(["squeue", "--json"], env))["jobs"]
        return any(str(j["job_id"]) == job for j in jobs)

    wait_until(listed)
    submit = (time.time_ns() - t0) / 1e6

    def completed():
        acct = out(["sacct", "-c", "-j", job, "-n", "-P", "-o", "JobID,State"], env)
        return any(line.split("|")[:2] == [job, "COMPLETED"] for line in acct.splitlines())

    wait_until(completed)
    seen = time.time_ns()
    end = wait_until(lambda: read_stamp(path))
    return submit, (seen - end) / 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=10)
    opts = ap.parse_args()
    env = dict(os.environ, ASIDE_HOME=os.path.join(WORK, "home"), ASIDE_IDLE_TIMEOUT="600s")
    env.pop("ASIDE_OWNER", None)
    out([ASIDE, "daemon", "start"], env)
    rows = {"aside": ([], []), "by hand": ([], [])}
    try:
        for i in range(opts.samples):
            for name, sample in (("aside", aside_sample), ("by hand", by_hand_sample)):
                submit, end = sample(env, i)
                rows[name][0].append(submit)
                rows[name][1].append(end)
    finally:
        subprocess.run([ASIDE, "daemon", "stop"], env=env, capture_output=True)
    fmt = lambda x: f"{x:.0f}"
    titles = ("submit → queued shown (ms)", "a job's end → its result in the inbox (ms)")
    lines = ["| workload | aside | by hand (sbatch, squeue/sacct polled every 20 ms) |", "|---|---|---|"]
    for k, title in enumerate(titles):
        a, h = rows["aside"][k], rows["by hand"][k]
        lines.append(f"| {title} | {median_range(a, fmt)} | {median_range(h, fmt)} |")
    version = out(["sinfo", "--version"], env).strip()
    text = (
        "## On Slurm\n\n"
        f"Measured by `bench/slurm --samples {opts.samples}` on {platform_line()} with a "
        f"single-node {version} cluster (`.ci/slurm-up`), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: medians (range), aside and by hand "
        "interleaved. aside's answer to `run` already says `queued`; a job's end reaches its "
        "inbox when the shim's exit record appears (inotify on the run directory where the "
        "filesystem tells, else aside's 500 ms poll of `squeue --json`) and the result is "
        "written; by hand sees it as soon as `sacct` does, with a 20 ms poll loop of its own.\n\n" + "\n".join(lines) + "\n"
    )
    write_section("slurm", text)
    print(text)


if __name__ == "__main__":
    try:
        main()
    finally:
        subprocess.run(["rm", "-rf", WORK])
