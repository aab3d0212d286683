"""`run` on Slurm over MCP: queued, then its result delivered by piggyback on a later answer.

Run by tests/slurm.rs with ASIDE_BIN, ASIDE_HOME, ASIDE_WORK and SLURM_CONF set.
"""

import json
import os
import time

import anyio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from common import check, text_of

BIN = os.environ["ASIDE_BIN"]
HOME = os.environ["ASIDE_HOME"]
WORK = os.environ["ASIDE_WORK"]


async def main():
    with open(os.path.join(HOME, "policy.json"), "w") as f:
        json.dump({"allow": ["*"], "slurm": {"partitions": ["debug"], "max_cpus": 2}}, f)
    gate = os.path.join(WORK, "gate")
    env = dict(os.environ, ASIDE_HOME=HOME)
    env.pop("ASIDE_OWNER", None)
    params = StdioServerParameters(command=BIN, args=["mcp", "--owner", "hpc-agent"], env=env, cwd=WORK)
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            hold = f"while [ ! -e {gate} ]; do sleep 0.1; done"
            r = await session.call_tool("run", {"command": hold, "name": "hold", "on": "slurm:debug",
                                                "cpus": "2", "run_in_background": True})
            check(not r.is_error and r.structured_content["job"]["executor"] == "slurm",
                  "run on slurm answers with its job", text_of(r))
            r = await session.call_tool("run", {"command": "echo computed 42", "name": "calc",
                                                "on": "slurm:debug", "run_in_background": True})
            s = r.structured_content
            check(not r.is_error and s["status"] == "queued", "a job behind one holding the CPUs is queued",
                  json.dumps(s))
            check("slurm job" in text_of(r), "the text says which job", text_of(r))
            r = await session.call_tool("run", {"command": "true", "on": "slurm:debug", "cpus": 8,
                                                "run_in_background": True})
            check(r.is_error and "slurm.max_cpus" in text_of(r), "over the policy's cap is refused", text_of(r))
            open(gate, "w").close()
            deadline = time.monotonic() + 60
            got = []
            while time.monotonic() < deadline and "calc" not in got:
                r = await session.call_tool("list", {})
                for res in r.structured_content.get("background_results") or []:
                    got.append(res["name"])
                    if res["name"] == "calc":
                        check(res["status"] == "completed" and "computed 42" in json.dumps(res),
                              "its result comes back on a later answer", json.dumps(res))
                await anyio.sleep(0.2)
            check("calc" in got, "calc's result was delivered", json.dumps(got))
            check(got.count("calc") == 1, "once", json.dumps(got))
    print("all slurm mcp checks passed")


anyio.run(main)
