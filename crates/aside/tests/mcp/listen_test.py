"""Resource subscriptions (2026-07-28 `subscriptions/listen`) through the official Python SDK.

Run by tests/mcp.rs with ASIDE_BIN, ASIDE_HOME and ASIDE_WORK set.
"""

import os

import anyio
from mcp import Client, StdioServerParameters

from common import check

BIN = os.environ["ASIDE_BIN"]
WORK = os.environ["ASIDE_WORK"]




async def main():
    params = StdioServerParameters(command=BIN, args=["mcp", "--owner", "listener"], env=dict(os.environ), cwd=WORK)
    async with Client(params) as client:
        gate = os.path.join(WORK, "listen-gate")
        r = await client.call_tool("run", {
            "command": f"echo one; while [ ! -e {gate} ]; do sleep 0.02; done; echo two",
            "run_in_background": True,
        })
        uri = f"aside://runs/{r.structured_content['id']}"
        async with client.listen(resource_subscriptions=[uri]) as sub:
            honored = sub.honored
            check(uri in (honored.resource_subscriptions or []), "the subscription is honored", repr(honored))
            open(gate, "w").close()
            got = []
            with anyio.fail_after(20):
                async for event in sub:
                    got.append(event)
                    body = await client.read_resource(uri)
                    if '"complete":true' in body.contents[0].text:
                        break
            check(len(got) >= 1, "resources/updated arrives as the process writes and ends", repr(got))
            check('"status":"completed"' in body.contents[0].text, "re-reading shows the new state", body.contents[0].text)
    print("all listen checks passed")


anyio.run(main)
