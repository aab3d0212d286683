"""`aside mcp` as a raw JSON-RPC peer sees it: a parse error for a line that is not JSON, a prompt
exit when stdin closes with a subscription open, and a hint on stderr when started on a terminal.

Run by tests/mcp.rs with ASIDE_BIN, ASIDE_HOME and ASIDE_WORK set. Standard library only.
"""

import json
import os
import pty
import select
import subprocess
import time

from common import check

BIN = os.environ["ASIDE_BIN"]
WORK = os.environ["ASIDE_WORK"]


def read_message(proc, limit=20):
    """The next JSON line on the server's stdout (within `limit` seconds)."""
    deadline = time.time() + limit
    while time.time() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], deadline - time.time())
        if not ready:
            break
        line = proc.stdout.readline()
        if not line:
            break
        line = line.strip()
        if line:
            return json.loads(line)
    check(False, "the server answers in time")


def send(proc, msg):
    proc.stdin.write((json.dumps(msg) + "\n").encode())
    proc.stdin.flush()


def request(proc, id_, method, params):
    send(proc, {"jsonrpc": "2.0", "id": id_, "method": method, "params": params})
    while True:
        m = read_message(proc)
        if m.get("id") == id_:
            return m


proc = subprocess.Popen([BIN, "mcp", "--owner", "raw-peer"], stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=WORK)
proc.stdin.write(b"this is not json\n")
proc.stdin.flush()
err = read_message(proc)
check(err.get("error", {}).get("code") == -32700 and err.get("id") is None,
      "a line that is not JSON gets a -32700 parse error", json.dumps(err))

init = request(proc, 1, "initialize", {
    "protocolVersion": "2025-06-18", "capabilities": {},
    "clientInfo": {"name": "raw", "version": "1"},
})
check(init["result"]["capabilities"]["resources"].get("subscribe") is True, "subscribe is advertised")
send(proc, {"jsonrpc": "2.0", "method": "notifications/initialized"})
run = request(proc, 2, "tools/call", {"name": "run", "arguments": {
    "command": "echo waiting; sleep 60", "run_in_background": "true", "name": "sleeper"}})
check("structuredContent" in run["result"], "a tool answer", json.dumps(run))
uri = f"aside://runs/{run['result']['structuredContent']['id']}"
sub = request(proc, 3, "resources/subscribe", {"uri": uri})
check("result" in sub, "resources/subscribe at 2025-06-18", json.dumps(sub))

start = time.time()
proc.stdin.close()
try:
    proc.wait(timeout=10)
except subprocess.TimeoutExpired:
    proc.kill()
took = time.time() - start
check(took < 2.0, "it exits at once when stdin closes, subscription open or not", f"{took:.2f} s")

# On a terminal, a person learns what this is.
master, slave = pty.openpty()
tty = subprocess.Popen([BIN, "mcp", "--owner", "raw-peer"], stdin=slave, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, cwd=WORK)
os.close(slave)
ready, _, _ = select.select([tty.stderr], [], [], 10)
hint = tty.stderr.readline().decode() if ready else ""
check("MCP server" in hint and "claude mcp add" in hint, "a one-line hint on a terminal", hint)
os.close(master)
try:
    tty.wait(timeout=10)
except subprocess.TimeoutExpired:
    tty.kill()

subprocess.run([BIN, "stop-all"], cwd=WORK, capture_output=True)
print("all hygiene checks passed")
