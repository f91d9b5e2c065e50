"""Tenants, API keys and access control: who is calling, and what they may use.

API keys are never stored: the configuration lists the SHA-256 hex digest of each key
(``banditroute hash-key KEY`` prints it). A call presents its key in the ``x-api-key``
metadata entry (or ``authorization: Bearer KEY``); the key's digest names its tenant. Admin
keys are listed apart and may call admin RPCs and read every tenant's figures.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from banditroute.errors import ConfigError, PermissionDenied, Unauthenticated

BudgetPeriod = Literal["hour", "day", "month"]
DEFAULT_TENANT = "default"


def hash_key(api_key: str) -> str:
    """The SHA-256 hex digest under which an API key is configured."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class BudgetSettings:
    """A tenant's spend budget: a per-request target the pacer steers to, and a hard cap."""

    period: BudgetPeriod = "day"
    limit_usd: float | None = None
    target_usd_per_request: float | None = None


@dataclass(frozen=True)
class Experiment:
    """An A/B split of a tenant's traffic between named policies, sticky per ``key_tag``."""

    key_tag: str
    arms: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class Tenant:
    """One tenant: its keys, allow-lists, privacy setting, budget, experiment and shadows."""

    name: str
    api_key_sha256: frozenset[str] = frozenset()
    models: frozenset[str] = frozenset()
    objectives: frozenset[str] = frozenset()
    default_objective: str = ""
    store_prompts: bool = False
    budget: BudgetSettings | None = None
    experiment: Experiment | None = None
    shadow_policies: tuple[str, ...] = ()
    sessions: bool = True
    """Whether a Route's ``session_id`` keeps the session on its model (see sessions.py)."""

    def check_model(self, model: str, *, field: str) -> None:
        """PermissionDenied unless the tenant's allow-list admits ``model``."""
        if self.models and model not in self.models:
            raise PermissionDenied(
                f"{field}: model {model!r} is not allowed for tenant {self.name!r}", field=field
            )

    def check_objective(self, objective: str) -> None:
        """PermissionDenied unless the tenant's allow-list admits the objective."""
        if self.objectives and objective not in self.objectives:
            raise PermissionDenied(
                f"objective: {objective!r} is not allowed for tenant {self.name!r}",
                field="objective",
            )


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    tenant: Tenant
    admin: bool = False

    def require_admin(self, rpc: str) -> None:
        """PermissionDenied unless the caller used an admin key."""
        if not self.admin:
            raise PermissionDenied(f"{rpc} needs an admin API key")


@dataclass(frozen=True)
class AccessSettings:
    """Every tenant, which keys map to which, and whether a key is required at all."""

    required: bool = False
    admin_key_sha256: frozenset[str] = frozenset()
    tenants: Mapping[str, Tenant] = field(
        default_factory=lambda: {DEFAULT_TENANT: Tenant(DEFAULT_TENANT)}
    )
    _by_key: Mapping[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_key: dict[str, str] = {}
        for tenant in self.tenants.values():
            for digest in tenant.api_key_sha256:
                if digest in by_key or digest in self.admin_key_sha256:
                    raise ConfigError(
                        f"tenants.{tenant.name}.api_key_sha256: a key is listed twice",
                        field="tenants",
                    )
                by_key[digest] = tenant.name
        if DEFAULT_TENANT not in self.tenants:
            raise ConfigError("tenants: a tenant named 'default' is required", field="tenants")
        object.__setattr__(self, "_by_key", by_key)

    @property
    def callers(self) -> int:
        """How many tenants can make calls: those with keys, and the default tenant when a call
        may come without a key or with an admin key (model health needs it: one tenant alone
        may trip a breaker only where it is the only one)."""
        default_reachable = not self.required or bool(self.admin_key_sha256)
        return sum(
            1
            for tenant in self.tenants.values()
            if tenant.api_key_sha256 or (tenant.name == DEFAULT_TENANT and default_reachable)
        )

    def tenant(self, name: str) -> Tenant:
        """The configured tenant ``name``; a name the configuration does not list (only
        possible when the Router is driven in-process, since the server authenticates every
        call) is a tenant without restrictions."""
        tenant = self.tenants.get(name)
        return Tenant(name) if tenant is None else tenant

    def authenticate(self, api_key: str | None) -> Principal:
        """The caller behind ``api_key``; Unauthenticated if it is missing (when required) or
        unknown. Without a key (and none required) the caller is the default tenant."""
        if not api_key:
            if self.required:
                raise Unauthenticated("x-api-key: an API key is required")
            return Principal(self.tenants[DEFAULT_TENANT])
        digest = hash_key(api_key)
        if digest in self.admin_key_sha256:
            return Principal(self.tenants[DEFAULT_TENANT], admin=True)
        name = self._by_key.get(digest)
        if name is None:
            raise Unauthenticated("x-api-key: unknown API key")
        return Principal(self.tenants[name])


def string_set(value: Any, where: str) -> frozenset[str]:
    """A configuration list of strings as a set; ConfigError naming ``where`` otherwise."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a list of strings", field=where)
    return frozenset(value)


def _digests(value: Any, where: str) -> frozenset[str]:
    """Key digests from the configuration, in lower case: keys are hashed to lower-case hex,
    so a digest written in upper case (admin or tenant alike) still matches its key."""
    return frozenset(digest.lower() for digest in string_set(value, where))


def _positive_number(value: Any) -> bool:
    """A finite number > 0 (not a bool: true is no amount; NaN passed a ``<= 0`` check)."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def _budget(entry: Any, where: str) -> BudgetSettings:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: expected a table", field=where)
    unknown = set(entry) - {"period", "limit_usd", "target_usd_per_request"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}", field=where)
    period = entry.get("period", "day")
    if period not in ("hour", "day", "month"):
        raise ConfigError(f"{where}.period: must be hour, day or month", field=f"{where}.period")
    values: dict[str, float | None] = {}
    for key in ("limit_usd", "target_usd_per_request"):
        value = entry.get(key)
        if value is not None and not _positive_number(value):
            raise ConfigError(f"{where}.{key}: must be a positive number", field=f"{where}.{key}")
        values[key] = None if value is None else float(value)
    return BudgetSettings(period, values["limit_usd"], values["target_usd_per_request"])


def _experiment(entry: Any, where: str, policies: frozenset[str]) -> Experiment:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("arms"), list):
        raise ConfigError(f"{where}: expected a table with an 'arms' list", field=where)
    arms: list[tuple[str, float]] = []
    for arm in entry["arms"]:
        if not isinstance(arm, Mapping) or arm.get("policy") not in policies:
            raise ConfigError(
                f"{where}.arms: each arm needs a policy among {', '.join(sorted(policies))}",
                field=f"{where}.arms",
            )
        weight = arm.get("weight", 1.0)
        if not _positive_number(weight):
            raise ConfigError(f"{where}.arms: weights must be positive", field=f"{where}.arms")
        arms.append((str(arm["policy"]), float(weight)))
    if not arms:
        raise ConfigError(f"{where}.arms: at least one arm", field=f"{where}.arms")
    return Experiment(str(entry.get("key_tag", "user")), tuple(arms))


_TENANT_KEYS = {
    "name", "api_key_sha256", "models", "objectives", "default_objective", "store_prompts",
    "budget", "experiment", "shadow_policies", "sessions",
}  # fmt: skip


def access_from_config(
    auth: Mapping[str, Any],
    tenants: list[Any],
    *,
    models: frozenset[str],
    objectives: frozenset[str],
    policies: frozenset[str],
    store_prompts_default: bool,
) -> AccessSettings:
    """Validate the ``[auth]`` table and ``[[tenants]]`` entries against the catalogue."""
    unknown = set(auth) - {"required", "admin_key_sha256"}
    if unknown:
        raise ConfigError(f"auth: unknown key(s) {', '.join(sorted(unknown))}", field="auth")
    required = auth.get("required", False)
    if not isinstance(required, bool):
        raise ConfigError("auth.required: expected true or false", field="auth.required")
    admin = _digests(auth.get("admin_key_sha256", []), "auth.admin_key_sha256")
    parsed: dict[str, Tenant] = {}
    for entry in tenants:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise ConfigError("tenants: each entry needs a name", field="tenants")
        name = entry["name"]
        where = f"tenants.{name}"
        if name in parsed:  # a second entry would silently replace the first, keys and all
            raise ConfigError(f"{where}: the tenant is listed twice", field=where)
        unknown = set(entry) - _TENANT_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}", field=where)
        allowed_models = string_set(entry.get("models", []), f"{where}.models")
        if allowed_models - models:
            unknown_models = ", ".join(sorted(allowed_models - models))
            raise ConfigError(
                f"{where}.models: not in the catalogue: {unknown_models}", field=f"{where}.models"
            )
        allowed_objectives = string_set(entry.get("objectives", []), f"{where}.objectives")
        if allowed_objectives - objectives:
            raise ConfigError(
                f"{where}.objectives: unknown profile(s)", field=f"{where}.objectives"
            )
        shadows = tuple(
            sorted(string_set(entry.get("shadow_policies", []), f"{where}.shadow_policies"))
        )
        if set(shadows) - policies:
            raise ConfigError(
                f"{where}.shadow_policies: unknown policy", field=f"{where}.shadow_policies"
            )
        store_prompts = entry.get("store_prompts", store_prompts_default)
        if not isinstance(store_prompts, bool):
            raise ConfigError(
                f"{where}.store_prompts: expected true or false", field=f"{where}.store_prompts"
            )
        sessions = entry.get("sessions", True)
        if not isinstance(sessions, bool):
            raise ConfigError(
                f"{where}.sessions: expected true or false", field=f"{where}.sessions"
            )
        default_objective = entry.get("default_objective", "")
        if default_objective and default_objective not in objectives:
            raise ConfigError(f"{where}.default_objective: unknown profile", field=where)
        if default_objective and allowed_objectives and default_objective not in allowed_objectives:
            # Every Route without an objective would be PERMISSION_DENIED.
            raise ConfigError(
                f"{where}.default_objective: {default_objective!r} is not among the tenant's "
                "objectives",
                field=f"{where}.default_objective",
            )
        parsed[name] = Tenant(
            name=name,
            api_key_sha256=_digests(entry.get("api_key_sha256", []), f"{where}.api_key_sha256"),
            models=allowed_models,
            objectives=allowed_objectives,
            default_objective=str(default_objective),
            store_prompts=store_prompts,
            budget=_budget(entry["budget"], f"{where}.budget") if "budget" in entry else None,
            experiment=(
                _experiment(entry["experiment"], f"{where}.experiment", policies)
                if "experiment" in entry
                else None
            ),
            shadow_policies=shadows,
            sessions=sessions,
        )
    if DEFAULT_TENANT not in parsed:
        parsed[DEFAULT_TENANT] = Tenant(DEFAULT_TENANT, store_prompts=store_prompts_default)
    return AccessSettings(required=required, admin_key_sha256=admin, tenants=parsed)
