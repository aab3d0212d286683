"""`aside --remote URL mcp` with a member token: an agent on another account works against a
shared daemon, as the token's owner.

Run by tests/mcp.rs with ASIDE_BIN and ASIDE_HOME set; exits non-zero on the first failed check.
"""

import json
import os
import subprocess

import anyio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from common import check, text_of

BIN = os.environ["ASIDE_BIN"]
HOME = os.environ["ASIDE_HOME"]
WORK = os.environ["ASIDE_WORK"]


def cli(*args):
    env = dict(os.environ, ASIDE_HOME=HOME)
    env.pop("ASIDE_OWNER", None)
    out = subprocess.run([BIN, *args], env=env, cwd=WORK, capture_output=True, text=True)
    check(out.returncode == 0, f"aside {' '.join(args)}", out.stderr)
    return out.stdout


async def main():
    cli("daemon", "start", "--listen", "127.0.0.1:0")
    port = json.loads(cli("web", "--json"))["port"]
    token = json.loads(cli("token", "create", "--owner", "remote-agent", "--team", "far", "--json"))["token"]
    # Another account: no access to the state directory, only the address and the token.
    env = {"PATH": os.environ["PATH"], "HOME": WORK, "ASIDE_HOME": os.path.join(WORK, "nowhere"), "ASIDE_TOKEN": token}
    params = StdioServerParameters(command=BIN, args=["--remote", f"http://127.0.0.1:{port}", "mcp"], env=env, cwd=WORK)
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            r = await session.call_tool("run", {"command": "echo from-afar", "is_background": True, "name": "afar"}, read_timeout_seconds=60)
            check(not r.is_error, "run over --remote", text_of(r))
            check(not r.is_error, "run over --remote", text_of(r))
            afar_id = r.structured_content["id"]
            r = await session.call_tool("wait", {"ids": [afar_id], "until": "all", "timeout_ms": 20000}, read_timeout_seconds=60)
            check(not r.is_error and r.structured_content["met"] is True, "wait over --remote", text_of(r))
            r = await session.call_tool("output", {"id": afar_id}, read_timeout_seconds=60)
            check(not r.is_error and "from-afar" in text_of(r), "its output over --remote", text_of(r))
    listed = json.loads(cli("status", "--all", "--json"))
    afar = [p for p in listed if p["name"] == "afar"]
    check(len(afar) == 1 and afar[0]["owner"] == "remote-agent" and afar[0]["team"] == "far", "it is the token's owner's, in its team", json.dumps(listed))
    check(not os.path.exists(os.path.join(WORK, "nowhere", "aside.db")), "no local daemon was started")

    bad = dict(env, ASIDE_TOKEN="aside_00000000_nope")
    out = subprocess.run([BIN, "--remote", f"http://127.0.0.1:{port}", "mcp"], env=bad, cwd=WORK, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30)
    check(out.returncode == 1 and "not valid" in out.stderr, "a refused token fails before the handshake", out.stderr)
    print("all remote checks passed")


anyio.run(main)
