"""Server lifecycle: build the service from settings, serve, and shut down cleanly.

On SIGHUP the configuration file is read again and applied without a restart
(:func:`banditroute.reload.reload_from_source`; the ReloadConfig RPC does the same).
On SIGTERM/SIGINT: health goes NOT_SERVING, the server stops accepting calls and lets
in-flight ones finish (``grace_s``), the log is flushed and closed, and the policy is
snapshotted. A background thread closes reward windows every second (and freezes the heap's
survivors out of the cyclic collector's sight, ``server.freeze_gc``) and snapshots the
policy every ``snapshot_interval_s``.
"""

from __future__ import annotations

import signal
import socket
import threading
from concurrent import futures
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from banditroute import hash_key
from banditroute.audit import AuditChain
from banditroute.catalog_checks import warn_unserved_data_classes
from banditroute.client.channels import ChannelOptions
from banditroute.config import Settings, TLSSettings
from banditroute.decision_ids import DecisionIds
from banditroute.errors import ConfigError, FailedPrecondition
from banditroute.features import warm_up
from banditroute.policies.base import Policy
from banditroute.policies.factory import build_policy
from banditroute.policies.sharing import SharedLearning
from banditroute.privacy import scan
from banditroute.reload import reload_from_source
from banditroute.router import Router
from banditroute.semantic import semantic_source
from banditroute.server.auth import AuthInterceptor
from banditroute.server.heap import HeapFreezer
from banditroute.server.metrics import (
    MetricsInterceptor,
    ServiceMetrics,
    WSGIServer,
    metrics_port,
    serve_metrics,
    stop_metrics,
    use_multiprocess,
)
from banditroute.server.peer_tls import peer_tls
from banditroute.server.reflection import enable_reflection
from banditroute.server.servicer import RouterServicer, WorkerPeers
from banditroute.snapshots import load_snapshot, snapshot_bytes, write_snapshot
from banditroute.store.base import EventLog
from banditroute.store.duckdb_log import DuckDBLog
from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from banditroute.cluster.replica import ClusterReplica
    from banditroute.server.replica_peers import ReplicaPeers
    from banditroute.server.worker_policy import WorkerPolicy

log = structlog.get_logger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RouterService"].full_name
CLUSTER_HEALTH_NAME = "banditroute.cluster"
"""Health service name whose status says whether this replica reaches the cluster server."""
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclass
class Service:
    """A running banditroute server and the parts it owns."""

    settings: Settings
    router: Router
    event_log: DuckDBLog
    server: grpc.Server
    health: health.HealthServicer
    port: int
    restored_snapshot: bool = False
    restored_pending: int = 0
    writes_snapshots: bool = True
    metrics: ServiceMetrics | None = None
    _metrics_server: WSGIServer | None = None
    cluster: ClusterReplica | None = None
    _stopped: threading.Event = field(default_factory=threading.Event)
    _snapshot_lock: threading.Lock = field(default_factory=threading.Lock)
    _maintenance: threading.Thread | None = None

    @property
    def address(self) -> str:
        """host:port the server listens on."""
        return f"{self.settings.server.host}:{self.port}"

    @property
    def metrics_address(self) -> str | None:
        """host:port of the metrics endpoint, if this process serves one."""
        if self._metrics_server is None:
            return None
        return f"{self.settings.server.metrics_address}:{metrics_port(self._metrics_server)}"

    def start(self) -> None:
        """Start serving (and the metrics endpoint, if configured) and the maintenance thread.
        ConfigError naming ``server.metrics_port`` if the endpoint cannot listen."""
        registry = None if self.metrics is None else self.metrics.registry
        port = self.settings.server.metrics_port
        if registry is not None and port:
            try:
                self._metrics_server = serve_metrics(
                    registry, self.settings.server.metrics_address, port
                )
            except ConfigError:
                self.event_log.close()
                raise
        if self.cluster is not None:
            self.cluster.link.on_change(self._cluster_health)
            self._cluster_health(self.cluster.link.degraded)
            self.cluster.start()
        self.server.start()
        self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        self.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        self._maintenance = threading.Thread(target=self._maintain, name="maintenance", daemon=True)
        self._maintenance.start()

    def _cluster_health(self, degraded: bool) -> None:
        """The health detail ``banditroute.cluster``: NOT_SERVING while the replica is
        degraded (it still answers Route; the main service stays SERVING)."""
        status = health_pb2.HealthCheckResponse
        self.health.set(CLUSTER_HEALTH_NAME, status.NOT_SERVING if degraded else status.SERVING)

    def _maintain(self) -> None:
        interval = self.settings.policy.snapshot_interval_s
        elapsed = 0.0
        heap = HeapFreezer() if self.settings.server.freeze_gc else None
        while not self._stopped.wait(1.0):
            # An error (a snapshot on a full disk) is logged and the next tick goes on: a
            # dead maintenance thread would never close another reward window.
            try:
                self.router.expire()
                if heap is not None:
                    heap.tick()
            except Exception:
                log.exception("maintenance_failed")
            elapsed += 1.0
            if elapsed >= interval:
                elapsed = 0.0
                try:
                    self.snapshot()
                except Exception:
                    log.exception("snapshot_failed")

    def snapshot(self) -> None:
        """Save every policy now (if a snapshot path is configured)."""
        base = self.settings.policy.snapshot_path
        if base is None or not self.writes_snapshots:
            return
        # The policies are serialised under the router's lock (a Route or Feedback waits for
        # that, a millisecond or so), the files written and fsynced after it is released;
        # the snapshot lock keeps the maintenance thread and stop() from writing at once.
        with self._snapshot_lock:
            with self.router.locked():
                payloads = {
                    name: snapshot_bytes(policy) for name, policy in self._snapshotted().items()
                }
            for name, payload in payloads.items():
                size = write_snapshot(payload, snapshot_path(base, name))
                log.debug("snapshot_saved", policy=name, bytes=size)

    def _snapshotted(self) -> dict[str, Policy]:
        """The policies to save, by name. A promoted policy of another kind than ``[policy]
        kind`` is not saved as the default (a restart could not restore it into the configured
        kind): the policy it replaced is, so a restart resumes the configured policy."""
        policies = dict(self.router.policies)
        kind = self.settings.policy.kind
        if policies["default"].name != kind:
            previous = self.router.previous_policy
            if previous is not None and previous.name == kind:
                policies["default"] = previous
            else:
                del policies["default"]
        return policies

    def stop(self) -> None:
        """Graceful shutdown: NOT_SERVING, drain calls, flush the log, snapshot the policy."""
        if self._stopped.is_set():
            return
        log.info("shutting_down", grace_s=self.settings.server.grace_s)
        self.health.enter_graceful_shutdown()
        self.server.stop(self.settings.server.grace_s).wait()
        self._stopped.set()
        stop_metrics(self._metrics_server)
        if self._maintenance is not None:
            self._maintenance.join()
        if self.cluster is not None:
            self.cluster.stop()
        self.event_log.close()
        self.snapshot()
        log.info("stopped", pending=self.router.pending_count)

    def wait(self) -> None:
        """Block until the server stops."""
        self.server.wait_for_termination()


def snapshot_path(base: Path, policy: str) -> Path:
    """Where a named policy's snapshot lives (the default policy at ``base`` itself)."""
    return base if policy == "default" else base.with_name(f"{base.name}.{policy}")


def _credentials(tls: TLSSettings) -> grpc.ServerCredentials:
    assert tls.cert_file is not None
    assert tls.key_file is not None
    try:
        key, cert = tls.key_file.read_bytes(), tls.cert_file.read_bytes()
        ca = tls.client_ca_file.read_bytes() if tls.client_ca_file else None
    except OSError as exc:
        raise ConfigError(f"tls: cannot read {exc.filename}: {exc.strerror}", field="tls") from exc
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=tls.require_client_auth
    )


@dataclass(frozen=True)
class WorkerIdentity:
    """This process's place among several serving processes on one port."""

    index: int
    count: int
    rundir: Path
    metrics_dir: Path | None = None
    """Where the worker writes its metrics for the supervisor to serve (None: no metrics)."""

    def socket(self, index: int) -> Path:
        """The private Unix socket of worker ``index`` (for forwarded feedback)."""
        return self.rundir / f"w{index}.sock"


def worker_log_path(path: Path, index: int) -> Path:
    """Each worker's own log file: ``var/banditroute.w0.duckdb`` for ``var/banditroute.duckdb``."""
    return path.with_name(f"{path.stem}.w{index}{path.suffix}")


def build_service(settings: Settings, worker: WorkerIdentity | None = None) -> Service:
    """Assemble policies (restored from snapshots), log, audit chain, router and server.

    With ``worker`` set, the process is one of several on the same port: it binds with
    SO_REUSEPORT, also listens on a private Unix socket, writes its own log file, stamps its
    index into decision ids and forwards feedback for other workers' decisions to them.
    """
    # The relay's certificates are read before anything is opened: a bad one stops here.
    relay_tls = peer_tls(settings) if settings.cluster.enabled else (False, ())
    metrics = _service_metrics(settings, worker)
    warm_up()
    scan("\u200b")  # builds the format-character table now rather than on a request
    prompt_hash_key = hash_key.load_or_create(settings.log.hash_key_path)
    policies = {
        name: build_policy(spec, semantic=settings.features.semantic)
        for name, spec in settings.policies.items()
    }
    base = settings.policy.snapshot_path
    restored = [
        name
        for name, policy in policies.items()
        if base is not None and load_snapshot(policy, snapshot_path(base, name))
    ]
    restored_snapshot = "default" in restored
    if not restored_snapshot and settings.policy.warm_start is not None:
        # Imported here: a server without a warm start has no reason to load the outcome-table
        # reader at start-up.
        from banditroute import warm_start

        warm = warm_start.load_plan(
            settings.policy.warm_start,
            settings.catalog,
            dict(settings.policy.warm_start_models),
        )
        warm_start.learn(policies["default"], settings, warm)
    log_settings = settings.log
    if worker is not None:
        log_settings = replace(log_settings, path=worker_log_path(log_settings.path, worker.index))
    event_log = DuckDBLog(
        log_settings.path,
        flush_interval_s=log_settings.flush_interval_s,
        ingest_interval_s=log_settings.ingest_interval_s,
        batch_size=log_settings.batch_size,
        export_dir=log_settings.export_dir,
        export_interval_s=log_settings.export_interval_s,
        fsync=log_settings.fsync,
        sync_feedback=log_settings.sync_feedback,
        max_backlog_bytes=log_settings.max_backlog_mb * 1024 * 1024,
    )
    learning = None
    router_log: EventLog = event_log
    if settings.cluster.enabled:
        from banditroute.cluster.learning import replica_learning

        learning = replica_learning(settings, log_settings.path)
        router_log = learning.wrap(event_log)  # every row also goes to the trainer
    audit = AuditChain(*event_log.audit_head(), sink=router_log.append_audit)
    default_policy = policies.pop("default")
    if worker is not None:
        default_policy = SharedLearning(default_policy)
    router = Router(
        settings,
        default_policy,
        router_log,
        policies=policies,
        audit=audit,
        new_id=_decision_ids(settings, worker),
        prompt_hash_key=prompt_hash_key,
    )
    interceptors: list[Any] = [AuthInterceptor(lambda: router.settings.access)]
    if metrics is not None:
        metrics.bind(router, event_log)
        interceptors.insert(0, MetricsInterceptor(metrics, skip=WorkerPeers.is_peer_call))
    if learning is not None:
        spec = settings.policies["default"]
        from banditroute.cluster.recipes import build_recipe

        learning.attach(
            router,
            lambda: build_policy(spec, semantic=settings.features.semantic),
            recipes=lambda recipe: build_recipe(recipe, router.settings),
        )
    restored_pending = router.restore_pending()
    router.restore_budgets(event_log.tenant_spend)
    router.restore_pacers(event_log.first_costs)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.server.max_workers),
        interceptors=interceptors,
        maximum_concurrent_rpcs=settings.server.max_concurrent_rpcs,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            # Calls gRPC core holds until the server's single polling thread picks them up
            # (and sheds those past max_concurrent_rpcs with RESOURCE_EXHAUSTED). Core's own
            # limits (1,000, then random drops up to 3,000) cancelled calls of a burst as
            # CANCELLED before the server saw them; one limit, no random early drop.
            ("grpc.server.max_pending_requests", settings.server.max_pending_rpcs),
            ("grpc.server.max_pending_requests_hard_limit", settings.server.max_pending_rpcs),
            # Both the soft limit and the hard one: a call whose headers are larger fails.
            ("grpc.max_metadata_size", settings.server.max_metadata_bytes),
            ("grpc.absolute_max_metadata_size", settings.server.max_metadata_bytes),
            ("grpc.so_reuseport", 0 if worker is None else 1),
        ],
    )
    peers = None if worker is None else WorkerPeers(worker.index, worker.count, worker.socket)
    workers_policy = None
    if worker is not None and peers is not None:
        workers_policy = _workers_policy(settings, router, worker, peers)
    cluster = None
    for_trainer = None
    if settings.cluster.enabled:
        from banditroute.cluster import join_cluster

        cluster = join_cluster(settings, router)
        if learning is not None:
            from banditroute.cluster.orphans import FeedbackForTrainer

            learning.report_to(cluster)
            for_trainer = FeedbackForTrainer(router, learning.shipping_log)
            cluster.report_for_trainer(lambda: for_trainer.accepted)
    pb_grpc.add_RouterServiceServicer_to_server(
        RouterServicer(
            router,
            stats_reader=event_log.reader,
            peers=peers,
            cluster=None if cluster is None else cluster.status,
            replicas=None if cluster is None else cluster_peers(cluster, *relay_tls),
            cluster_policy=None if learning is None else learning.policy_changes(router),
            for_trainer=for_trainer,
            workers_policy=workers_policy,
        ),
        server,
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_reflection((SERVICE_NAME, health.SERVICE_NAME), server)
    address = f"{settings.server.host}:{settings.server.port}"
    try:
        port = (
            server.add_secure_port(address, _credentials(settings.tls))
            if settings.tls.enabled
            else server.add_insecure_port(address)
        )
    except ConfigError:
        event_log.close()
        if cluster is not None:
            cluster.link.close()
        raise
    except RuntimeError:  # grpc's "Failed to bind": the address is taken or not local
        port = 0
    if port == 0:
        event_log.close()
        if cluster is not None:
            cluster.link.close()
        raise ConfigError(
            f"server.port: cannot listen on {address} (in use, or not an address of this "
            "host): choose another with --port or [server] port, or stop what holds it",
            field="server.port",
        )
    if worker is not None:
        server.add_insecure_port(f"unix:{worker.socket(worker.index)}")
    if cluster is not None:
        cluster.registry.address = advertised_address(settings.server.host, port)
    return Service(
        settings, router, event_log, server, health_servicer, port, restored_snapshot,
        restored_pending, writes_snapshots=worker is None or worker.index == 0, metrics=metrics,
        cluster=cluster,
    )  # fmt: skip


def _workers_policy(
    settings: Settings, router: Router, worker: WorkerIdentity, peers: WorkerPeers
) -> WorkerPolicy:
    """Promotions across the workers; a worker started after one (a replacement) adopts the
    promoted policy the others serve first."""
    from banditroute.server.worker_policy import WorkerPolicy, adopt_promoted

    exports = [
        replace(settings.log, path=worker_log_path(settings.log.path, index)).export_dir
        for index in range(worker.count)
        if index != worker.index
    ]
    adopted = adopt_promoted(router, worker.rundir)
    return WorkerPolicy(router, peers, worker.rundir, exports, adopted)


def _service_metrics(settings: Settings, worker: WorkerIdentity | None) -> ServiceMetrics | None:
    """The process's metrics: served by itself (one process with ``server.metrics_port``),
    written for the supervisor (a worker given a metrics folder), or none."""
    if worker is not None:
        if worker.metrics_dir is None:
            return None
        use_multiprocess(worker.metrics_dir)
        return ServiceMetrics(served=False)
    return ServiceMetrics(served=True) if settings.server.metrics_port else None


def _decision_ids(settings: Settings, worker: WorkerIdentity | None) -> DecisionIds | None:
    """Decision ids naming the worker (``--workers``) or the replica (``[cluster]``) that
    made them, so Feedback reaching another is forwarded there; None for a lone server."""
    if worker is not None:
        return DecisionIds(worker.index)
    if settings.cluster.enabled:
        from banditroute.cluster import replica_tag
        from banditroute.cluster.connection import replica_name

        return DecisionIds(prefix=replica_tag(replica_name(settings.cluster)))
    return None


def cluster_peers(
    cluster: ClusterReplica, tls: bool | grpc.ChannelCredentials, options: ChannelOptions
) -> ReplicaPeers:
    """The other replicas, for forwarding Feedback (addresses from the registry), reached
    with ``tls`` and ``options`` (:func:`banditroute.server.peer_tls.peer_tls`)."""
    from banditroute.server.replica_peers import ReplicaPeers

    return ReplicaPeers(
        cluster.replica_id, cluster.registry.members, cluster.registry.has_tag,
        tls=tls, options=options,
    )  # fmt: skip


def advertised_address(host: str, port: int) -> str:
    """The address other replicas reach this one at: ``host:port``, with the machine's name
    for a wildcard host."""
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = socket.gethostname()
    return f"{host}:{port}"


def reload_on_signal(router: Router) -> None:
    """Apply the configuration file again after a SIGHUP: the outcome is logged
    (``config_reloaded`` or ``config_reload_failed``), and a failure leaves the server
    running on its settings."""
    try:
        reload_from_source(router)
    except FailedPrecondition:
        pass  # logged by reload_from_source
    except Exception:
        log.exception("config_reload_failed")


def serve(settings: Settings) -> int:
    """Run the server until SIGTERM or SIGINT, reloading its configuration on SIGHUP; returns
    the exit code."""
    wake = threading.Event()
    hangups = threading.Event()

    def _on_hangup(signum: int, frame: FrameType | None) -> None:
        hangups.set()
        wake.set()

    # Before the service is built: SIGHUP's default action would end the process.
    signal.signal(signal.SIGHUP, _on_hangup)
    service = build_service(settings)
    service.start()
    warn_unserved_data_classes(settings.catalog)
    log.info(
        "listening",
        address=service.address,
        metrics=service.metrics_address,
        tls=settings.tls.enabled,
        log=str(settings.log.path),
        policy=service.router.policy.version,
        semantic_features=semantic_source(settings),
        config=settings.source,
        snapshot_restored=service.restored_snapshot,
        pending_restored=service.restored_pending,
        cluster=None if service.cluster is None else service.cluster.replica_id,
    )
    done = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal", signal=signal.Signals(signum).name)
        done.set()
        wake.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    while not done.is_set():
        wake.wait(0.5)
        wake.clear()
        if hangups.is_set() and not done.is_set():
            hangups.clear()
            log.info("signal", signal="SIGHUP")
            reload_on_signal(service.router)
    service.stop()
    return 0
