"""Changing a running router's configuration: what changed, what may change, and re-reading it.

A reload swaps in new settings without a restart (:meth:`banditroute.router.Router.reload`):
models added, removed or re-priced, objectives, tenants and keys, rules, budgets, health and
reward settings, request size limits. What the running process was built from cannot change
that way (:data:`RESTART_ONLY`: where it listens, its TLS, its processes and threads, its log,
its policies (all but their exploration floor, ``min_probability``), its semantic features'
embedder); a new configuration that changes any of it is refused whole, naming the key, and the
old settings stay. Learning is kept: policies key their state by model id, so a removed model
is simply no longer eligible and an added one starts from the prior.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from banditroute.canonical import canonical_json, sha256_hex
from banditroute.catalog_checks import warn_unserved_data_classes
from banditroute.config import Settings, reread_settings
from banditroute.errors import ConfigError, FailedPrecondition

if TYPE_CHECKING:
    from banditroute.router import Router

log = structlog.get_logger(__name__)

RESTART_ONLY: tuple[str, ...] = (
    "server.host", "server.port", "server.workers", "server.max_workers",
    "server.max_concurrent_rpcs", "server.max_metadata_bytes", "server.merge_interval_s",
    "server.freeze_gc", "server.grace_s", "server.worker_restarts_per_minute",
    "server.metrics_port", "server.metrics_host", "tls", "log",
    "policy", "policies",
    "health.latency_window", "features", "cluster",
)  # fmt: skip
"""Keys (or whole sections) that take effect only when the server starts."""

_RENAMED = {
    "access.required": "auth.required",
    "access.admin_key_sha256": "auth.admin_key_sha256",
    "access.tenants": "tenants",
    "default_objective": "objective.default",
    "language_tagged": "languages.require_tagged",
}
"""Settings attributes whose configuration key is spelt differently."""


@dataclass(frozen=True)
class ConfigChange:
    """What a reload changed: model ids added, removed and changed (price, limits, tags...),
    the other configuration keys whose values changed, and the new settings' digest."""

    models_added: tuple[str, ...]
    models_removed: tuple[str, ...]
    models_changed: tuple[str, ...]
    keys: tuple[str, ...]
    digest: str

    @property
    def changed(self) -> bool:
        """True when the new settings differ from the old ones at all."""
        return bool(self.models_added or self.models_removed or self.models_changed or self.keys)


def _plain(value: Any) -> Any:
    """A JSON-able view of settings: dataclasses as their compared fields, sets sorted."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.compare
        }
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return sorted(_plain(v) for v in value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> dict[str, Any]:
    """Leaves of nested tables by dotted key (lists are leaves)."""
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else key, out)
    else:
        out[prefix] = value
    return out


def _config_key(attribute: str) -> str:
    """The configuration key of a dotted settings attribute path."""
    for name, key in _RENAMED.items():
        if attribute == name or attribute.startswith(name + "."):
            return key + attribute[len(name) :]
    return attribute


def _keys(settings: Settings) -> dict[str, Any]:
    plain = _plain(settings)
    plain.pop("catalog")
    plain["policies"].pop("default", None)  # the [policy] section again
    return {_config_key(k): v for k, v in _flatten(plain, "", {}).items()}


def settings_digest(settings: Settings) -> str:
    """A short digest of everything the settings hold (the same in every process)."""
    return sha256_hex(canonical_json(_plain(settings)))[:16]


RELOADABLE_POLICY_KEYS: tuple[str, ...] = ("min_probability",)
"""Keys of ``[policy]`` and ``[policies.NAME]`` a reload may change: the router reads them at
each decision (the exploration floor), while the rest of those sections built the policies."""


def _restart_only(key: str) -> bool:
    section, _, leaf = key.rpartition(".")
    if leaf in RELOADABLE_POLICY_KEYS and (
        section == "policy" or (section.startswith("policies.") and section.count(".") == 1)
    ):
        return False
    return any(key == name or key.startswith(name + ".") for name in RESTART_ONLY)


def config_change(old: Settings, new: Settings) -> ConfigChange:
    """What changes from ``old`` to ``new``; FailedPrecondition naming the first key that only
    a restart can change."""
    before, after = _keys(old), _keys(new)
    keys = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    frozen = [key for key in keys if _restart_only(key)]
    if frozen:
        raise FailedPrecondition(
            f"{frozen[0]}: changes only with a restart (the configuration changes "
            f"{', '.join(frozen)}); reload refused, the running settings stay",
            field=frozen[0],
        )
    old_models = {m.id: m for m in old.catalog}
    new_models = {m.id: m for m in new.catalog}
    return ConfigChange(
        models_added=tuple(m for m in new.catalog.ids if m not in old_models),
        models_removed=tuple(m for m in old.catalog.ids if m not in new_models),
        models_changed=tuple(
            m for m in new.catalog.ids if m in old_models and old_models[m] != new_models[m]
        ),
        keys=tuple(keys),
        digest=settings_digest(new),
    )


def reload_from_source(router: Router) -> ConfigChange:
    """Read the router's configuration source again and apply it (:meth:`Router.reload`),
    logging ``config_reloaded`` or ``config_reload_failed``. An invalid file or a restart-only
    change is FailedPrecondition naming the key, and the router keeps its settings."""
    source = router.settings.source
    try:
        try:
            fresh = reread_settings(router.settings)
        except ConfigError as error:
            raise FailedPrecondition(
                f"{error.message} (reload refused, the running settings stay)",
                field=error.field,
            ) from error
        change = router.reload(fresh)
    except FailedPrecondition as error:
        log.warning("config_reload_failed", config=source, key=error.field, reason=error.message)
        raise
    log.info(
        "config_reloaded",
        config=source,
        models_added=list(change.models_added),
        models_removed=list(change.models_removed),
        models_changed=list(change.models_changed),
        keys=list(change.keys),
        digest=change.digest,
    )
    warn_unserved_data_classes(router.settings.catalog)
    return change


__all__ = ["RESTART_ONLY", "ConfigChange", "config_change", "reload_from_source", "settings_digest"]
