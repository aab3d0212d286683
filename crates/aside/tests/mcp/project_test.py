"""Projects over MCP: `up` (progress as notifications) and `down`, judged by the policy.

Run by tests/mcp.rs with ASIDE_BIN, ASIDE_HOME and ASIDE_WORK set.
"""

import json
import os

import anyio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from common import check, text_of

BIN = os.environ["ASIDE_BIN"]
HOME = os.environ["ASIDE_HOME"]
WORK = os.environ["ASIDE_WORK"]

CONFIG = """\
session: shop
processes:
  db:
    cmd: "echo db ready; sleep 60"
    ready: "db ready"
  api:
    cmd: "echo api up; sleep 60"
    ready: "api up"
    depends_on: [db]
"""


async def main():
    with open(os.path.join(WORK, "aside.yaml"), "w") as f:
        f.write(CONFIG)
    env = dict(os.environ, ASIDE_HOME=HOME)
    env.pop("ASIDE_OWNER", None)
    params = StdioServerParameters(command=BIN, args=["mcp", "--owner", "shop-agent"], env=env, cwd=WORK)
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            progress = []

            async def on_progress(value, total, message):
                progress.append(message)

            r = await session.call_tool("up", {}, read_timeout_seconds=60, progress_callback=on_progress)
            s = r.structured_content
            check(not r.is_error and s["project"] == "shop" and s["failed"] == [], "up brings the project up", text_of(r))
            states = {p["name"]: p["state"] for p in s["processes"]}
            check(states == {"db": "ready", "api": "ready"}, "each process ready", json.dumps(s))
            check(any("api" in (m or "") for m in progress) and any("db" in (m or "") for m in progress),
                  "progress notifications as it comes up", json.dumps(progress))

            r = await session.call_tool("list", {})
            names = sorted(p["name"] for p in r.structured_content["processes"])
            check(names == ["api", "db"], "list shows the project's processes", json.dumps(names))
            check(all(p["owner"] == "shop-agent" for p in r.structured_content["processes"]), "owned by the agent")

            r = await session.call_tool("up", {"only": "db"}, read_timeout_seconds=60)
            check(not r.is_error and [p["name"] for p in r.structured_content["processes"]] == ["db"],
                  "up again with only (as a string) leaves it running", text_of(r))

            r = await session.call_tool("down", {})
            s = r.structured_content
            check(not r.is_error and sorted(p["name"] for p in s["stopped"]) == ["api", "db"], "down stops it", text_of(r))

            # The policy judges what up starts, as it judges run.
            with open(os.path.join(HOME, "policy.json"), "w") as f:
                json.dump({"allow": ["sleep *"]}, f)
            r = await session.call_tool("up", {}, read_timeout_seconds=60)
            check(r.is_error and "no allow rule matches" in text_of(r), "up of commands the policy refuses is refused, saying why", text_of(r))
            r = await session.call_tool("list", {})
            check(r.structured_content["processes"] == [] or all(
                p["status"] == "stopped" for p in r.structured_content["processes"]), "and starts nothing", text_of(r))
            os.remove(os.path.join(HOME, "policy.json"))

            r = await session.call_tool("up", {"config": "missing.yaml"})
            check(r.is_error and "missing.yaml" in text_of(r), "a missing config file is a clear error", text_of(r))
    print("all project checks passed")


anyio.run(main)
