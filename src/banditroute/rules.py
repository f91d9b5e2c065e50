"""Routing rules (hybrid routing): config rules that pin, restrict or exclude models.

Rules are checked in configuration order before the bandit chooses; the first rule whose
every condition matches applies, and the response names it. A rule may match on the
tenant, the detected language, prompt markers (all listed must be present), request tags,
the data classification and the prompt's token estimate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from banditroute.errors import ConfigError
from banditroute.features import MARKERS, PromptFeatures
from banditroute.tenancy import string_set


@dataclass(frozen=True)
class RoutingRule:
    """When every condition holds, the eligible set is pinned, restricted or trimmed."""

    name: str
    tenants: frozenset[str] = frozenset()
    languages: frozenset[str] = frozenset()
    markers: frozenset[str] = frozenset()
    tags: Mapping[str, str] = field(default_factory=dict)
    data_classes: frozenset[str] = frozenset()
    min_tokens: int | None = None
    max_tokens: int | None = None
    pin: str | None = None
    restrict: frozenset[str] = frozenset()
    exclude: frozenset[str] = frozenset()

    def matches(
        self, tenant: str, features: PromptFeatures, tags: Mapping[str, str], data_class: str
    ) -> bool:
        """Whether every condition of the rule holds for this request."""
        return (
            (not self.tenants or tenant in self.tenants)
            and (not self.languages or features.language in self.languages)
            and self.markers.issubset(features.markers)
            and all(tags.get(k) == v for k, v in self.tags.items())
            and (not self.data_classes or data_class in self.data_classes)
            and (self.min_tokens is None or features.conversation_tokens >= self.min_tokens)
            and (self.max_tokens is None or features.conversation_tokens <= self.max_tokens)
        )

    def allows(self, model: str) -> str | None:
        """None if the rule lets ``model`` stay eligible, else why not."""
        if self.pin is not None and model != self.pin:
            return f"rule {self.name!r} pins {self.pin}"
        if self.restrict and model not in self.restrict:
            return f"rule {self.name!r} restricts to {', '.join(sorted(self.restrict))}"
        if model in self.exclude:
            return f"rule {self.name!r} excludes it"
        return None


def first_match(
    rules: Sequence[RoutingRule],
    tenant: str,
    features: PromptFeatures,
    tags: Mapping[str, str],
    data_class: str,
) -> RoutingRule | None:
    """The first rule that matches, if any."""
    for rule in rules:
        if rule.matches(tenant, features, tags, data_class):
            return rule
    return None


_KEYS = {"name", "match", "pin", "restrict", "exclude"}
_MATCH_KEYS = {
    "tenants",
    "languages",
    "markers",
    "tags",
    "data_classes",
    "min_tokens",
    "max_tokens",
}


def rules_from_config(entries: list[Any], models: frozenset[str]) -> tuple[RoutingRule, ...]:
    """Validate ``[[rules]]`` entries: known keys, known models and markers, one action."""
    rules: list[RoutingRule] = []
    for index, entry in enumerate(entries):
        where = f"rules[{index}]"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise ConfigError(f"{where}: each rule needs a name", field="rules")
        unknown = set(entry) - _KEYS
        match = entry.get("match", {})
        if unknown or not isinstance(match, Mapping) or set(match) - _MATCH_KEYS:
            bad = sorted(
                unknown | (set(match) - _MATCH_KEYS if isinstance(match, Mapping) else set())
            )
            raise ConfigError(f"{where}: unknown key(s) {', '.join(bad)}", field="rules")
        pin = entry.get("pin")
        restrict = string_set(entry.get("restrict", []), f"{where}.restrict")
        exclude = string_set(entry.get("exclude", []), f"{where}.exclude")
        named = restrict | exclude | ({pin} if isinstance(pin, str) else set())
        if pin is not None and not isinstance(pin, str):
            raise ConfigError(f"{where}.pin: expected a model id", field=f"{where}.pin")
        if named - models:
            raise ConfigError(
                f"{where}: unknown model(s) {', '.join(sorted(named - models))}", field="rules"
            )
        if pin is None and not restrict and not exclude:
            raise ConfigError(f"{where}: needs pin, restrict or exclude", field="rules")
        markers = string_set(match.get("markers", []), f"{where}.match.markers")
        if markers - set(MARKERS):
            raise ConfigError(f"{where}.match.markers: unknown marker(s)", field="rules")
        tags = match.get("tags", {})
        if not isinstance(tags, Mapping):
            raise ConfigError(f"{where}.match.tags: expected a table", field="rules")
        bounds = {k: match.get(k) for k in ("min_tokens", "max_tokens")}
        for key, value in bounds.items():
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ConfigError(f"{where}.match.{key}: expected an integer >= 0", field="rules")
        rules.append(
            RoutingRule(
                name=entry["name"],
                tenants=string_set(match.get("tenants", []), f"{where}.match.tenants"),
                languages=string_set(match.get("languages", []), f"{where}.match.languages"),
                markers=markers,
                tags={str(k): str(v) for k, v in tags.items()},
                data_classes=string_set(
                    match.get("data_classes", []), f"{where}.match.data_classes"
                ),
                min_tokens=bounds["min_tokens"],
                max_tokens=bounds["max_tokens"],
                pin=pin,
                restrict=restrict,
                exclude=exclude,
            )
        )
    return tuple(rules)
