"""``banditroute promote``: gate a candidate policy on a log, and make it live on a server.

    banditroute promote --log var/banditroute.duckdb --candidate costaware --margin 0.01
    BANDITROUTE_API_KEY=... banditroute promote --server 127.0.0.1:50051 --candidate fixed:M
    BANDITROUTE_API_KEY=... banditroute promote --server 127.0.0.1:50051 --rollback
    BANDITROUTE_API_KEY=... banditroute promote --server router.internal:50051 \
        --tls-ca ca.crt [--tls-cert me.crt --tls-key me.key] --candidate fixed:M

With ``--log`` the gate runs here (:mod:`banditroute.promotion`) and prints the evidence: a
dry run that changes nothing (exit 0 when the candidate clears, 1 when refused), and with
``--save-snapshot`` writes the warmed candidate's snapshot. With ``--server`` the running
server gates the candidate on its own log (the PromotePolicy RPC), writes the evidence to its
audit log and, if it clears, serves it; ``--rollback`` calls RollbackPolicy. The admin key
comes from ``$BANDITROUTE_API_KEY`` (never the command line, which other users can read). A
server serving TLS needs ``--tls-ca`` (or ``--tls``: the system's roots), and
``--tls-cert``/``--tls-key`` when it requires client certificates.
Heavy imports wait for the handler, so ``--help`` stays quick.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from banditroute.cli_replay import check_tolerance_argument, tolerance_argument
from banditroute.errors import InvalidArgument

if TYPE_CHECKING:
    import grpc

    from banditroute.client.channels import ChannelOptions

KEY_VARIABLE = "BANDITROUTE_API_KEY"
RPC_TIMEOUT_S = 600.0
"""How long PromotePolicy may take (the server replays its log, and warms the candidate)."""


def add_parser(subparsers: Any) -> None:
    """Add ``promote`` to the CLI."""
    parser = subparsers.add_parser(
        "promote",
        help="make a candidate policy live only if the log shows it beats the live one",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--log", type=Path, help="gate on this log here (a dry run)")
    parser.add_argument("--config", type=Path, help="TOML settings (catalogue, objectives)")
    parser.add_argument(
        "--server", metavar="HOST:PORT", help="ask this running server (PromotePolicy)"
    )
    parser.add_argument(
        "--candidate",
        help="costaware | vw[:ARGS] | linucb[:alpha=A,epsilon=E] | uniform | fixed:MODEL | "
        "snapshot:PATH (--log only) | shadow:NAME (--server only)",
    )
    parser.add_argument(
        "--margin",
        type=float,
        default=0.0,
        help="reward per decision the candidate's DR lower bound must beat the live "
        "policy's estimate by (default 0)",
    )
    tolerance_argument(parser, "the candidate's DR interval")
    parser.add_argument("--objective", help="profile name (default: the configured default)")
    parser.add_argument("--json", type=Path, metavar="OUT.json", help="write the evidence")
    parser.add_argument(
        "--save-snapshot", type=Path, metavar="PATH",
        help="with --log: write the warmed candidate's policy snapshot when it clears",
    )  # fmt: skip
    parser.add_argument(
        "--rollback", action="store_true", help="with --server: put the previous policy back"
    )
    tls = parser.add_argument_group("TLS (with --server; any of these turns TLS on)")
    tls.add_argument("--tls", action="store_true", help="TLS, trusting the system's roots")
    tls.add_argument("--tls-ca", type=Path, metavar="FILE", help="TLS, trusting this CA (PEM)")
    tls.add_argument("--tls-cert", type=Path, metavar="FILE", help="client certificate (mTLS)")
    tls.add_argument("--tls-key", type=Path, metavar="FILE", help="its private key (mTLS)")
    tls.add_argument(
        "--tls-server-name", default="", metavar="NAME",
        help="the name the server's certificate must hold (default: --server's host)",
    )  # fmt: skip
    parser.set_defaults(handler=run_promote)


def format_evidence(evidence: dict[str, Any]) -> str:
    """The evidence as a few lines of text."""
    lines = [f"verdict: {evidence['verdict']}: {evidence['reason']}"]
    for role in ("live", "candidate"):
        e = evidence[role]
        lines.append(
            f"{role:<9}  {e['policy']:<24}  DR {e['value']:.4f}  "
            f"[{e['lower']:.4f}, {e['upper']:.4f}]  ess {e['ess']:.1f}"
        )
    lines.append(
        f"decisions: {evidence['decisions']}  margin: {evidence['margin']:g}  "
        f"log digest: {evidence['log_digest']}"
    )
    return "\n".join(lines)


def _check(args: argparse.Namespace) -> None:
    if not (math.isfinite(args.margin) and args.margin >= 0):
        raise InvalidArgument("--margin: must be a number >= 0", field="--margin")
    check_tolerance_argument(args)
    if (args.log is None) == (args.server is None):
        raise InvalidArgument("--log: give either --log or --server", field="--log")
    if args.rollback and args.server is None:
        raise InvalidArgument(
            "--rollback: needs --server (the running server keeps the previous policy)",
            field="--rollback",
        )
    tls_args = (args.tls, args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name)
    if args.server is None and any(tls_args):
        raise InvalidArgument("--tls: the TLS arguments go with --server", field="--tls")
    if not args.rollback and not args.candidate:
        raise InvalidArgument("--candidate: required (or --rollback)", field="--candidate")


def run_promote(args: argparse.Namespace) -> int:
    """The ``promote`` handler."""
    _check(args)
    if args.server is not None:
        return _remote(args)
    from banditroute.config import config_path_from_environment, load_settings
    from banditroute.evaluation.objective_rewards import resolve_objective
    from banditroute.promotion import gate_connection
    from banditroute.snapshots import save_snapshot
    from banditroute.store.reader import open_log

    settings = load_settings(args.config or config_path_from_environment())
    objective = resolve_objective(args.objective, settings)
    source = open_log(args.log, arg="--log")
    try:
        evidence, policy = gate_connection(
            source.connection, args.candidate, settings, objective, margin=args.margin,
            arg="--candidate", tolerance=args.tolerance,
        )  # fmt: skip
    finally:
        source.connection.close()
    document = evidence.as_dict()
    print(format_evidence(document))
    if args.json is not None:
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    if policy is not None and args.save_snapshot is not None:
        save_snapshot(policy, args.save_snapshot)
        print(f"snapshot: {args.save_snapshot} ({policy.name})")
    return 0 if evidence.promoted else 1


def _channel_security(
    args: argparse.Namespace,
) -> tuple[bool | grpc.ChannelCredentials, ChannelOptions]:
    """The channel's TLS credentials (False: plaintext) and options, from the --tls arguments;
    ConfigError naming the argument for an unreadable file."""
    from banditroute.client.channels import server_name_option, tls_credentials

    files = {"--tls-ca": args.tls_ca, "--tls-cert": args.tls_cert, "--tls-key": args.tls_key}
    if not (args.tls or any(files.values())):
        if args.tls_server_name:
            raise InvalidArgument(
                "--tls-server-name: only with TLS (--tls-ca or --tls)", field="--tls-server-name"
            )
        return False, ()
    named = {arg: None if path is None else (arg, path) for arg, path in files.items()}
    credentials = tls_credentials(named["--tls-ca"], named["--tls-cert"], named["--tls-key"])
    return credentials, server_name_option(args.tls_server_name)


def _remote(args: argparse.Namespace) -> int:
    """PromotePolicy or RollbackPolicy on a running server."""
    import grpc

    from banditroute.client.channels import open_channel
    from banditroute.v1 import router_pb2 as pb
    from banditroute.v1 import router_pb2_grpc as pb_grpc

    key = os.environ.get(KEY_VARIABLE, "")
    metadata = (("x-api-key", key),) if key else ()
    tls, options = _channel_security(args)
    with open_channel(args.server, tls, options) as channel:
        stub = pb_grpc.RouterServiceStub(channel)
        try:
            if args.rollback:
                rolled = stub.RollbackPolicy(
                    pb.RollbackPolicyRequest(), metadata=metadata, timeout=RPC_TIMEOUT_S
                )
                print(f"rolled back {rolled.rolled_back_version}; live: {rolled.policy_version}")
                return 0
            response = stub.PromotePolicy(
                pb.PromotePolicyRequest(
                    candidate=args.candidate,
                    margin=args.margin,
                    objective=args.objective or "",
                    tolerance=args.tolerance,
                ),
                metadata=metadata,
                timeout=RPC_TIMEOUT_S,
            )
        except grpc.RpcError as error:
            hint = ""
            if error.code() == grpc.StatusCode.UNAVAILABLE:
                hint = (
                    "\n(is --server right? A server serving TLS needs --tls-ca FILE or --tls, "
                    "and --tls-cert/--tls-key when it requires client certificates)"
                )
            print(f"banditroute promote: error: {error.code().name}: {error.details()}{hint}",
                  file=sys.stderr)  # fmt: skip
            return 2

    def estimate(e: Any) -> dict[str, Any]:
        return {"policy": e.policy, "value": e.value, "lower": e.lower, "upper": e.upper,
                "ess": e.ess}  # fmt: skip

    document = {
        "verdict": "promoted" if response.promoted else "refused",
        "reason": response.reason,
        "live": estimate(response.live),
        "candidate": estimate(response.candidate),
        "decisions": response.decisions,
        "margin": response.margin,
        "log_digest": response.log_digest,
        "policy_version": response.policy_version,
        "audit_seq": response.audit_seq,
    }
    print(format_evidence(document))
    print(f"live policy: {response.policy_version}  (audit record {response.audit_seq})")
    if args.json is not None:
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return 0 if response.promoted else 1


__all__ = ["add_parser", "format_evidence", "run_promote"]
