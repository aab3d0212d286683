"""Median round trip of an MCP `run` in the background, through the official Python SDK.

Usage: python mcp_roundtrip.py ASIDE_BIN N  (ASIDE_HOME set); prints the median in ms.
"""

import os
import statistics
import sys
import time

import anyio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


async def main():
    bin_, n = sys.argv[1], int(sys.argv[2])
    params = StdioServerParameters(command=bin_, args=["mcp", "--owner", "bench"], env=dict(os.environ))
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            samples = []
            for i in range(n + 5):
                t0 = time.perf_counter()
                await session.call_tool("run", {"command": "true", "run_in_background": True})
                if i >= 5:  # warm-up
                    samples.append((time.perf_counter() - t0) * 1000)
            print(f"{statistics.median(samples):.2f}")


anyio.run(main)
