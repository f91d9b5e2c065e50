"""Typed, frozen settings: the only module that reads configuration files or the environment.

Settings come from the embedded ``default_config.toml``; a user file given with ``--config``
(or ``BANDITROUTE_CONFIG``) overrides it key by key (a ``[[models]]`` list replaces the whole
catalogue; ``[objectives.NAME]`` tables add or replace profiles). Everything else receives the
resulting :class:`Settings` and never looks at files or the environment itself.
"""

from __future__ import annotations

import math
import os
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union, cast, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

from banditroute.catalog import Catalog, ModelSpec
from banditroute.errors import ConfigError, InvalidArgument
from banditroute.health_settings import HealthSettings
from banditroute.objectives import Objective
from banditroute.rules import RoutingRule, rules_from_config
from banditroute.sessions import SessionSettings
from banditroute.tenancy import AccessSettings, access_from_config

PolicyKind = Literal["vw", "costaware", "linucb", "uniform", "fixed"]
CombineRule = Literal["first", "last", "mean", "min", "max", "sum"]
MissingRule = Literal["skip", "default"]

DEFAULT_SOURCE = "<embedded defaults>"
"""The ``source`` of settings read from the embedded defaults alone (no config file)."""
POLICY_KINDS: tuple[str, ...] = ("vw", "costaware", "linucb", "uniform", "fixed")
COMBINE_RULES: tuple[str, ...] = ("first", "last", "mean", "min", "max", "sum")
_SECTIONS = frozenset(
    {"server", "log", "policy", "reward", "objective", "objectives", "models"}
    | {"auth", "tenants", "rules", "languages", "health", "policies", "tls", "features"}
    | {"cluster"}
    | {"sessions"}
)


@dataclass(frozen=True)
class ServerSettings:
    """Where and how the gRPC server listens, and the request size limits it enforces."""

    host: str = "127.0.0.1"
    port: int = 50051
    max_workers: int = 16
    max_concurrent_rpcs: int = 1000
    max_pending_rpcs: int = 10_000
    grace_s: float = 5.0
    max_prompt_chars: int = 400_000
    feature_chars: int = 4000
    max_messages: int = 1000
    max_tags: int = 64
    max_tag_key_chars: int = 128
    max_tag_value_chars: int = 1024
    max_request_id_chars: int = 256
    max_name_chars: int = 256
    max_listed: int = 1000
    max_metadata_bytes: int = 16384
    workers: int = 1
    merge_interval_s: float = 5.0
    worker_restarts_per_minute: int = 5
    freeze_gc: bool = True
    metrics_port: int = 0
    """Port of the Prometheus metrics endpoint (HTTP ``/metrics``); 0: no endpoint."""
    metrics_host: str = "127.0.0.1"
    """Address the metrics endpoint listens on: loopback by default, whatever ``host`` is,
    since the endpoint has no authentication and shows tenants' spend; empty: ``host``."""

    @property
    def metrics_address(self) -> str:
        """Where the metrics endpoint listens (``metrics_host``, else ``host``)."""
        return self.metrics_host or self.host


@dataclass(frozen=True)
class LogSettings:
    """The DuckDB decision/feedback log and how it is written."""

    path: Path = Path("var/banditroute.duckdb")
    flush_interval_s: float = 0.05
    ingest_interval_s: float = 1.0
    batch_size: int = 2048
    sync_feedback: bool = True
    fsync: bool = False
    store_prompts: bool = False
    export_interval_s: float = 10.0
    prompt_hash_key_file: Path | None = None
    max_backlog_mb: int = 64

    @property
    def export_dir(self) -> Path:
        """Where the writer exports Parquet parts for readers of a live log (``PATH.export``)."""
        return self.path.with_name(self.path.name + ".export")

    @property
    def hash_key_path(self) -> Path:
        """The secret key file of the logged prompt hashes: the configured one, else
        ``PATH.hashkey`` beside the log (created on first start)."""
        if self.prompt_hash_key_file is not None:
            return self.prompt_hash_key_file
        return self.path.with_name(self.path.name + ".hashkey")


DEFAULT_SNAPSHOT_PATH = Path("var/policy.snapshot")
"""Where the policy snapshot goes unless the config or ``serve --log`` says otherwise."""


@dataclass(frozen=True)
class PolicySettings:
    """Which learner decides, its settings, and where its snapshots go."""

    kind: PolicyKind = "costaware"
    vw_args: tuple[str, ...] = ("--cb_explore_adf", "--squarecb")
    fixed_model: str | None = None
    snapshot_path: Path | None = DEFAULT_SNAPSHOT_PATH
    snapshot_interval_s: float = 30.0
    warm_start: Path | None = None
    """An outcome table the policy learns from at start-up when no snapshot was restored."""
    warm_start_models: tuple[tuple[str, str], ...] = ()
    """(table model id, catalogue id) pairs for tables that name models differently."""
    min_probability: float = 0.0
    """The exploration floor: each eligible model's least probability on explorable (public
    and internal) requests; 0 to 1/(catalogue size) (:mod:`banditroute.policies.floor`)."""
    price_prior: float = 0.0
    """costaware: shrink each model's intercept toward a line in log price learned from every
    model, with this precision (in observations); 0 (off) shrinks it toward the common mean."""
    joint_thompson: bool = False
    """costaware: draw the models' values jointly, so uncertainty they share moves them
    together instead of counting as a reason to explore."""


@dataclass(frozen=True)
class RewardSettings:
    """How feedback is joined to decisions and turned into learning."""

    window_s: float = 600.0
    clock_skew_s: float = 5.0
    on_missing: MissingRule = "skip"
    default_reward: float = 0.0
    combine: CombineRule = "first"
    max_cost_usd: float = 100.0
    max_latency_ms: float = 3_600_000.0
    max_tokens: int = 10_000_000


@dataclass(frozen=True)
class TLSSettings:
    """Server TLS: certificate and key files, and optionally a CA to require client certs."""

    cert_file: Path | None = None
    key_file: Path | None = None
    client_ca_file: Path | None = None
    require_client_auth: bool = False

    @property
    def enabled(self) -> bool:
        """True when a certificate is configured."""
        return self.cert_file is not None


@dataclass(frozen=True)
class FeatureSettings:
    """Prompt features beyond the dense ones: ``semantic`` adds a sentence embedding of the
    prompt's tail (on by default: it pays on held-out prompts, see benchmarks/README.md), from
    the table shipped with banditroute, or, when ``semantic_cache`` names a file, from a table
    distilled there from the model package on first use."""

    semantic: bool = True
    semantic_cache: Path | None = None


CLUSTER_SCHEMES: tuple[str, ...] = ("redis", "rediss", "valkey", "valkeys", "unix")
"""URL schemes ``cluster.url`` accepts (``rediss``/``valkeys``: TLS; ``unix``: a socket path)."""


@dataclass(frozen=True)
class ClusterSettings:
    """Replicas sharing state and learning through one Valkey/Redis server (see
    :mod:`banditroute.cluster`); an empty ``url`` (the default) means a lone server.

    ``replica_id`` names this replica (empty: the host name and a digest of the log path,
    stable across restarts); every key lives under
    ``key_prefix``. ``timeout_s`` bounds each command on Route's path and
    ``connect_timeout_s`` a connection attempt; after a failure the replica is degraded and
    tries the server again ``retry_s`` later. ``heartbeat_s``: how often a replica says it is
    alive (it counts as gone after three missed beats); ``snapshot_period_s``: how often
    the trainer publishes a policy snapshot and replicas look for a newer one.

    With ``[tls]``, Feedback relayed to the replica that made the decision goes over TLS too:
    the other replica's certificate must be signed by ``peer_ca_file`` (default:
    ``tls.client_ca_file``) and name ``peer_server_name`` (default: the host of the address
    it registered), and this replica presents its own certificate for mutual TLS."""

    url: str = ""
    replica_id: str = ""
    key_prefix: str = "banditroute"
    timeout_s: float = 0.25
    connect_timeout_s: float = 0.25
    retry_s: float = 1.0
    heartbeat_s: float = 1.0
    snapshot_period_s: float = 5.0
    peer_ca_file: Path | None = None
    peer_server_name: str = ""
    log_path: str = field(default="", compare=False)
    """The replica's decision log ([log] path, not a key of [cluster]): the default
    ``replica_id`` is derived from it, so a replica restarted on its log is the same replica
    (its spend, read back from the log, replaces its old figures instead of adding to them)."""

    @property
    def enabled(self) -> bool:
        """True when a cluster URL is configured."""
        return bool(self.url)


def check_cluster_url(url: str, where: str = "cluster.url") -> str:
    """``url`` if it is a usable Valkey/Redis URL (scheme among :data:`CLUSTER_SCHEMES`, a host
    or a socket path, a numeric database); ConfigError naming ``where`` otherwise. The text
    in an error never repeats the URL (it may hold a password)."""
    parsed = urlsplit(url)
    if parsed.scheme not in CLUSTER_SCHEMES:
        raise ConfigError(
            f"{where}: the scheme must be one of {', '.join(CLUSTER_SCHEMES)} "
            "(for example redis://127.0.0.1:6379/0)",
            field=where,
        )
    try:
        port = parsed.port
    except ValueError:
        raise ConfigError(f"{where}: the port is not a number in 0..65535", field=where) from None
    if parsed.scheme == "unix":
        if not parsed.path:
            raise ConfigError(f"{where}: unix:// needs a socket path", field=where)
        return url
    if not parsed.hostname:
        raise ConfigError(f"{where}: no host", field=where)
    if port == 0:
        raise ConfigError(f"{where}: the port must be in 1..65535", field=where)
    database = parsed.path.lstrip("/")
    if database and (not database.isdigit() or int(database) > 65535):
        raise ConfigError(
            f"{where}: the database must be a number (redis://HOST:PORT/DB)", field=where
        )
    return url


def _cluster(table: Mapping[str, Any], log_path: Path, tls: TLSSettings) -> ClusterSettings:
    if "log_path" in table:
        raise ConfigError("cluster: unknown key(s) log_path", field="cluster")
    cluster: ClusterSettings = _build(ClusterSettings, table, "cluster", peer_ca_file=Path)
    cluster = replace(cluster, log_path=str(log_path))
    if cluster.peer_ca_file is None and tls.enabled:
        cluster = replace(cluster, peer_ca_file=tls.client_ca_file)
    _positive("cluster", timeout_s=cluster.timeout_s, connect_timeout_s=cluster.connect_timeout_s,
              retry_s=cluster.retry_s, heartbeat_s=cluster.heartbeat_s,
              snapshot_period_s=cluster.snapshot_period_s)  # fmt: skip
    if cluster.url:
        check_cluster_url(cluster.url)
    prefix = cluster.key_prefix
    if not prefix or len(prefix) > 64 or not all(c.isalnum() or c in "-_.:" for c in prefix):
        raise ConfigError(
            "cluster.key_prefix: 1-64 letters, digits or -_.:", field="cluster.key_prefix"
        )
    rid = cluster.replica_id
    if len(rid) > 128 or not all(c.isalnum() or c in "-_.:" for c in rid):
        raise ConfigError(
            "cluster.replica_id: at most 128 letters, digits or -_.:", field="cluster.replica_id"
        )
    name = cluster.peer_server_name
    if len(name) > 253 or not all(c.isalnum() or c in "-." for c in name):
        raise ConfigError(
            "cluster.peer_server_name: a host name (at most 253 letters, digits, - or .)",
            field="cluster.peer_server_name",
        )
    return cluster


@dataclass(frozen=True)
class Settings:
    """Everything the service needs, read once at start-up."""

    catalog: Catalog
    objectives: Mapping[str, Objective]
    default_objective: str
    server: ServerSettings = ServerSettings()
    log: LogSettings = LogSettings()
    policy: PolicySettings = PolicySettings()
    reward: RewardSettings = RewardSettings()
    access: AccessSettings = field(default_factory=AccessSettings)
    rules: tuple[RoutingRule, ...] = ()
    language_tagged: frozenset[str] = frozenset()
    health: HealthSettings = field(default_factory=HealthSettings)
    policies: Mapping[str, PolicySettings] = field(default_factory=dict)
    tls: TLSSettings = TLSSettings()
    features: FeatureSettings = field(default_factory=FeatureSettings)
    cluster: ClusterSettings = ClusterSettings()
    sessions: SessionSettings = field(default_factory=SessionSettings)
    source: str = field(default=DEFAULT_SOURCE, compare=False)
    overrides: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """The command line's --host / --port / --log / --workers / --cluster (see
    :meth:`with_overrides`), applied again when the source is re-read (:func:`reread_settings`)."""

    def __post_init__(self) -> None:
        if self.default_objective not in self.objectives:
            raise ConfigError(
                f"objective.default: no profile named {self.default_objective!r}",
                field="objective.default",
            )
        if self.cluster.enabled and self.server.workers > 1:
            raise ConfigError(
                "server.workers: with [cluster] each replica is one serving process (run more "
                "replicas instead of workers)",
                field="server.workers",
            )
        self._check_peer_tls()
        if self.policy.kind == "fixed" and self.policy.fixed_model not in self.catalog:
            raise ConfigError(
                f"policy.fixed_model: {self.policy.fixed_model!r} is not in the catalogue",
                field="policy.fixed_model",
            )
        most = 1.0 / max(1, len(self.catalog))
        named = {f"policies.{name}": p for name, p in self.policies.items() if name != "default"}
        for section, policy in {"policy": self.policy, **named}.items():
            _finite(section, at_least=0.0, min_probability=policy.min_probability)
            _finite(section, at_least=0.0, price_prior=policy.price_prior)
            if policy.min_probability > most:
                raise ConfigError(
                    f"{section}.min_probability: {policy.min_probability:g} is above "
                    f"1/{len(self.catalog)} (one over the number of models), which no "
                    "distribution can give every model",
                    field=f"{section}.min_probability",
                )

    def objective(self, name: str) -> Objective:
        """The named profile, or the default one for an empty name."""
        key = name or self.default_objective
        try:
            return self.objectives[key]
        except KeyError:
            raise InvalidArgument(
                f"objective: unknown profile {key!r} (known: {', '.join(sorted(self.objectives))})",
                field="objective",
            ) from None

    def _check_peer_tls(self) -> None:
        """The relay between replicas uses TLS exactly when the server does (never plaintext
        beside a TLS port), so it needs a CA to check the other replicas' certificates."""
        cluster = self.cluster
        if not self.tls.enabled:
            for key, value in (("peer_ca_file", cluster.peer_ca_file),
                               ("peer_server_name", cluster.peer_server_name)):  # fmt: skip
                if value:
                    raise ConfigError(
                        f"cluster.{key}: only with [tls] cert_file/key_file (replicas relay "
                        "Feedback to each other over TLS exactly when they serve TLS)",
                        field=f"cluster.{key}",
                    )
        elif cluster.enabled and cluster.peer_ca_file is None:
            raise ConfigError(
                "cluster.peer_ca_file: needed with [tls] on a cluster replica: the CA that "
                "signed the other replicas' certificates, which Feedback relayed to them is "
                "checked against (default: tls.client_ca_file, not set here)",
                field="cluster.peer_ca_file",
            )

    def with_overrides(
        self,
        *,
        host: str | None = None,
        port: int | None = None,
        log_path: Path | None = None,
        workers: int | None = None,
        warm_start: Path | None = None,
        metrics_port: int | None = None,
        metrics_host: str | None = None,
        cluster_url: str | None = None,
    ) -> Settings:
        """A copy with the CLI's --host / --port / --log / --workers / --warm-start /
        --metrics-port / --metrics-host / --cluster applied.

        ``--log PATH`` puts the instance's state beside PATH: the decision log, and the policy
        snapshot too (``PATH``'s stem + ``.policy.snapshot``) unless the config names a
        snapshot path of its own, so two servers started with different ``--log`` never
        share, and overwrite, one snapshot."""
        given: dict[str, object] = {
            "host": host, "port": port, "log_path": log_path, "workers": workers,
            "warm_start": warm_start, "metrics_port": metrics_port, "metrics_host": metrics_host,
            "cluster_url": cluster_url,
        }  # fmt: skip
        overrides = {**self.overrides, **{k: v for k, v in given.items() if v is not None}}
        cluster = self.cluster
        if cluster_url is not None:
            cluster = replace(cluster, url=check_cluster_url(cluster_url, "--cluster"))
        if log_path is not None:
            cluster = replace(cluster, log_path=str(log_path))
        server = self.server if host is None else replace(self.server, host=host)
        server = server if port is None else replace(server, port=port)
        server = server if workers is None else replace(server, workers=workers)
        if metrics_port is not None:
            server = replace(server, metrics_port=metrics_port)
        if metrics_host is not None:
            server = replace(server, metrics_host=metrics_host)
        policy = self.policy
        if warm_start is not None:
            policy = replace(policy, warm_start=warm_start)
        if log_path is None:
            return replace(self, server=server, policy=policy, cluster=cluster, overrides=overrides)
        if policy.snapshot_path == DEFAULT_SNAPSHOT_PATH:
            snapshot = log_path.with_name(f"{log_path.stem}.policy.snapshot")
            policy = replace(policy, snapshot_path=snapshot)
        return replace(
            self, server=server, log=replace(self.log, path=log_path), policy=policy,
            cluster=cluster, overrides=overrides,
        )  # fmt: skip


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _table(data: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a table", field=key)
    return value


def _accepts(hint: Any, value: Any) -> bool:
    """Whether a TOML value fits a settings field's annotation (before conversion)."""
    origin = get_origin(hint)
    if origin is Union or origin is types.UnionType:
        return any(_accepts(arg, value) for arg in get_args(hint))
    if origin is Literal:
        return isinstance(value, str)  # the allowed values are checked with a clearer message
    if origin in (tuple, frozenset):
        return isinstance(value, list | tuple | set | frozenset) and all(
            isinstance(item, str) for item in value
        )
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is Path:
        return isinstance(value, str | Path)
    return True


def _build(cls: type[Any], data: Mapping[str, Any], section: str, **conv: Any) -> Any:
    known = set(cls.__dataclass_fields__)
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{section}: unknown key(s) {', '.join(sorted(unknown))}", field=section)
    hints = get_type_hints(cls)
    for key, value in data.items():
        if not _accepts(hints[key], value):
            hint = hints[key]
            expected = hint.__name__ if isinstance(hint, type) else str(hint)
            raise ConfigError(
                f"{section}.{key}: expected {expected}, got {value!r}", field=f"{section}.{key}"
            )
    kwargs = dict(data)
    for key, fn in conv.items():
        if key in kwargs and kwargs[key] is not None:
            kwargs[key] = fn(kwargs[key])
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{section}: {exc}", field=section) from exc


def _positive(section: str, **values: float) -> None:
    for key, value in values.items():
        if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{section}.{key}: must be a positive number", field=key)


def _finite(section: str, *, at_least: float | None = None, **values: float) -> None:
    """Each value a finite number (not a bool), and ``>= at_least`` when given."""
    for key, value in values.items():
        field = f"{section}.{key}"
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value):
            raise ConfigError(f"{field}: must be a finite number", field=field)
        if at_least is not None and value < at_least:
            raise ConfigError(f"{field}: must be >= {at_least:g}", field=field)


def _warm_start_models(value: Any) -> tuple[tuple[str, str], ...]:
    """``[policy.warm_start_models]`` (table id = catalogue id) as sorted pairs."""
    key = "policy.warm_start_models"
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: expected a table of table id = catalogue id", field=key)
    for table_id, catalog_id in value.items():
        if not isinstance(catalog_id, str) or not catalog_id:
            raise ConfigError(
                f"{key}.{table_id}: expected a catalogue model id, got {catalog_id!r}", field=key
            )
    return tuple(sorted(value.items()))


def _model(entry: Any) -> ModelSpec:
    if not isinstance(entry, Mapping):
        raise ConfigError("models: each entry must be a table ([[models]])", field="models")
    # Only a list becomes a set: frozenset("code") would be {"c", "o", "d", "e"}; anything
    # else is left for _build to reject naming the key.
    sets = {
        k: frozenset(entry[k])
        for k in ("capabilities", "languages", "data_classes")
        if isinstance(entry.get(k), list)
    }
    spec: ModelSpec = _build(ModelSpec, {**entry, **sets}, "models")
    return spec


def _objective(name: str, entry: Mapping[str, Any]) -> Objective:
    try:
        return Objective.from_mapping(name, entry)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"objectives.{name}: {exc}", field=f"objectives.{name}") from exc


def settings_from_mapping(data: Mapping[str, Any], *, source: str = "<mapping>") -> Settings:
    """Build validated settings from a parsed TOML document merged over the defaults."""
    unknown = set(data) - _SECTIONS
    if unknown:
        raise ConfigError(
            f"unknown section(s) {', '.join(sorted(unknown))} "
            f"(known: {', '.join(sorted(_SECTIONS))})",
            field=sorted(unknown)[0],
        )
    merged = _deep_merge(_default_document(), data)
    server: ServerSettings = _build(ServerSettings, _table(merged, "server"), "server")
    _positive(
        "server",
        max_workers=server.max_workers,
        max_concurrent_rpcs=server.max_concurrent_rpcs,
        max_pending_rpcs=server.max_pending_rpcs,
        grace_s=server.grace_s,
        max_prompt_chars=server.max_prompt_chars,
        feature_chars=server.feature_chars,
        max_messages=server.max_messages,
        max_tags=server.max_tags,
        max_tag_key_chars=server.max_tag_key_chars,
        max_tag_value_chars=server.max_tag_value_chars,
        max_request_id_chars=server.max_request_id_chars,
        max_name_chars=server.max_name_chars,
        max_listed=server.max_listed,
        max_metadata_bytes=server.max_metadata_bytes,
        workers=server.workers,
        merge_interval_s=server.merge_interval_s,
    )
    _finite("server", at_least=0.0, worker_restarts_per_minute=server.worker_restarts_per_minute)
    for key in ("port", "metrics_port"):
        if not 0 <= getattr(server, key) < 65536:
            raise ConfigError(f"server.{key}: must be in 0..65535", field=f"server.{key}")
    log: LogSettings = _build(
        LogSettings, _table(merged, "log"), "log", path=Path, prompt_hash_key_file=Path
    )
    _positive("log", flush_interval_s=log.flush_interval_s, batch_size=log.batch_size,
              ingest_interval_s=log.ingest_interval_s,
              export_interval_s=log.export_interval_s,
              max_backlog_mb=log.max_backlog_mb)  # fmt: skip
    policy_table = dict(_table(merged, "policy"))
    warm_models = _warm_start_models(policy_table.pop("warm_start_models", {}))
    policy: PolicySettings = _build(
        PolicySettings, policy_table, "policy", vw_args=tuple, snapshot_path=Path, warm_start=Path
    )
    policy = replace(policy, warm_start_models=warm_models)
    if policy.kind not in POLICY_KINDS:
        raise ConfigError(
            f"policy.kind: {policy.kind!r} is not one of {', '.join(POLICY_KINDS)}",
            field="policy.kind",
        )
    _positive("policy", snapshot_interval_s=policy.snapshot_interval_s)
    reward: RewardSettings = _build(RewardSettings, _table(merged, "reward"), "reward")
    _positive("reward", window_s=reward.window_s, max_cost_usd=reward.max_cost_usd,
              max_latency_ms=reward.max_latency_ms, max_tokens=reward.max_tokens)  # fmt: skip
    _finite("reward", default_reward=reward.default_reward)
    _finite("reward", at_least=0.0, clock_skew_s=reward.clock_skew_s)
    if reward.combine not in COMBINE_RULES:
        raise ConfigError(
            f"reward.combine: {reward.combine!r} is not one of {', '.join(COMBINE_RULES)}",
            field="reward.combine",
        )
    if reward.on_missing not in ("skip", "default"):
        raise ConfigError(
            "reward.on_missing: must be 'skip' or 'default'", field="reward.on_missing"
        )
    models = merged.get("models", [])
    if not isinstance(models, list):
        raise ConfigError("models: expected an array of tables", field="models")
    catalog = Catalog(tuple(_model(m) for m in models))
    objectives = {
        name: _objective(name, entry) for name, entry in _table(merged, "objectives").items()
    }
    objective_table = _table(merged, "objective")
    if set(objective_table) - {"default"}:
        unknown_keys = ", ".join(sorted(set(objective_table) - {"default"}))
        raise ConfigError(f"objective: unknown key(s) {unknown_keys}", field="objective")
    default_objective = str(objective_table.get("default", "balanced"))
    policies = {"default": policy}
    for name, entry in _table(merged, "policies").items():
        named: PolicySettings = _build(
            PolicySettings,
            {"snapshot_path": None, "min_probability": policy.min_probability, **entry},
            f"policies.{name}",
            vw_args=tuple, snapshot_path=Path,
        )  # fmt: skip
        if named.kind not in POLICY_KINDS:
            raise ConfigError(f"policies.{name}.kind: unknown kind", field=f"policies.{name}.kind")
        if named.kind == "fixed" and named.fixed_model not in catalog:
            raise ConfigError(f"policies.{name}.fixed_model: not in the catalogue", field=name)
        policies[name] = named
    tenants = merged.get("tenants", [])
    rules = merged.get("rules", [])
    if not isinstance(tenants, list) or not isinstance(rules, list):
        raise ConfigError("tenants and rules: expected arrays of tables", field="tenants")
    access = access_from_config(
        _table(merged, "auth"),
        tenants,
        models=frozenset(catalog.ids),
        objectives=frozenset(objectives),
        policies=frozenset(policies),
        store_prompts_default=log.store_prompts,
    )
    languages = _table(merged, "languages")
    if set(languages) - {"require_tagged"}:
        unknown_keys = ", ".join(sorted(set(languages) - {"require_tagged"}))
        raise ConfigError(f"languages: unknown key(s) {unknown_keys}", field="languages")
    tagged = languages.get("require_tagged", [])
    if not isinstance(tagged, list) or not all(isinstance(x, str) for x in tagged):
        raise ConfigError("languages.require_tagged: expected a list of strings", field="languages")
    try:
        health = HealthSettings(**_table(merged, "health"))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"health: {exc}", field="health") from exc
    tls: TLSSettings = _build(
        TLSSettings, _table(merged, "tls"), "tls",
        cert_file=Path, key_file=Path, client_ca_file=Path,
    )  # fmt: skip
    if tls.enabled != (tls.key_file is not None) or (
        tls.require_client_auth and not tls.client_ca_file
    ):
        raise ConfigError(
            "tls: cert_file and key_file go together; require_client_auth needs client_ca_file",
            field="tls",
        )
    feature_table = dict(_table(merged, "features"))
    if feature_table.get("semantic_cache") == "":
        del feature_table["semantic_cache"]  # empty: the table shipped with banditroute
    features: FeatureSettings = _build(
        FeatureSettings, feature_table, "features", semantic_cache=Path
    )
    sessions: SessionSettings = _build(SessionSettings, _table(merged, "sessions"), "sessions")
    _positive("sessions", ttl_s=sessions.ttl_s, max_sessions=sessions.max_sessions)
    return Settings(
        catalog=catalog,
        objectives=objectives,
        default_objective=default_objective,
        server=server,
        log=log,
        policy=policy,
        reward=reward,
        access=access,
        rules=rules_from_config(rules, frozenset(catalog.ids)),
        language_tagged=frozenset(tagged),
        health=health,
        policies=policies,
        tls=tls,
        features=features,
        cluster=_cluster(_table(merged, "cluster"), log.path, tls),
        sessions=sessions,
        source=source,
    )


def _default_document() -> dict[str, Any]:
    text = resources.files("banditroute").joinpath("default_config.toml").read_text("utf-8")
    return tomllib.loads(text)


def load_settings(path: Path | None = None) -> Settings:
    """Settings from a TOML file merged over the embedded defaults (defaults alone if None)."""
    if path is None:
        return settings_from_mapping({}, source=DEFAULT_SOURCE)
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--config: no such file {str(path)!r}", field="config") from None
    except OSError as exc:  # a directory, no permission, an I/O error
        raise ConfigError(
            f"--config: cannot read {str(path)!r}: {exc.strerror or exc}", field="config"
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"--config: {str(path)!r} is not UTF-8 text (byte {exc.start} is not valid UTF-8)",
            field="config",
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config: {path} is not valid TOML: {exc}", field="config") from exc
    return settings_from_mapping(data, source=str(path))


def reread_settings(current: Settings) -> Settings:
    """The settings a server running on ``current`` would start with now: the same source
    read again (the embedded defaults if it had no file), with the same command-line
    overrides. ConfigError (naming the key) if the file is no longer valid, or if ``current``
    was not read from a file at all (built in-process from a mapping)."""
    source = current.source
    if source != DEFAULT_SOURCE and source.startswith("<"):
        raise ConfigError(
            f"config: these settings were built from {source}, not read from a file; there "
            "is nothing to read again",
            field="config",
        )
    fresh = load_settings(None if source == DEFAULT_SOURCE else Path(source))
    return fresh.with_overrides(**current.overrides)


def config_path_from_environment() -> Path | None:
    """The config file named by BANDITROUTE_CONFIG, if set (the only environment read)."""
    value = os.environ.get("BANDITROUTE_CONFIG")
    return Path(value) if value else None


def as_policy_kind(value: str) -> PolicyKind:
    """Validate a policy kind given on the command line."""
    if value not in POLICY_KINDS:
        raise ConfigError(f"--policy: {value!r} is not one of {', '.join(POLICY_KINDS)}")
    return cast(PolicyKind, value)
