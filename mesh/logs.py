"""Logging for the daemon and the CLI: human-readable lines or JSON, one per record.

Bad input is logged one line per kind per interval (:class:`RateLimitedLog`):
a peer flooding garbage must not flood the log too; the counters keep the
exact numbers.
"""

from __future__ import annotations

import json
import logging
import sys
import time

__all__ = ["RateLimitedLog", "setup_logging"]


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            out.update(extra)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(level: str = "info", fmt: str = "text", stream=None) -> None:
    """Configure the root logger once (``fmt`` is "text" or "json")."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-5s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # py-libp2p turns propagation off on import; we want its records in our logs,
    # but only its warnings: its info level narrates every stream.
    align_libp2p_logging()


def align_libp2p_logging() -> None:
    """Route libp2p's records into ours, at WARNING or above (call again after ``import libp2p``,
    which resets its logger)."""
    lp = logging.getLogger("libp2p")
    lp.propagate = True
    lp.setLevel(max(logging.WARNING, logging.getLogger().level))
    # every failed dial is logged at ERROR by libp2p's TCP transport; our transport
    # already reports unreachable peers (rate-limited), so keep only its criticals
    logging.getLogger("libp2p.transport.tcp.tcp").setLevel(logging.CRITICAL)


class RateLimitedLog:
    """Log at most one line per ``key`` per ``interval_s`` seconds, with a count of the rest."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0):
        self.logger = logger
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        n = self._suppressed.pop(key, 0)
        self._last[key] = now
        if n:
            msg = msg + f" (and {n} more like it)"
        self.logger.warning(msg, *args)
