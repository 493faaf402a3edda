"""Helpers for tests that run real peer processes on loopback."""

from __future__ import annotations

import trio

from arcnet.cli.client import CliError, Client
from arcnet.cli.localmesh import LOCAL_GOSSIP

# Fast gossip for tests: the same knobs the demo uses.
FAST_GOSSIP = LOCAL_GOSSIP


async def wait_for(predicate, timeout_s: float, interval_s: float = 0.2, what: str = "condition"):
    """Poll an async predicate until it returns a truthy value; fail after ``timeout_s``."""
    last = None
    with trio.move_on_after(timeout_s):
        while True:
            try:
                last = await predicate()
            except CliError as exc:
                last = exc
            else:
                if last:
                    return last
            await trio.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; last: {last!r}")


async def member_states(client: Client, addr: str) -> dict[str, str]:
    res = await client.call(addr, "peers", timeout_s=5)
    return {m["peer_id"]: m["state"] for m in res["members"]}
