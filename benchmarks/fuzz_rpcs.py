"""Fuzz every RouterService RPC of a real ``banditroute serve`` process with hostile requests.

Starts ``python -m banditroute.cli serve`` on 127.0.0.1 (port 0, discovered from its
``listening`` line) with API keys required, three tenants (one restricted to three models and
two objectives, one with a budget, one plain) and an admin key, then sends ``--calls`` calls
from ``--threads`` client threads, at most ``--max-seconds`` long: Route, Feedback, ListModels,
GetStats, ResetModelHealth, ReloadConfig, PromotePolicy and RollbackPolicy built from a seeded
generator of random and hostile
values (strings from empty to a few megabytes of arbitrary code points, control characters and
injection-looking text; NaN, infinities, negative, subnormal and huge numbers; int64 extremes;
unknown enum values; random and foreign decision ids; lists and tags past their limits; random,
oversized and binary metadata), valid calls with a tenant's or the admin's key mixed in
(feedback for real decisions, some repeated or for a fallback model), raw bytes that are not a
valid request message sent through a generic channel call, and ReloadConfig after the file was
rewritten with a valid change or one the server must refuse (:data:`CONFIG_VARIANTS`).

Counts every status code per RPC; INTERNAL and UNKNOWN (the server's answer to a bug) and a
server that exits are failures, and so is an OK answer that breaks an invariant (a Route whose
model is excluded, not a candidate, outside the tenant's allow-list, or whose ranking is not a
distribution; a tenant reading another tenant's figures or giving feedback for its decision;
an infinite figure) and a canary string, an API key or the personal data of a prompt in the
server's own log. At the end the server must still answer Route and Feedback correctly; then
it gets SIGTERM (exit 0 expected), ``banditroute audit verify`` checks its log's hash chain,
and every acknowledged feedback must be in the log. Exit status 1 if anything failed.

    PYTHONPATH=src .venv/bin/python benchmarks/fuzz_rpcs.py --calls 100000 --seed 1 \\
        [--threads 4] [--max-seconds 3600] [--workers 1] [--json OUT] [--plot OUT.png]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from banditroute.config import load_settings
from banditroute.tenancy import hash_key
from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc

CALL_TIMEOUT_S = 60.0
"""Deadline of every call: only a hang (or a machine loaded far beyond the usual) exceeds it."""
CONNECTIONS = 3
"""TCP connections per client thread; each call takes one at random."""
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0
SERVICE = "/banditroute.v1.RouterService/"
RPCS = (
    "Route", "Feedback", "ListModels", "GetStats", "ResetModelHealth", "ReloadConfig",
    "PromotePolicy", "RollbackPolicy",
)  # fmt: skip
REQUESTS: dict[str, type[Message]] = {
    "Route": pb.RouteRequest,
    "Feedback": pb.FeedbackRequest,
    "ListModels": pb.ListModelsRequest,
    "GetStats": pb.GetStatsRequest,
    "ResetModelHealth": pb.ResetModelHealthRequest,
    "ReloadConfig": pb.ReloadConfigRequest,
    "PromotePolicy": pb.PromotePolicyRequest,
    "RollbackPolicy": pb.RollbackPolicyRequest,
}
MIX = (
    ("Route", 34),
    ("Feedback", 30),
    ("ListModels", 6),
    ("GetStats", 9),
    ("ResetModelHealth", 6),
    ("ReloadConfig", 3),
    ("PromotePolicy", 2),  # a well-formed one replays the whole log: rare
    ("RollbackPolicy", 2),
    ("raw", 12),
)
"""Relative weight of each kind of call (``raw``: undecodable bytes to any RPC)."""
FAILURES = ("INTERNAL", "UNKNOWN")
"""Statuses that mean the server hit a bug rather than refusing bad input."""

ACME_KEY, BETA_KEY, GAMMA_KEY, ADMIN_KEY = "fz-acme-key", "fz-beta-key", "fz-gamma-key", "fz-admin"
TENANT_KEYS = {"acme": ACME_KEY, "beta": BETA_KEY, "gamma": GAMMA_KEY}
MODELS = list(load_settings().catalog.ids)
PROMPTS = (
    "Name three rivers that flow through Germany.",
    "Write a SQL query that counts orders per customer.",
    "What is 17 squared minus 40? Show the arithmetic.",
    "Explique la photosynthèse en une phrase.",
    "Give a one-line summary of Moby-Dick.",
    "My email is jane.doe@example.com and my card is 4111 1111 1111 1111, can you help?",
)
CANARY = "fz-canary-5e1f"
"""Put in prompts, names, tags and metadata: the server's own log must never contain it."""
SPECIAL_TEXTS = (
    CANARY, f"Bearer {CANARY}", f"{CANARY}@example.com",
    "", " ", "\x00", "\x00" * 64, "\n\t\r", "\ufeff", "\u202e", "\u200b" * 50, "\U0010ffff",
    "é" * 3, "🦀" * 5, "a\u0301" * 40, "'; DROP TABLE decisions; --", "%s%n%x{0}{}",
    "../../../../etc/passwd", '{"decision_id": 1}', "Bearer ", "null", "NaN", "-inf",
    "balanced", "economy", "fast", "public", "internal", "pii", "secret", "code", "tools",
    "acme", "beta", "gamma", "default", "*", "\\", '"', "x" * 256, "x" * 257, "\u0000abc",
    "".join(chr(ord(c) + 0xFEE0) for c in "API_KEY=secret"),  # full-width
    "password=hunter2", "AKIAIOSFODNN7EXAMPLE",
)  # fmt: skip
EXTREME_FLOATS = (
    math.nan, math.inf, -math.inf, -0.0, 0.0, 5e-324, -5e-324, 1e-300, 1e10, 1e20, 1e300,
    1.7976931348623157e308, -1.7976931348623157e308, -1.0, 1.0000000000000002, 0.5, 2.0,
)  # fmt: skip
EXTREME_INTS = (0, 1, -1, 2**31 - 1, -(2**31), 2**53 + 1, 2**62, 2**63 - 1, -(2**63), 10**15)
BAD_UTF8 = (b"\xff\xfe\xfd", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"abc\x80")
"""Invalid UTF-8: stray bytes, a lone surrogate, an overlong '/', above U+10FFFF, a stray
continuation byte."""
CORRUPT_WIRE = (
    b"\x0a\x10abc", b"\x08\xff\xff", b"\x0e\x00", b"\x0f\x00", b"\x0c", b"\x0b\x08\x01",
    b"\x0a\xff\xff\xff\xff\x0f", b"\x0d\x00\x00", b"\x09\x00\x00\x00", b"\x00\x01",
)  # fmt: skip
"""Truncated lengths and varints, wire types 6 and 7, unbalanced groups, field number 0."""
PLAUSIBLE = {"quality": 1.0, "cost_usd": 0.01, "latency_ms": 5_000.0}
"""Upper ends of plausible feedback figures (drawn uniformly below them)."""
HEADER_KEY_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-_."
_ADDRESS = re.compile(r"\blistening\b.*\baddress=(\S+:\d+)")


# -- the server ------------------------------------------------------------------------------------


CONFIG_VARIANTS = (
    "base", "acme-other-models", "beta-rich", "gamma-removed", "invalid-toml", "restart-only",
    "unknown-objective", "empty",
)  # fmt: skip
"""What ReloadConfig may find in the file: the original, valid changes (acme allowed other
models, beta's budget raised, tenant gamma gone while its decisions are pending) and files it
must refuse with the running settings kept (broken TOML, a restart-only key changed, a tenant
allowed an objective that does not exist, an empty file: no tenants, no keys)."""


def config_text(workdir: Path, log_path: Path, variant: str = "base") -> str:
    """The server's TOML: keys required, three tenants, an admin key, a one-hour reward window;
    ``variant`` (one of :data:`CONFIG_VARIANTS`) changes it."""
    if variant == "empty":
        return ""
    acme_models = MODELS[3:6] if variant == "acme-other-models" else MODELS[:3]
    objectives = ["balanced", "economy"] + (
        ["nonexistent"] if variant == "unknown-objective" else []
    )
    gamma = f'''
[[tenants]]
name = "gamma"
api_key_sha256 = ["{hash_key(GAMMA_KEY)}"]
'''
    text = f'''[server]
host = "127.0.0.1"
port = {1 if variant == "restart-only" else 0}
grace_s = 5.0

[auth]
required = true
admin_key_sha256 = ["{hash_key(ADMIN_KEY)}"]

[log]
path = "{log_path}"

[policy]
snapshot_path = "{workdir / "fuzz.snapshot"}"

[reward]
window_s = 3600.0

[[tenants]]
name = "acme"
api_key_sha256 = ["{hash_key(ACME_KEY)}"]
models = {json.dumps(acme_models)}
objectives = {json.dumps(objectives)}

[[tenants]]
name = "beta"
api_key_sha256 = ["{hash_key(BETA_KEY)}"]
[tenants.budget]
period = "day"
limit_usd = {50.0 if variant == "beta-rich" else 5.0}
target_usd_per_request = 0.001
{"" if variant == "gamma-removed" else gamma}'''
    return text + ("\n[[tenants]\nname = \n" if variant == "invalid-toml" else "")


@dataclass
class ConfigFile:
    """The server's configuration file, rewritten atomically (a reload never reads half a
    file) with one of :data:`CONFIG_VARIANTS`."""

    path: Path
    log_path: Path
    lock: threading.Lock = field(default_factory=threading.Lock)

    def write(self, variant: str = "base") -> None:
        with self.lock:
            partial = self.path.with_suffix(".partial")
            partial.write_text(config_text(self.path.parent, self.log_path, variant), "utf-8")
            partial.replace(self.path)


@dataclass
class Server:
    """A ``banditroute serve`` subprocess, its stderr file and its address."""

    process: subprocess.Popen[bytes]
    stderr_path: Path
    address: str

    def text(self) -> str:
        return self.stderr_path.read_text("utf-8", errors="replace")

    def crashed(self) -> bool:
        return self.process.poll() is not None


def start_server(workdir: Path, config: Path, log_path: Path, workers: int) -> Server:
    """Start the server and wait for its address (its ``listening`` line on stderr)."""
    stderr_path = workdir / "serve.stderr"
    command = [
        sys.executable, "-m", "banditroute.cli", "serve",
        "--config", str(config), "--port", "0", "--log", str(log_path),
        "--workers", str(workers),
    ]  # fmt: skip
    with stderr_path.open("wb") as sink:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=sink
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        text = stderr_path.read_text("utf-8", errors="replace")
        match = _ADDRESS.search(text)
        if match:
            return Server(process, stderr_path, match.group(1))
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    process.wait()
    raise RuntimeError(f"the server did not start:\n{stderr_path.read_text(errors='replace')}")


# -- hostile values --------------------------------------------------------------------------------


class Hostile:
    """Random and hostile field values from one seeded generator (one per client thread)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def code_point(self) -> str:
        """Any code point but a surrogate (protobuf refuses to serialise those)."""
        rng = self.rng
        band = rng.random()
        if band < 0.5:
            return chr(rng.randint(0x20, 0x7E))
        if band < 0.6:
            return chr(rng.randint(0, 0x1F))
        while True:
            point = rng.randint(0x80, 0x10FFFF) if band < 0.9 else rng.randint(0x80, 0x2FFF)
            if not 0xD800 <= point <= 0xDFFF:
                return chr(point)

    def text(self, short: bool = False) -> str:
        """Mostly short random text; sometimes a special string; rarely tens of kilobytes or
        (unless ``short``) about a megabyte, some of it past max_prompt_chars."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.25:
            return rng.choice(SPECIAL_TEXTS)
        if roll < 0.28:
            return CANARY + "".join(self.code_point() for _ in range(rng.randint(0, 20)))
        if roll < 0.85 or short:
            return "".join(self.code_point() for _ in range(rng.randint(0, 60)))
        if roll < 0.985:
            unit = "".join(self.code_point() for _ in range(rng.randint(1, 8)))
            return unit * rng.randint(10, 8_000)
        unit = "".join(self.code_point() for _ in range(rng.randint(1, 4)))
        return unit * rng.randint(100_000, 1_000_000 // len(unit))

    def name(self) -> str:
        """A catalogue model, a near miss or random text."""
        roll = self.rng.random()
        if roll < 0.4:
            return self.rng.choice(MODELS)
        if roll < 0.55:
            return self.rng.choice(MODELS).upper() + self.rng.choice(["", " ", "\x00", "-x"])
        return self.text(short=self.chance(0.9))

    def names(self) -> list[str]:
        """A list of names: short, duplicated, or longer than max_listed."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.6:
            return [self.name() for _ in range(rng.randint(0, 6))]
        if roll < 0.8:
            return [rng.choice(MODELS) for _ in range(rng.randint(1, 40))]
        if roll < 0.95:
            return [rng.choice(MODELS)] * rng.choice([999, 1000, 1001, 5000])
        return (MODELS * (10_000 // len(MODELS) + 1))[: rng.choice([1001, 10_000])]

    def real(self) -> float:
        rng = self.rng
        roll = rng.random()
        if roll < 0.5:
            return rng.choice(EXTREME_FLOATS)
        if roll < 0.75:
            return float(struct.unpack("<d", rng.randbytes(8))[0])  # any bit pattern, NaNs too
        return rng.uniform(-1e6, 1e6)

    def whole(self) -> int:
        rng = self.rng
        if rng.random() < 0.6:
            return rng.choice(EXTREME_INTS)
        return rng.randint(-(2**63), 2**63 - 1)

    def enum(self) -> int:
        return self.rng.choice([0, 1, 2, 3, 4, 5, 6, 99, -1, 2**31 - 1, -(2**31)])

    def tags(self) -> dict[str, str]:
        rng = self.rng
        roll = rng.random()
        if roll < 0.6:
            return {self.text(short=True): self.text(short=True) for _ in range(rng.randint(0, 4))}
        if roll < 0.8:
            return {f"k{i}": "v" for i in range(rng.choice([64, 65, 200]))}
        return {"k" * rng.choice([128, 129, 5000]): "v" * rng.choice([1024, 1025, 50_000])}

    def metadata(self) -> list[tuple[str, str | bytes]]:
        """Odd metadata: wrong, malformed, oversized or binary keys, unknown headers."""
        rng = self.rng
        entries: list[tuple[str, str | bytes]] = []
        for _ in range(rng.randint(1, 4)):
            roll = rng.random()
            if roll < 0.3:
                value = rng.choice(
                    [
                        "".join(chr(rng.randint(0x20, 0x7E)) for _ in range(rng.randint(0, 80))),
                        f"Bearer {rng.choice([*TENANT_KEYS.values(), ADMIN_KEY])}",
                        f"bEaReR {ADMIN_KEY}", "Bearer ", "Bearer", "", ADMIN_KEY + " ", CANARY,
                        ACME_KEY.upper(),
                    ]
                )  # fmt: skip
                entries.append((rng.choice(["x-api-key", "authorization"]), value))
            elif roll < 0.5:
                key = rng.choice(["x-api-key-bin", "authorization-bin", "x-odd-bin"])
                entries.append((key, rng.randbytes(rng.randint(0, 300))))
            elif roll < 0.75:
                key = "x-" + "".join(
                    rng.choice(HEADER_KEY_CHARS) for _ in range(rng.randint(1, 40))
                )
                value = "".join(chr(rng.randint(0x20, 0x7E)) for _ in range(rng.randint(0, 200)))
                entries.append((key, value))
            elif roll < 0.9:
                entries.append(("x-" + "k" * rng.randint(1_000, 20_000), "v"))
            else:
                entries.append(("x-api-key", "a" * rng.randint(1_000, 20_000)))
        return entries

    def caller(self, tenant: str | None = None) -> list[tuple[str, str | bytes]]:
        """Usually a tenant's key (``tenant``'s if given), sometimes the admin's, none, or odd
        metadata."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.6:
            key = TENANT_KEYS[tenant] if tenant else rng.choice(list(TENANT_KEYS.values()))
            header = rng.choice([("x-api-key", key), ("authorization", f"Bearer {key}")])
            return [header]
        if roll < 0.7:
            return [("x-api-key", ADMIN_KEY)]
        if roll < 0.8:
            return []
        return self.metadata()


# -- requests --------------------------------------------------------------------------------------


@dataclass
class Decision:
    """A decision a tenant was given, for feedback later."""

    decision_id: str
    tenant: str
    fallbacks: tuple[str, ...]


class Requests:
    """Builds each kind of call from a :class:`Hostile` generator: mostly plausible fields with
    one or a few odd ones, so that the odd field gets past the others' validation."""

    def __init__(self, hostile: Hostile) -> None:
        self.h = hostile
        self.rng = hostile.rng

    def odd(self, p: float = 0.12) -> bool:
        return self.h.chance(p)

    def route(self) -> pb.RouteRequest:
        h, rng, odd = self.h, self.rng, self.odd
        request = pb.RouteRequest(
            prompt=h.text() if odd(0.3) else rng.choice(PROMPTS) + f" #{rng.randint(0, 10**6)}",
            candidate_models=h.names() if odd() else [],
            excluded_models=h.names() if odd() else [],
            request_id=self.request_id(),
            objective=h.text(short=True) if odd() else rng.choice(["", "balanced", "economy"]),
            tags=h.tags() if odd() else {},
            data_classification=(
                h.text(short=True) if odd() else rng.choice(["", "public", "internal", "pii"])
            ),
            required_capabilities=(
                h.names() if odd(0.05) else [rng.choice(["code", "json"])] if odd(0.1) else []
            ),
        )
        if odd(0.15):
            request.prompt = ""
            for _ in range(rng.choice([0, 1, 2, 4, 1001]) if odd(0.3) else rng.randint(1, 4)):
                role = h.text(short=True) if odd() else rng.choice(["user", "assistant", "system"])
                request.messages.add(role=role, content=h.text() if odd() else rng.choice(PROMPTS))
        for name in ("max_cost_usd", "max_latency_ms"):
            if odd():
                setattr(request, name, h.real())
        if odd():
            request.expected_output_tokens = h.whole()
        return request

    def request_id(self) -> str:
        """Usually none; else a fresh one, a random string or one of a few reused ones."""
        h, rng = self.h, self.rng
        roll = rng.random()
        if roll < 0.8:
            return ""
        if roll < 0.9:
            return rng.randbytes(8).hex()
        if roll < 0.95:
            return h.text(short=True)
        return rng.choice(["r1", "r2", "r3"])

    def feedback(self, decision: Decision | None) -> pb.FeedbackRequest:
        """Feedback for ``decision`` (a random id if None): plausible, or with odd fields."""
        h, rng, odd = self.h, self.rng, self.odd
        request = pb.FeedbackRequest(
            decision_id=decision.decision_id if decision else self.decision_id(),
            status=h.enum() if odd() else rng.choice([1, 1, 1, 2, 3, 4, 5]),
        )
        if decision and decision.fallbacks and rng.random() < 0.1:
            request.model = rng.choice(decision.fallbacks)
        elif odd(0.08):
            request.model = h.name()
        for name in ("quality", "cost_usd", "latency_ms"):
            if odd(0.15):
                setattr(request, name, h.real())
            elif rng.random() < 0.8:
                setattr(request, name, rng.random() * PLAUSIBLE[name])
        for name in ("input_tokens", "output_tokens"):
            if odd(0.1):
                setattr(request, name, h.whole())
            elif rng.random() < 0.3:
                setattr(request, name, rng.randint(0, 5_000))
        return request

    def decision_id(self) -> str:
        rng = self.rng
        roll = rng.random()
        if roll < 0.4:
            return rng.randbytes(16).hex()
        if roll < 0.6:
            return rng.choice(["", "0" * 32, "f" * 32, "00000000-0000-0000-0000-000000000000"])
        return self.h.text(short=self.h.chance(0.9))

    def get_stats(self) -> pb.GetStatsRequest:
        h, rng, odd = self.h, self.rng, self.odd
        tenant = h.text(short=True) if odd(0.3) else rng.choice(["", "", "acme", "beta", "nobody"])
        request = pb.GetStatsRequest(tenant=tenant)
        if rng.random() < 0.5:
            seconds = h.whole() if odd(0.4) else int(time.time()) - rng.randint(0, 86_400)
            nanos = rng.choice([0, 999_999_999, 10**9, -1, 2**31 - 1, -(2**31)]) if odd() else 0
            request.since.seconds, request.since.nanos = seconds, nanos
        return request

    def promote(self) -> pb.PromotePolicyRequest:
        """A PromotePolicyRequest: a plausible or hostile candidate spec, margin, tolerance
        and objective."""
        h, rng, odd = self.h, self.rng, self.odd
        plausible = ["uniform", f"fixed:{rng.choice(MODELS)}", "linucb:alpha=0.3", "logged",
                     "shadow:none", "snapshot:/etc/passwd"]  # fmt: skip
        return pb.PromotePolicyRequest(
            candidate=h.text(short=True) if odd(0.4) else rng.choice(plausible),
            margin=h.real() if odd() else rng.choice([0.0, 0.01, 0.5]),
            tolerance=h.real() if odd() else rng.choice([0.0, 0.02, 0.5]),
            objective=h.text(short=True) if odd() else rng.choice(["", "balanced", "economy"]),
        )

    def raw(self) -> tuple[str, bytes]:
        """A method and bytes that are mostly not a valid request message for it."""
        h, rng = self.h, self.rng
        rpc = rng.choice(RPCS)
        roll = rng.random()
        if roll < 0.25:
            data = rng.randbytes(rng.randint(0, 600))
        elif roll < 0.4:
            data = rng.choice(CORRUPT_WIRE)
        elif roll < 0.6:
            number = rng.randint(1, 15)
            payload = rng.choice(BAD_UTF8)
            data = bytes([number << 3 | 2, len(payload)]) + payload
        else:
            valid = {
                "Route": self.route,
                "Feedback": lambda: self.feedback(None),
                "GetStats": self.get_stats,
                "ResetModelHealth": lambda: pb.ResetModelHealthRequest(model=h.name()),
                "PromotePolicy": self.promote,
            }
            build = valid.get(rpc, self.route)
            whole = build().SerializeToString()
            if roll < 0.8:
                data = whole[: rng.randint(0, max(0, len(whole) - 1))]  # truncated
            else:
                flipped = bytearray(whole)
                for _ in range(rng.randint(1, 4)):
                    if flipped:
                        flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
                data = bytes(flipped)
        return rpc, data


# -- the clients -----------------------------------------------------------------------------------


@dataclass
class Tally:
    """What came back, shared by the client threads."""

    codes: dict[str, Counter[str]] = field(default_factory=dict)
    acknowledged: Counter[str] = field(default_factory=Counter)
    """Feedback answered OK, per decision id."""
    failures: list[str] = field(default_factory=list)
    """The first INTERNAL/UNKNOWN calls: RPC, status, details (truncated)."""
    examples: dict[str, dict[str, str]] = field(default_factory=dict)
    """The details of the first answer of each status, per RPC (truncated)."""
    violations: Counter[str] = field(default_factory=Counter)
    """Answers OK but wrong (see :func:`route_violations` and :func:`non_finite`), per RPC."""
    violation_examples: list[str] = field(default_factory=list)
    script_errors: list[str] = field(default_factory=list)
    """Exceptions in the client threads themselves (the run is then void)."""
    client_refused: int = 0
    """Calls the gRPC client refused to send (it checks metadata itself)."""
    calls: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, rpc: str, code: str, details: str) -> None:
        with self.lock:
            self.codes.setdefault(rpc, Counter())[code] += 1
            self.examples.setdefault(rpc, {}).setdefault(code, details[:200])
            if code in FAILURES and len(self.failures) < 50:
                self.failures.append(f"{rpc} -> {code}: {details[:300]}")

    def violate(self, rpc: str, problems: list[str]) -> None:
        """Count an OK answer that breaks an invariant (``problems`` empty: it does not)."""
        if problems:
            with self.lock:
                self.violations[rpc] += 1
                if len(self.violation_examples) < 50:
                    self.violation_examples.append(f"{rpc}: {'; '.join(problems)[:300]}")


def caller_of(metadata: Sequence[tuple[str, str | bytes]]) -> str | None:
    """The tenant (or "admin") whose key is the call's only metadata, else None."""
    if len(metadata) != 1:
        return None
    header, value = metadata[0]
    keys = {**TENANT_KEYS, "admin": ADMIN_KEY}
    for name, key in keys.items():
        if (header, value) in (("x-api-key", key), ("authorization", f"Bearer {key}")):
            return name
    return None


def route_violations(
    request: pb.RouteRequest, response: pb.RouteResponse, tenant: str | None
) -> list[str]:
    """What is wrong with a Route answered OK: the model must be in the catalogue, the
    candidates, the tenant's allow-list (acme: its first or its reloaded three) and the
    ranking, and not excluded; the ranking's probabilities in [0, 1], most probable first,
    summing to 1, the chosen one's equal to ``probability``; fallbacks ranked, not the model."""
    problems: list[str] = []
    ranking = {entry.model: entry.probability for entry in response.ranking}
    probabilities = [entry.probability for entry in response.ranking]
    checks = (
        (bool(response.decision_id), "no decision id"),
        (response.model in MODELS, "model not in the catalogue"),
        (not request.candidate_models or response.model in request.candidate_models,
         "model not among candidate_models"),
        (response.model not in request.excluded_models, "model excluded"),
        (tenant != "acme" or response.model in MODELS[:6], "model not allowed for acme"),
        (response.model in ranking, "model not ranked"),
        (all(0.0 <= p <= 1.0 for p in probabilities), "probability outside [0, 1]"),
        (abs(math.fsum(probabilities) - 1.0) < 1e-6, "ranking does not sum to 1"),
        (probabilities == sorted(probabilities, reverse=True), "ranking not most probable first"),
        (math.isclose(ranking.get(response.model, -1.0), response.probability, abs_tol=1e-9),
         "probability is not the model's in the ranking"),
        (set(response.fallback_models) <= set(ranking) - {response.model},
         "fallback not ranked, or the model itself"),
    )  # fmt: skip
    problems.extend(message for ok, message in checks if not ok)
    return problems + non_finite(response)


NULLABLE = frozenset(
    {
        "usage.mean_quality", "usage.latency_p50_ms", "usage.latency_p95_ms", "usage.error_rate",
        "health.latency_p50_ms", "health.latency_p95_ms",
    }
)  # fmt: skip
"""GetStats figures where NaN means "no value" (nothing reported yet), as the proto says."""


def non_finite(message: Message, path: str = "") -> list[str]:
    """The double fields of ``message`` (nested ones included) that are infinite, or NaN
    where NaN does not mean "no value" (:data:`NULLABLE`)."""
    found: list[str] = []
    for descriptor, value in message.ListFields():
        name = f"{path}{descriptor.name}"
        single = isinstance(value, str | bytes | Message) or not hasattr(value, "__len__")
        values = [value] if single else value
        for item in values:
            if isinstance(item, Message):
                found += non_finite(item, name + ".")
            elif isinstance(item, float) and not math.isfinite(item):
                found += [] if math.isnan(item) and name in NULLABLE else [f"{name} = {item}"]
    return found


def stats_violations(stats: pb.GetStatsResponse, caller: str | None) -> list[str]:
    """What is wrong with a GetStats answered OK: a tenant's key reads its own usage and
    budget only; no figure is infinite, or NaN where NaN does not mean "no value"."""
    problems = non_finite(stats)
    if caller in TENANT_KEYS:
        others = {u.tenant for u in stats.usage} | {b.tenant for b in stats.budgets}
        # "" is a row summed over tenants (per model, or in total): of the caller's alone.
        problems += [f"tenant {caller} read {name}'s figures" for name in others - {caller, ""}]
    return problems


class Client:
    """One client thread: its own connections, generator and recent decisions."""

    def __init__(
        self, address: str, seed: int, index: int, tally: Tally, config: ConfigFile
    ) -> None:
        self.config = config
        # Each channel its own TCP connection (not gRPC's shared subchannel), so that a
        # --workers server spreads them over its processes and feedback is forwarded.
        options = [
            ("grpc.max_send_message_length", 64 << 20),
            ("grpc.use_local_subchannel_pool", 1),
        ]
        self.channels = [
            grpc.insecure_channel(address, options=options) for _ in range(CONNECTIONS)
        ]
        self.stubs = [pb_grpc.RouterServiceStub(channel) for channel in self.channels]
        self.raw = [
            {
                rpc: channel.unary_unary(
                    SERVICE + rpc, request_serializer=None, response_deserializer=None
                )
                for rpc in RPCS
            }
            for channel in self.channels
        ]
        self.hostile = Hostile(random.Random(seed * 1_000 + index))
        self.requests = Requests(self.hostile)
        self.tally = tally
        self.decisions: deque[Decision] = deque(maxlen=300)

    def call(
        self, rpc: str, request: Any, metadata: Sequence[tuple[str, str | bytes]], raw: bool = False
    ) -> Any:
        """Make one call over one of the connections and count its status; the response, or
        None."""
        connection = self.hostile.rng.randrange(CONNECTIONS)
        method = self.raw[connection][rpc] if raw else getattr(self.stubs[connection], rpc)
        label = f"{rpc} (raw)" if raw else rpc
        try:
            response = method(request, metadata=tuple(metadata), timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as error:  # every RpcError a call raises is also a grpc.Call
            self.tally.record(label, error.code().name, error.details() or "")
            return None
        except (ValueError, TypeError):  # metadata the client itself will not send
            with self.tally.lock:
                self.tally.client_refused += 1
            return None
        self.tally.record(label, "OK", "")
        return response

    def close(self) -> None:
        for channel in self.channels:
            channel.close()

    def route(self) -> None:
        tenant = self.hostile.rng.choice(list(TENANT_KEYS))
        plain = self.hostile.chance(0.4)  # a plausible request with the tenant's own key
        if plain:
            request = pb.RouteRequest(prompt=self.hostile.rng.choice(PROMPTS))
            metadata = [("x-api-key", TENANT_KEYS[tenant])]
        else:
            request, metadata = self.requests.route(), self.hostile.caller(tenant)
        response = self.call("Route", request, metadata)
        if response is None:
            return
        own = caller_of(metadata) == tenant
        self.tally.violate("Route", route_violations(request, response, tenant if own else None))
        if own:
            self.decisions.append(
                Decision(response.decision_id, tenant, tuple(response.fallback_models))
            )

    def feedback(self) -> None:
        rng = self.hostile.rng
        roll = rng.random()
        decision = rng.choice(self.decisions) if self.decisions and roll < 0.85 else None
        request = self.requests.feedback(decision)
        if decision is None:
            metadata = self.hostile.caller()
        elif roll < 0.7:
            metadata = [("x-api-key", TENANT_KEYS[decision.tenant])]  # the decision's tenant
        else:
            metadata = self.hostile.caller()  # maybe another tenant, the admin, nobody
        response = self.call("Feedback", request, metadata)
        if response is not None:
            with self.tally.lock:
                self.tally.acknowledged[request.decision_id] += 1
            problems = non_finite(response)
            if response.disposition == pb.FEEDBACK_DISPOSITION_UNSPECIFIED:
                problems.append("disposition unspecified")
            caller = caller_of(metadata)
            if decision and caller in TENANT_KEYS and caller != decision.tenant:
                problems.append(f"tenant {caller} gave feedback for {decision.tenant}'s decision")
            self.tally.violate("Feedback", problems)

    def one(self) -> None:
        """One call of a kind drawn from :data:`MIX`."""
        rng = self.hostile.rng
        kind = rng.choices([k for k, _ in MIX], weights=[w for _, w in MIX])[0]
        if kind == "Route":
            self.route()
        elif kind == "Feedback":
            self.feedback()
        elif kind == "ListModels":
            self.call("ListModels", pb.ListModelsRequest(), self.hostile.caller())
        elif kind == "GetStats":
            metadata = self.admin_or_caller()
            stats = self.call("GetStats", self.requests.get_stats(), metadata)
            if stats is not None:
                self.tally.violate("GetStats", stats_violations(stats, caller_of(metadata)))
        elif kind == "ResetModelHealth":
            request = pb.ResetModelHealthRequest(model=self.hostile.name())
            self.call("ResetModelHealth", request, self.admin_or_caller())
        elif kind == "ReloadConfig":
            if self.hostile.chance(0.3):
                self.config.write(self.hostile.rng.choice(CONFIG_VARIANTS))
            self.call("ReloadConfig", pb.ReloadConfigRequest(), self.admin_or_caller())
        elif kind == "PromotePolicy":
            self.call("PromotePolicy", self.requests.promote(), self.admin_or_caller())
        elif kind == "RollbackPolicy":
            self.call("RollbackPolicy", pb.RollbackPolicyRequest(), self.admin_or_caller())
        else:
            rpc, data = self.requests.raw()
            self.call(rpc, data, self.admin_or_caller(), raw=True)

    def admin_or_caller(self) -> list[tuple[str, str | bytes]]:
        """The admin key half the time (so admin-only paths run), else any caller."""
        if self.hostile.chance(0.5):
            return [("authorization", f"Bearer {ADMIN_KEY}")]
        return self.hostile.caller()


def fuzz(
    server: Server, tally: Tally, config: ConfigFile, *, calls: int, seed: int, threads: int,
    max_seconds: float,
) -> bool:  # fmt: skip
    """Run ``calls`` calls over ``threads`` clients, stopping early at ``max_seconds`` or when
    the server exits; True if the server exited."""
    clients = [Client(server.address, seed, index, tally, config) for index in range(threads)]
    stop = threading.Event()
    deadline = time.monotonic() + max_seconds
    claimed = iter(range(calls))
    claim_lock = threading.Lock()

    def run(client: Client) -> None:
        while not stop.is_set():
            with claim_lock:
                if next(claimed, None) is None:
                    return
            if time.monotonic() > deadline:
                stop.set()
                return
            try:
                client.one()
            except Exception:  # a bug of this script: stop, and report it
                with tally.lock:
                    tally.script_errors.append(traceback.format_exc()[-2000:])
                stop.set()
                return
            with tally.lock:
                tally.calls += 1
                check = tally.calls % 200 == 0
            if check and server.crashed():
                stop.set()

    workers = [threading.Thread(target=run, args=(c,), daemon=True) for c in clients]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(max_seconds + 2 * CALL_TIMEOUT_S)
    stop.set()
    for client in clients:
        client.close()
    return server.crashed()


# -- afterwards ------------------------------------------------------------------------------------


def final_check(address: str) -> dict[str, Any]:
    """ReloadConfig of the original file is OK; health is SERVING; a plain Route with a
    tenant's key picks a catalogue model, and Feedback for it is LEARNED; a random decision id
    is NOT_FOUND."""
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.RouterServiceStub(channel)
        admin = (("x-api-key", ADMIN_KEY),)
        stub.ReloadConfig(pb.ReloadConfigRequest(), metadata=admin, timeout=CALL_TIMEOUT_S)
        key = (("x-api-key", GAMMA_KEY),)
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=CALL_TIMEOUT_S
        )
        decision = stub.Route(
            pb.RouteRequest(prompt=PROMPTS[0]), metadata=key, timeout=CALL_TIMEOUT_S
        )
        ack = stub.Feedback(
            pb.FeedbackRequest(decision_id=decision.decision_id, quality=1.0, cost_usd=0.001),
            metadata=key,
            timeout=CALL_TIMEOUT_S,
        )
        try:
            stub.Feedback(
                pb.FeedbackRequest(decision_id="0" * 32, quality=1.0),
                metadata=key,
                timeout=CALL_TIMEOUT_S,
            )
            unknown = "OK"
        except grpc.RpcError as error:
            unknown = error.code().name
    serving = health.status == health_pb2.HealthCheckResponse.SERVING
    learned = ack.disposition == pb.FEEDBACK_DISPOSITION_LEARNED
    ok = serving and decision.model in MODELS and learned and unknown == "NOT_FOUND"
    return {
        "ok": ok,
        "health_serving": serving,
        "route_model": decision.model,
        "feedback_disposition": pb.FeedbackDisposition.Name(ack.disposition),
        "unknown_decision_feedback": unknown,
        "decision_id": decision.decision_id,
    }


def audit_verify(log_path: Path) -> dict[str, Any]:
    """``banditroute audit verify --log LOG``: its exit code and output."""
    result = subprocess.run(
        [sys.executable, "-m", "banditroute.cli", "audit", "verify", "--log", str(log_path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return {"exit_code": result.returncode, "output": (result.stdout + result.stderr).strip()}


def missing_feedback(log_path: Path, acknowledged: Counter[str]) -> int:
    """Acknowledged feedback not in the log: per decision id, acknowledged minus logged rows."""
    files = [log_path] if log_path.exists() else sorted(log_path.parent.glob("*.w*.duckdb"))
    logged: Counter[str] = Counter()
    for file in files:
        with duckdb.connect(str(file), read_only=True) as con:
            for (decision_id,) in con.execute("SELECT decision_id FROM feedback").fetchall():
                logged[decision_id] += 1
    return sum(max(0, n - logged[d]) for d, n in acknowledged.items())


def run(
    workdir: Path, *, calls: int, seed: int, threads: int, max_seconds: float, workers: int = 1
) -> dict[str, Any]:
    """One fuzz run in ``workdir``; the figures described in the module docstring."""
    log_path = workdir / "fuzz.duckdb"
    config = ConfigFile(workdir / "fuzz.toml", log_path)
    config.write()
    server = start_server(workdir, config.path, log_path, workers)
    tally = Tally()
    start = time.monotonic()
    try:
        crashed = fuzz(
            server, tally, config, calls=calls, seed=seed, threads=threads, max_seconds=max_seconds
        )
        seconds = time.monotonic() - start
        check: dict[str, Any] = {"ok": False, "error": "server exited"}
        if not crashed:
            try:
                config.write()  # the original file, gamma and its key included
                check = final_check(server.address)
                tally.acknowledged[check["decision_id"]] += 1
            except grpc.RpcError as error:
                check = {"ok": False, "error": f"{error.code().name}: {error.details()}"}
        exit_code = server.process.returncode if crashed else None
        if not crashed:
            server.process.send_signal(signal.SIGTERM)
            exit_code = server.process.wait(STOP_TIMEOUT_S)
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()
    stderr = server.text()
    codes = {rpc: dict(sorted(c.items())) for rpc, c in sorted(tally.codes.items())}
    total = Counter[str]()
    for counter in tally.codes.values():
        total.update(counter)
    result = {
        "calls": tally.calls,
        "calls_requested": calls,
        "seconds": round(seconds, 1),
        "seed": seed,
        "threads": threads,
        "workers": workers,
        "codes": codes,
        "total": dict(sorted(total.items())),
        "internal": total["INTERNAL"],
        "unknown": total["UNKNOWN"],
        "crashed": crashed,
        "client_refused": tally.client_refused,
        "failures": tally.failures,
        "script_errors": tally.script_errors,
        "violations": dict(tally.violations),
        "violation_examples": tally.violation_examples,
        "examples": tally.examples,
        "rpc_failed_log_lines": stderr.count("rpc_failed"),
        "tracebacks_in_stderr": stderr.count("Traceback"),
        "leaks_in_stderr": leaks(stderr),
        "final_check": check,
        "exit_code": exit_code,
        "feedback_acknowledged": sum(tally.acknowledged.values()),
        "audit_verify": audit_verify(log_path),
    }
    result["feedback_missing"] = missing_feedback(log_path, tally.acknowledged)
    result["ok"] = passed(result)
    if not result["ok"]:
        result["stderr_tail"] = stderr[-4000:]
    return result


def leaks(stderr: str) -> dict[str, int]:
    """What the client sent that the server's own log repeats: the canary, the API keys, the
    e-mail address and card number in a prompt (each with its count, if any)."""
    markers = (CANARY, ACME_KEY, BETA_KEY, GAMMA_KEY, ADMIN_KEY, "jane.doe@", "4111 1111")
    return {marker: stderr.count(marker) for marker in markers if marker in stderr}


def passed(result: dict[str, Any]) -> bool:
    """No INTERNAL, UNKNOWN, wrong OK answer or crash (and no error in this script), nothing
    a client sent in the server's log; the server still worked, stopped cleanly, and its audit
    chain and acknowledged feedback are intact. A run cut short by --max-seconds passes on
    what it did (``calls`` says how much)."""
    return (
        result["internal"] == result["unknown"] == 0
        and not result["violations"]
        and not result["script_errors"]
        and not result["crashed"]
        and result["rpc_failed_log_lines"] == result["tracebacks_in_stderr"] == 0
        and not result["leaks_in_stderr"]
        and bool(result["final_check"]["ok"])
        and result["exit_code"] == 0
        and result["audit_verify"]["exit_code"] == 0
        and result["feedback_missing"] == 0
    )


def plot(result: dict[str, Any], path: Path) -> None:
    """The status codes of each RPC (typed and raw) as stacked horizontal bars, in a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rpcs = list(result["codes"])
    codes = sorted(result["total"], key=lambda code: (code != "OK", code))
    fig, ax = plt.subplots(figsize=(9.0, 0.45 * len(rpcs) + 2.2))
    left = [0] * len(rpcs)
    for code in codes:
        counts = [result["codes"][rpc].get(code, 0) for rpc in rpcs]
        ax.barh(rpcs, counts, left=left, label=code)
        left = [a + b for a, b in zip(left, counts, strict=True)]
    ax.invert_yaxis()
    ax.set_xlabel("calls")
    ax.set_title(
        f"{result['calls']:,} fuzzed calls (seed {result['seed']}): "
        f"{result['internal']} INTERNAL, {result['unknown']} UNKNOWN, "
        f"{'a crash' if result['crashed'] else 'no crash'}"
    )
    ax.legend(fontsize="small", ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    parser.add_argument("--workers", type=int, default=1, help="the server's --workers")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--plot", type=Path, help="status codes per RPC as a PNG")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        result = run(
            Path(tmp), calls=args.calls, seed=args.seed, threads=args.threads,
            max_seconds=args.max_seconds, workers=args.workers,
        )  # fmt: skip
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    if args.plot:
        plot(result, args.plot)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
