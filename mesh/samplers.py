"""Telemetry samplers for real sites: readings from a file or from a command.

The state core (``arcnet.gossip.state``) calls ``sampler(now) -> readings``
every second and must never block or do I/O, so a sampler here is split in
two:

* :meth:`refresh` does the I/O -- reads the file, or runs the command with a
  timeout -- parses and validates the readings, and caches them. The daemon
  calls it from a worker thread (``trio.to_thread.run_sync``) on its own
  schedule (``refresh_interval_s``, default 5 s; :meth:`due` says when).
* calling the sampler (``sampler(now)``) only returns a copy of the cached
  readings: pure, instant, safe inside a core.

Formats: a JSON object, a TOML table (``.toml`` files), or ``key=value``
lines (what a shell script prints most easily); by default the format is
guessed from the text. Values are numbers, booleans, strings or lists of
strings; names are the state core's reading names (``FIELDS`` in
``arcnet.gossip.state``: ``solar_kw``, ``battery_soc_fraction``,
``gpu_slots_free``, ``artifacts``...). A nested table ``[energy]`` or
``{"energy": {...}}`` is flattened (its keys are used as they are).

Bad input never crashes the peer: a file that is missing, unreadable or
malformed, a command that fails or times out, a value of the wrong type --
each is counted (:meth:`statistics`), logged once per kind through the
optional ``log`` callback, and the last good readings stay in use.
Readings older than ``stale_after_s`` are dropped (the state core then
publishes its defaults, which a leader's eligibility check treats as
unhealthy) so a dead telemetry pipeline is visible in the mesh.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import time
import tomllib
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

__all__ = ["CommandSampler", "FileSampler", "SamplerError", "StaticSampler", "parse_readings"]

READINGS_MAX = 256  # keys per reading set
TEXT_MAX_BYTES = 256 * 1024
STRING_MAX = 256
LIST_MAX = 4096


class SamplerError(ValueError):
    """Readings that cannot be used; the message says what to fix."""


def _coerce(name: str, value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SamplerError(f"{name}: not a finite number")
        return value
    if isinstance(value, str):
        if len(value) > STRING_MAX:
            raise SamplerError(f"{name}: string longer than {STRING_MAX}")
        return value
    if isinstance(value, (list, tuple)):
        if len(value) > LIST_MAX:
            raise SamplerError(f"{name}: more than {LIST_MAX} items")
        out = []
        for v in value:
            if not isinstance(v, str) or len(v) > STRING_MAX:
                raise SamplerError(f"{name}: lists hold strings of at most {STRING_MAX} chars")
            out.append(v)
        return out
    raise SamplerError(f"{name}: unsupported value type {type(value).__name__}")


def _scalar(text: str) -> Any:
    t = text.strip()
    low = t.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    try:
        return int(t)
    except ValueError:
        pass
    try:
        return float(t)
    except ValueError:
        pass
    if "," in t:
        return [x.strip() for x in t.split(",") if x.strip()]
    return t


def parse_readings(text: str, fmt: str = "auto") -> dict[str, Any]:
    """Parse readings text (``json``, ``toml``, ``kv`` or ``auto``) into a flat dict.

    Raises :class:`SamplerError` on anything unusable.
    """
    if len(text.encode()) > TEXT_MAX_BYTES:
        raise SamplerError(f"readings larger than {TEXT_MAX_BYTES} bytes")
    stripped = text.lstrip()
    if fmt == "auto":
        if stripped.startswith("{"):
            fmt = "json"
        elif any(line.strip().startswith("[") for line in text.splitlines()) or " = " in text:
            fmt = "toml"
        else:
            fmt = "kv"
    raw: Any
    if fmt == "json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SamplerError(f"not valid JSON: {exc.msg} at line {exc.lineno}") from None
    elif fmt == "toml":
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SamplerError(f"not valid TOML: {exc}") from None
    elif fmt == "kv":
        raw = {}
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if "=" not in line:
                raise SamplerError(f"line {n}: expected key=value")
            k, v = line.split("=", 1)
            raw[k.strip()] = _scalar(v)
    else:
        raise SamplerError(f"unknown format {fmt!r} (json, toml, kv or auto)")
    if not isinstance(raw, dict):
        raise SamplerError("readings must be an object/table of name = value")
    flat: dict[str, Any] = {}
    for k, v in raw.items():
        if isinstance(v, dict):  # one level of grouping: [energy] solar_kw = ...
            for k2, v2 in v.items():
                flat[str(k2)] = v2
        else:
            flat[str(k)] = v
    if len(flat) > READINGS_MAX:
        raise SamplerError(f"more than {READINGS_MAX} readings")
    out = {}
    for k, v in flat.items():
        if not k or len(k) > 64:
            raise SamplerError(f"reading name {k[:70]!r} must be 1-64 chars")
        out[k] = _coerce(k, v)
    return out


class _CachedSampler:
    """Shared part: the cache, staleness, counters and the pure ``__call__``."""

    def __init__(
        self,
        *,
        refresh_interval_s: float = 5.0,
        stale_after_s: float = 120.0,
        defaults: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        log: Callable[[str], None] | None = None,
    ):
        if refresh_interval_s <= 0 or stale_after_s <= 0:
            raise ValueError("refresh_interval_s and stale_after_s must be positive")
        self.refresh_interval_s = refresh_interval_s
        self.stale_after_s = stale_after_s
        self.defaults = dict(defaults or {})
        self.clock = clock
        self.log = log
        self._readings: dict[str, Any] = {}
        self._read_at: float | None = None
        self._logged: set[str] = set()
        self.stats = {"refreshes": 0, "errors": 0, "stale": 0}
        self.last_error = ""

    def __call__(self, now: float) -> dict[str, Any]:
        """The cached readings (a copy; never blocks). ``now`` is the core's clock and unused."""
        out = dict(self.defaults)
        if self._read_at is not None and self.clock() - self._read_at <= self.stale_after_s:
            out.update(self._readings)
        elif self._read_at is not None:
            self.stats["stale"] += 1
        return out

    def due(self) -> bool:
        """True if :meth:`refresh` should run now."""
        return self._read_at is None or self.clock() - self._read_at >= self.refresh_interval_s

    def _fail(self, kind: str, message: str) -> bool:
        self.stats["errors"] += 1
        self.last_error = message
        if self.log is not None and kind not in self._logged:
            self._logged.add(kind)
            self.log(message)
        return False

    def _accept(self, readings: dict[str, Any]) -> bool:
        self._readings = readings
        self._read_at = self.clock()
        self.stats["refreshes"] += 1
        return True

    def statistics(self) -> dict[str, float]:
        s: dict[str, float] = dict(self.stats)
        s["age_s"] = -1.0 if self._read_at is None else self.clock() - self._read_at
        s["readings"] = len(self._readings)
        return s


class FileSampler(_CachedSampler):
    """Readings from a file another program keeps current (JSON, TOML or key=value)."""

    def __init__(self, path: str | os.PathLike[str], fmt: str = "auto", **kw: Any):
        super().__init__(**kw)
        self.path = Path(path)
        self.fmt = "toml" if fmt == "auto" and self.path.suffix == ".toml" else ("json" if fmt == "auto" and self.path.suffix == ".json" else fmt)

    def refresh(self) -> bool:
        """Read and parse the file (I/O). True if new readings were cached."""
        try:
            data = self.path.read_bytes()[: TEXT_MAX_BYTES + 1]
        except OSError as exc:
            return self._fail("read", f"sampler file {self.path}: {exc.strerror or exc}; keeping the last readings")
        try:
            return self._accept(parse_readings(data.decode("utf-8", errors="replace"), self.fmt))
        except SamplerError as exc:
            return self._fail("parse", f"sampler file {self.path}: {exc}; keeping the last readings")


class CommandSampler(_CachedSampler):
    """Readings printed on stdout by a command (JSON, TOML or key=value lines)."""

    def __init__(self, argv: Sequence[str] | str, fmt: str = "auto", timeout_s: float = 5.0, **kw: Any):
        super().__init__(**kw)
        self.argv = shlex.split(argv) if isinstance(argv, str) else list(argv)
        if not self.argv:
            raise ValueError("empty sampler command")
        self.fmt = fmt
        self.timeout_s = timeout_s

    def refresh(self) -> bool:
        """Run the command (I/O, up to ``timeout_s``). True if new readings were cached."""
        try:
            proc = subprocess.run(self.argv, capture_output=True, timeout=self.timeout_s, check=False, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return self._fail("timeout", f"sampler command {self.argv[0]} took over {self.timeout_s} s; keeping the last readings")
        except OSError as exc:
            return self._fail("exec", f"sampler command {self.argv[0]}: {exc.strerror or exc}; keeping the last readings")
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
            return self._fail("status", f"sampler command {self.argv[0]} exited {proc.returncode}: {err[0][:200]}")
        try:
            return self._accept(parse_readings(proc.stdout[: TEXT_MAX_BYTES + 1].decode("utf-8", errors="replace"), self.fmt))
        except SamplerError as exc:
            return self._fail("parse", f"sampler command {self.argv[0]}: {exc}; keeping the last readings")


class StaticSampler:
    """Fixed readings (tests, sites without telemetry)."""

    def __init__(self, readings: Mapping[str, Any] | None = None):
        self.readings = {k: _coerce(k, v) for k, v in (readings or {}).items()}

    def __call__(self, now: float) -> dict[str, Any]:
        return dict(self.readings)

    def refresh(self) -> bool:
        return True

    def due(self) -> bool:
        return False

    def statistics(self) -> dict[str, float]:
        return {"readings": len(self.readings)}
