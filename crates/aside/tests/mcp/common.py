"""Helpers shared by the MCP client scripts."""

import sys


def check(cond, what, detail=""):
    """Exits non-zero (failing the Rust test that runs the script) unless `cond` holds."""
    if not cond:
        print(f"FAILED: {what}\n{detail}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


def text_of(result):
    """The text content blocks of a tool result, joined."""
    return "\n".join(c.text for c in result.content if getattr(c, "type", "") == "text")
