#!/usr/bin/env python3
"""aside side by side with its peers (agent-procs, pueue, supervisord, pm2), in one run.

Usage: bench/peers [--quick] [--peers aside,agent-procs,...] [--sizes 200,1000]
(bench/peers installs the peers, builds the release binary and runs this; the table goes into
BENCHMARKS.md between its "peers" markers.)

Every workload runs for every peer in interleaved batches (batch 1 of each peer, then batch 2
of each, ...), so a busy moment of the machine falls on all columns alike. Numbers are
medians with their range; ratios are to the best peer (not aside) on the row. Latencies
inside a run are measured with timestamps written by the child itself. Memory is PSS
(`/proc/PID/smaps_rollup`) of the runtime's own processes: its daemon(s) and whatever stands
between it and each command (aside's shim, a `sh -c`), never the command (`sleep`) itself.
Nothing here asserts: the numbers are the output.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from procfs import pids_in, pss_kib
from report import median_range, platform_line, write_section

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get(
    "ASIDE_BENCH_PEERS",
    os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "aside-bench"),
)
WORK = tempfile.mkdtemp(prefix="aspeers", dir="/tmp")
LINE = "x" * 99
FLOOD_BYTES = 200_000_000


def write_script(name, body):
    path = os.path.join(WORK, name)
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body + "\n")
    os.chmod(path, 0o755)
    return path


# The commands every peer runs, as one program with plain arguments (so no peer needs a shell
# to parse them, and each runs them its own usual way).
STAMP = write_script("stamp", 'date +%s%N > "$1.tmp" && mv "$1.tmp" "$1"')
LATE_STAMP = write_script("late-stamp", 'sleep 0.2; date +%s%N > "$1.tmp" && mv "$1.tmp" "$1"')
FLOOD = write_script("flood", f"yes {LINE} | head -c {FLOOD_BYTES}")


def now_ns():
    return time.time_ns()


def quiet(argv, env, check=True, timeout=120):
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()[:400]}")
    return r




def processes():
    """pid -> (ppid, argv) for every process on the machine."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        out[int(d)] = (ppid, argv)
    return out


def wait_for(what, check, deadline_s=60, every=0.0005):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        got = check()
        if got:
            return got
        time.sleep(every)
    raise RuntimeError(f"timed out waiting for {what}")


def read_stamp(path, deadline_s=60):
    def ready():
        try:
            with open(path) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    return wait_for(f"stamp {path}", ready, deadline_s)


class Peer:
    """One runtime under test, with its own state directory."""

    name = ""
    version = ""
    tag = ""  # a marker in each command's argv, to find this peer's commands among all

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix=self.name, dir=WORK)
        self.env = dict(os.environ)
        self.count = 0

    def fresh_name(self):
        self.count += 1
        return f"p{self.count}"

    # what each peer implements
    def start_daemon(self): ...
    def stop_daemon(self): ...
    def daemon_pids(self): ...
    def run_argv(self, name, program, args): ...
    def status_argv(self): ...
    def has_exited(self, name, status_out): ...
    def clear(self): ...

    def run(self, name, program, *args):
        quiet(self.run_argv(name, program, list(args)), self.env)

    def fill(self, n):
        """n `sleep` commands running (tagged with this peer's marker)."""
        for _ in range(n):
            self.run(self.fresh_name(), "sleep", self.sleep_arg())

    def sleep_arg(self):
        return f"600.{self.tag}"

    def runtime_pss_kib(self):
        """PSS of the daemon(s) plus every process between a daemon and its `sleep`s."""
        procs = processes()
        runtime = set(self.daemon_pids())
        for pid, (ppid, argv) in procs.items():
            if len(argv) == 2 and os.path.basename(argv[0]) == "sleep" and argv[1] == self.sleep_arg():
                p = ppid
                while p > 1 and p not in runtime and p in procs:
                    runtime.add(p)
                    p = procs[p][0]
        return sum(pss_kib(p) for p in runtime), len(runtime)

    def status_text(self):
        return quiet(self.status_argv(), self.env).stdout

    def timed_status(self):
        """ms of one whole status CLI process."""
        t0 = time.perf_counter()
        self.status_text()
        return (time.perf_counter() - t0) * 1000


class Aside(Peer):
    name, tag = "aside", "1"

    def __init__(self):
        super().__init__()
        self.bin = os.path.join(ROOT, "target", "release", "aside")
        self.version = quiet([self.bin, "--version"], os.environ).stdout.split()[-1]
        self.env.update(ASIDE_HOME=os.path.join(self.dir, "h"), ASIDE_IDLE_TIMEOUT="0")
        self.env.pop("ASIDE_OWNER", None)

    def start_daemon(self):
        quiet([self.bin, "daemon", "start"], self.env)

    def stop_daemon(self):
        quiet([self.bin, "daemon", "stop"], self.env, check=False)

    def daemon_pids(self):
        r = quiet([self.bin, "daemon", "status", "--json"], self.env, check=False)
        try:
            return [json.loads(r.stdout)["pid"]]
        except (ValueError, KeyError):
            return []

    def run_argv(self, name, program, args):
        return [self.bin, "run", "--name", name, "--log-cap", "256MiB", " ".join([program, *args])]

    def status_argv(self):
        return [self.bin, "status", "--json"]

    def has_exited(self, name, out):
        return any(r["name"] == name and r["state"] != "running" for r in json.loads(out))

    def clear(self):
        # Ended processes stay listed until their results are read.
        quiet([self.bin, "stop-all"], self.env, check=False)
        quiet([self.bin, "inbox", "--drain"], self.env, check=False)


class AgentProcs(Peer):
    name, tag, version = "agent-procs", "2", "0.6.3"

    def __init__(self):
        super().__init__()
        self.bin = os.path.join(CACHE, f"agent-procs-{self.version}", "bin", "agent-procs")
        self.session = f"bench-{os.getpid()}"
        home = os.path.join(self.dir, "home")
        os.makedirs(os.path.join(home, "run"), exist_ok=True)
        self.env.update(HOME=home, XDG_STATE_HOME=os.path.join(home, "state"), XDG_RUNTIME_DIR=os.path.join(home, "run"))

    def cli(self, *args):
        return [self.bin, "--session", self.session, *args]

    def pid_file(self):
        return f"/tmp/agent-procs-{os.getuid()}/{self.session}.pid"

    def start_daemon(self):
        # It starts on first use; status is the cheapest use.
        quiet(self.cli("status"), self.env, check=False)

    def daemon_pids(self):
        return pids_in(self.pid_file())

    def stop_daemon(self):
        for pid in self.daemon_pids():
            try:
                os.kill(pid, signal.SIGTERM)
                wait_for("agent-procs to stop", lambda: not os.path.exists(f"/proc/{pid}"), 10, 0.005)
            except (OSError, RuntimeError):
                pass

    def run_argv(self, name, program, args):
        return self.cli("run", "--name", name, " ".join([program, *args]))

    def status_argv(self):
        return self.cli("status", "--json")

    def has_exited(self, name, out):
        rows = json.loads(out)
        rows = rows.get("processes", rows) if isinstance(rows, dict) else rows
        return any(r["name"] == name and r["state"] != "running" for r in rows)

    def clear(self):
        quiet(self.cli("stop-all"), self.env, check=False)
        # Ended processes stay listed until the daemon goes.
        self.stop_daemon()
        self.start_daemon()


class Pueue(Peer):
    name, tag, version = "pueue", "3", "4.0.4"

    def __init__(self):
        super().__init__()
        root = os.path.join(CACHE, f"pueue-{self.version}", "bin")
        self.client, self.daemon = os.path.join(root, "pueue"), os.path.join(root, "pueued")
        self.config = os.path.join(self.dir, "pueue.yml")
        self.socket = os.path.join(self.dir, "run", "pueue.sock")
        os.makedirs(os.path.join(self.dir, "run"), exist_ok=True)
        with open(self.config, "w") as f:
            f.write(
                "shared:\n"
                f"  pueue_directory: {self.dir}/data\n"
                f"  runtime_directory: {self.dir}/run\n"
                "  use_unix_socket: true\n"
                f"  unix_socket_path: {self.socket}\n"
                "daemon:\n"
                "  callback: null\n"
            )

    def cli(self, *args):
        return [self.client, "--config", self.config, *args]

    def start_daemon(self):
        # Its daemonized child keeps the pipes it inherited: nothing to capture.
        subprocess.run(
            [self.daemon, "--config", self.config, "--daemonize"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=60,
        )
        wait_for("pueued's socket", lambda: os.path.exists(self.socket), 30, 0.0005)
        wait_for("pueued to answer", lambda: quiet(self.cli("status"), self.env, check=False).returncode == 0, 30, 0.001)
        # Every added task starts at once, as with the others (pueue's default is 1 at a time).
        quiet(self.cli("parallel", "100000"), self.env)

    def daemon_pids(self):
        return pids_in(os.path.join(self.dir, "data", "pueue.pid")) or [pid for pid, (_, argv) in processes().items() if argv[:1] == [self.daemon] and self.config in argv]

    def stop_daemon(self):
        quiet(self.cli("shutdown"), self.env, check=False)
        for pid in self.daemon_pids():
            wait_for("pueued to stop", lambda: not os.path.exists(f"/proc/{pid}"), 10, 0.005)
        if os.path.exists(self.socket):
            os.remove(self.socket)

    def run_argv(self, name, program, args):
        return self.cli("add", "--label", name, "--", program, *args)

    def status_argv(self):
        return self.cli("status", "--json")

    def has_exited(self, name, out):
        tasks = json.loads(out)["tasks"].values()
        return any(t.get("label") == name and "Done" in t["status"] for t in tasks if isinstance(t["status"], dict))

    def clear(self):
        # `kill --all` pauses every group and `reset` runs in the background: wait for it to
        # be done, then resume.
        quiet(self.cli("kill", "--all"), self.env, check=False)
        quiet(self.cli("reset", "--force"), self.env, check=False)
        wait_for(
            "pueue's reset",
            lambda: not json.loads(quiet(self.cli("status", "--json"), self.env).stdout)["tasks"],
            60,
            0.01,
        )
        quiet(self.cli("start"), self.env, check=False)


class Supervisord(Peer):
    name, tag, version = "supervisord", "4", "4.3.0"

    def __init__(self):
        super().__init__()
        bindir = os.path.join(CACHE, f"supervisor-{self.version}", "bin")
        self.supervisord, self.ctl = os.path.join(bindir, "supervisord"), os.path.join(bindir, "supervisorctl")
        self.conf = os.path.join(self.dir, "supervisord.conf")
        self.include = os.path.join(self.dir, "conf.d")
        self.logs = os.path.join(self.dir, "logs")
        os.makedirs(self.include, exist_ok=True)
        os.makedirs(self.logs, exist_ok=True)
        d = self.dir
        with open(self.conf, "w") as f:
            f.write(
                f"[unix_http_server]\nfile={d}/supervisor.sock\n"
                f"[supervisord]\nlogfile={d}/supervisord.log\npidfile={d}/supervisord.pid\n"
                f"childlogdir={self.logs}\nminfds=4096\n"
                "[rpcinterface:supervisor]\n"
                "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
                f"[supervisorctl]\nserverurl=unix://{d}/supervisor.sock\n"
                f"[include]\nfiles = {self.include}/*.conf\n"
            )

    def program(self, name, program, args):
        # startsecs=0 and no autorestart: a command that ends is over, as with the others.
        with open(os.path.join(self.include, f"{name}.conf"), "w") as f:
            f.write(
                f"[program:{name}]\ncommand={' '.join([program, *args])}\nstartsecs=0\n"
                f"autorestart=false\nstdout_logfile={self.logs}/{name}.out\n"
                f"stderr_logfile={self.logs}/{name}.err\nstdout_logfile_maxbytes=0\n"
                "stderr_logfile_maxbytes=0\n"
            )

    def start_daemon(self):
        quiet([self.supervisord, "-c", self.conf], self.env)
        wait_for("supervisord to answer", lambda: quiet([self.ctl, "-c", self.conf, "pid"], self.env, check=False).returncode == 0, 30, 0.002)

    def daemon_pids(self):
        return pids_in(os.path.join(self.dir, "supervisord.pid"))

    def stop_daemon(self):
        pids = self.daemon_pids()
        quiet([self.ctl, "-c", self.conf, "shutdown"], self.env, check=False)
        for pid in pids:
            wait_for("supervisord to stop", lambda: not os.path.exists(f"/proc/{pid}"), 30, 0.005)

    def run_argv(self, name, program, args):
        # A new program is a config file and `update` (what supervisord's users do).
        self.program(name, program, args)
        return [self.ctl, "-c", self.conf, "update", name]

    def fill(self, n):
        for _ in range(n):
            self.program(self.fresh_name(), "sleep", [self.sleep_arg()])
        quiet([self.ctl, "-c", self.conf, "update"], self.env, timeout=600)

    def status_argv(self):
        return [self.ctl, "-c", self.conf, "status"]

    def status_text(self):
        # supervisorctl status exits 3 when something is not running.
        return quiet(self.status_argv(), self.env, check=False).stdout

    def has_exited(self, name, out):
        return any(line.split()[:2] in ([name, "EXITED"], [name, "FATAL"]) for line in out.splitlines())

    def clear(self):
        # `update` stops removed programs one by one, waiting for each: minutes at 1000. The
        # commands end first, so that it only has to forget them.
        quiet([self.ctl, "-c", self.conf, "stop", "all"], self.env, check=False, timeout=600)
        for f in os.listdir(self.include):
            os.remove(os.path.join(self.include, f))
        quiet([self.ctl, "-c", self.conf, "update"], self.env, check=False, timeout=600)


class Pm2(Peer):
    name, tag, version = "pm2", "5", "7.0.4"

    def __init__(self):
        super().__init__()
        self.bin = os.path.join(CACHE, f"pm2-{self.version}", "node_modules", ".bin", "pm2")
        self.env.update(PM2_HOME=os.path.join(self.dir, "pm2"))

    def start_daemon(self):
        quiet([self.bin, "ping"], self.env)

    def daemon_pids(self):
        return pids_in(os.path.join(self.env["PM2_HOME"], "pm2.pid"))

    def stop_daemon(self):
        quiet([self.bin, "kill"], self.env, check=False)

    def run_argv(self, name, program, args):
        # `--interpreter none`: the program itself, not node running it.
        return [self.bin, "start", program, "--name", name, "--no-autorestart", "--interpreter", "none", *(["--", *args] if args else [])]

    def fill(self, n):
        apps = []
        for _ in range(n):
            apps.append({"name": self.fresh_name(), "script": "sleep", "args": [self.sleep_arg()], "autorestart": False, "interpreter": "none"})
        eco = os.path.join(self.dir, "ecosystem.json")
        with open(eco, "w") as f:
            json.dump({"apps": apps}, f)
        quiet([self.bin, "start", eco], self.env, timeout=1200)

    def status_argv(self):
        return [self.bin, "jlist"]

    def has_exited(self, name, out):
        return any(p["name"] == name and p["pm2_env"]["status"] != "online" for p in json.loads(out))

    def clear(self):
        quiet([self.bin, "delete", "all"], self.env, check=False, timeout=600)


PEERS = {"aside": Aside, "agent-procs": AgentProcs, "pueue": Pueue, "supervisord": Supervisord, "pm2": Pm2}


def interleaved(peers, batches, per_batch, one):
    """samples[peer name] from `one(peer)` called per_batch times per batch, peers interleaved,
    each batch starting one peer later (a daemon still busy after its own batch slows whichever
    peer comes next: that is each of them in turn)."""
    samples = {p.name: [] for p in peers}
    for b in range(batches):
        for p in peers[b % len(peers) :] + peers[: b % len(peers)]:
            for _ in range(per_batch):
                samples[p.name].append(one(p))
    return samples


def timed(argv, env):
    t0 = time.perf_counter()
    quiet(argv, env)
    return (time.perf_counter() - t0) * 1000


# ---------- the workloads; each returns {peer name: [samples]} in ms (or KiB) ----------

def warm_run(peers, batches, per):
    def one(p):
        return timed(p.run_argv(p.fresh_name(), "sleep", [p.sleep_arg()]), p.env)

    s = interleaved(peers, batches, per, one)
    for p in peers:
        p.clear()
    return s


def run_to_running(peers, batches, per):
    def one(p):
        marker = os.path.join(p.dir, f"m{p.count + 1}")
        argv = p.run_argv(p.fresh_name(), STAMP, [marker])
        t0 = now_ns()
        quiet(argv, p.env)
        return (read_stamp(marker) - t0) / 1e6

    s = interleaved(peers, batches, per, one)
    for p in peers:
        p.clear()
    return s


def cold_run(peers, batches, per):
    def one(p):
        p.stop_daemon()
        t0 = time.perf_counter()
        if not isinstance(p, (Aside, AgentProcs, Pm2)):
            p.start_daemon()  # no start on first use: the daemon is started by hand
        quiet(p.run_argv(p.fresh_name(), "sleep", [p.sleep_arg()]), p.env)
        ms = (time.perf_counter() - t0) * 1000
        if isinstance(p, (Aside, AgentProcs, Pm2)):
            p.clear()
        return ms

    s = interleaved(peers, batches, per, one)
    for p in peers:
        p.clear()
    return s


def exit_to_status(peers, batches, per):
    """From the child's last timestamp (just before it exits) to the end of the first status
    call that shows it ended: what a script polling status sees."""

    def one(p):
        name = p.fresh_name()
        marker = os.path.join(p.dir, f"x{p.count}")
        p.run(name, LATE_STAMP, marker)
        stamp = read_stamp(marker)
        while True:
            out = p.status_text()
            if p.has_exited(name, out):
                return (now_ns() - stamp) / 1e6

    s = interleaved(peers, batches, per, one)
    for p in peers:
        p.clear()
    return s


def flood(peers, batches, per):
    """200 MB of 100-byte lines: start -> exit seen in status, as a multiple of the same
    program redirected into a file."""
    out = os.path.join(WORK, "flood.out")

    def reference():
        t0 = time.perf_counter()
        with open(out, "w") as f:
            subprocess.run([FLOOD], stdout=f, check=True)
        return (time.perf_counter() - t0) * 1000

    def one(p):
        name = p.fresh_name()
        t0 = time.perf_counter()
        p.run(name, FLOOD)
        # Polled every 50 ms: a status call takes CPU from the flood (a Python or Node CLI a
        # lot), and 50 ms is under 10% of the run.
        while not p.has_exited(name, p.status_text()):
            time.sleep(0.05)
        ms = (time.perf_counter() - t0) * 1000
        p.clear()
        return ms / reference()

    return interleaved(peers, batches, per, one)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--sizes", default="200,1000")
    ap.add_argument("--quick", action="store_true", help="fewer samples, 200 only")
    opts = ap.parse_args()
    batches, per = (2, 3) if opts.quick else (5, 6)
    sizes = [200] if opts.quick else [int(n) for n in opts.sizes.split(",")]
    peers = [PEERS[n]() for n in opts.peers.split(",")]
    for p in peers:
        p.start_daemon()

    rows = []  # (workload, unit, {peer: samples}, lower is better)

    def row(title, unit, samples):
        rows.append((title, unit, samples))
        print(title, {k: round(statistics.median(v), 2) for k, v in samples.items()}, flush=True)

    try:
        row("warm `run 'sleep 600'`, whole CLI process", "ms", warm_run(peers, batches, per))
        row("from `run` to the child running", "ms", run_to_running(peers, batches, per))
        row("cold `run` including the daemon's start", "ms", cold_run(peers, max(batches // 2, 1), 2))
        row("a process's exit → `status` shows it", "ms", exit_to_status(peers, batches, max(per // 2, 1)))
        row(
            "200 MB of 100-byte lines, start → exit seen, ÷ the same program into a file",
            "×",
            flood(peers, 1, 1),
        )
        for n in sizes:
            idle = {}
            for p in peers:
                p.clear()
                p.fill(1)
                idle[p.name] = p.runtime_pss_kib()[0]
                p.clear()
            for p in peers:
                p.fill(n)
            row(
                f"`status --json` with {n} running (supervisord: `status`, pm2: `jlist`)",
                "ms",
                interleaved(peers, batches, per, Peer.timed_status),
            )
            total = {p.name: [p.runtime_pss_kib()[0]] for p in peers}
            row(f"total runtime PSS with {n} running", "MiB", {k: [v[0] / 1024] for k, v in total.items()})
            row(
                f"runtime PSS per extra running process (at {n})",
                "KiB",
                {k: [(v[0] - idle[k]) / (n - 1)] for k, v in total.items()},
            )
            for p in peers:
                p.clear()
    finally:
        for p in peers:
            try:
                p.clear()
            finally:
                p.stop_daemon()
    write_table(peers, rows, opts)


def write_table(peers, rows, opts):
    names = [p.name for p in peers]
    head = "| workload | " + " | ".join(f"{p.name} {p.version}" for p in peers) + " | aside ÷ best peer |"
    lines = [head, "|---" * (len(names) + 2) + "|"]
    for title, unit, samples in rows:
        fmt = (lambda x: f"{x:.2f}") if unit in ("×",) else (lambda x: f"{x:.1f}")
        meds = {k: statistics.median(v) for k, v in samples.items()}
        others = {k: v for k, v in meds.items() if k != "aside"}
        best = min(others, key=others.get) if others else None
        cells = []
        for k in names:
            text = median_range(samples[k], fmt) if len(samples[k]) > 1 else fmt(samples[k][0])
            cells.append(f"**{text}**" if k == best else text)
        ratio = ""
        if best and "aside" in meds and others[best] > 0:
            r = meds["aside"] / others[best]
            ratio = f"{r:.2f}× ({'ahead' if r <= 1 else 'behind'})"
        lines.append(f"| {title} ({unit}) | " + " | ".join(cells) + f" | {ratio} |")
    cpu = platform_line()
    args = " ".join(sys.argv[1:])
    text = (
        "## Side by side with the peers\n\n"
        f"Measured by `bench/peers{(' ' + args) if args else ''}` on {cpu}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: medians (range), every peer "
        "interleaved in batches in one run; **bold** is the best peer on the row; lower is "
        "better everywhere. Latencies come from timestamps the child writes itself; \"exit → "
        "status\" ends with the first status call that shows the end, so it includes one status "
        "call. Memory counts each runtime's daemon and what it puts between itself and each "
        "command (aside's shim, a `sh -c`), not the commands. aside keeps all 200 MB of the "
        "flood (`--log-cap 256MiB`); supervisord and pm2 keep whole log files.\n\n"
        + "\n".join(lines)
        + "\n"
    )
    write_section("peers", text)
    print(text)


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
