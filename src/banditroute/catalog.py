"""The model catalogue: what each model costs, what it can do and how fast it tends to be.

Prices are USD per million tokens. The default catalogue's prices for the RouterBench models
reproduce the realised costs in RouterBench's outcome table to within about 3% (a least-squares
fit of cost on prompt and response length gives the same per-token prices), so simulations,
logs and live traffic price calls the same way. Latency figures are priors (time to first token
and decode speed), replaced by measured statistics as feedback arrives.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from banditroute.errors import ConfigError, InvalidArgument
from banditroute.privacy import DATA_CLASSES

CHARS_PER_TOKEN = 3.85
"""Characters per token used to estimate token counts from text (fit on RouterBench costs)."""


@dataclass(frozen=True)
class ModelSpec:
    """One model the router may choose, with its prices, limits, tags and latency prior."""

    id: str
    provider: str
    input_usd_per_mtok: float
    output_usd_per_mtok: float
    context_window: int = 8192
    capabilities: frozenset[str] = frozenset()
    languages: frozenset[str] = frozenset()
    data_classes: frozenset[str] = frozenset({"public"})
    ttft_ms: float = 500.0
    tokens_per_s: float = 50.0
    typical_output_tokens: int = 150
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_in_flight: int | None = None

    def __post_init__(self) -> None:
        if not self.id:
            raise ConfigError("model id must not be empty", field="models.id")
        for name in ("input_usd_per_mtok", "output_usd_per_mtok", "ttft_ms"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"model {self.id!r}: {name} must be >= 0", field=name)
        if not self.tokens_per_s > 0 or self.context_window <= 0:  # NaN is not > 0
            raise ConfigError(
                f"model {self.id!r}: tokens_per_s and context_window must be > 0",
                field="tokens_per_s",
            )
        if self.typical_output_tokens < 0:  # would price and time a call below its prompt's
            raise ConfigError(
                f"model {self.id!r}: typical_output_tokens must be >= 0",
                field="typical_output_tokens",
            )
        unknown = self.data_classes - set(DATA_CLASSES)
        if unknown:  # a misspelt class would keep the model from every request of that class
            raise ConfigError(
                f"model {self.id!r}: data_classes {', '.join(sorted(unknown))} are not among "
                f"{', '.join(DATA_CLASSES)}",
                field="data_classes",
            )
        for name in ("requests_per_minute", "tokens_per_minute", "max_in_flight"):
            limit = getattr(self, name)
            if limit is not None and (isinstance(limit, bool) or limit < 1):
                raise ConfigError(
                    f"model {self.id!r}: {name} must be an integer >= 1, got {limit!r}",
                    field=f"models.{name}",
                )

    def __hash__(self) -> int:
        # Hash by id alone (equal specs have equal ids): the default hash over every field,
        # frozensets included, cost microseconds on each of Route's per-model cache lookups.
        return hash(self.id)

    def price(self, input_tokens: int, output_tokens: int) -> float:
        """USD cost of a call with these token counts."""
        return (
            input_tokens * self.input_usd_per_mtok + output_tokens * self.output_usd_per_mtok
        ) / 1e6

    def expected_latency_ms(self, output_tokens: int | None = None) -> float:
        """Prior latency: time to first token plus output tokens over decode speed."""
        tokens = self.typical_output_tokens if output_tokens is None else output_tokens
        return self.ttft_ms + 1000.0 * tokens / self.tokens_per_s

    @property
    def blended_usd_per_mtok(self) -> float:
        """Price of a typical call's token mix (3 input tokens per output token)."""
        return 0.75 * self.input_usd_per_mtok + 0.25 * self.output_usd_per_mtok

    @property
    def price_tier(self) -> int:
        """Coarse price class 0..4 (under $0.5, $2, $5, $15 and above per million tokens)."""
        blended = self.blended_usd_per_mtok
        return sum(blended >= edge for edge in (0.5, 2.0, 5.0, 15.0))


@dataclass(frozen=True)
class Catalog:
    """An ordered, immutable set of models, looked up by id."""

    models: tuple[ModelSpec, ...]
    _by_id: Mapping[str, ModelSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_id: dict[str, ModelSpec] = {}
        for model in self.models:
            if model.id in by_id:
                raise ConfigError(f"model {model.id!r} is listed twice", field="models")
            by_id[model.id] = model
        if not by_id:
            raise ConfigError("the catalogue lists no models", field="models")
        object.__setattr__(self, "_by_id", by_id)

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self.models)

    def __len__(self) -> int:
        return len(self.models)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._by_id

    @property
    def ids(self) -> tuple[str, ...]:
        """Model ids in catalogue order."""
        return tuple(m.id for m in self.models)

    def get(self, model_id: str, *, field: str = "model") -> ModelSpec:
        """The model with this id; InvalidArgument naming ``field`` if there is none."""
        try:
            return self._by_id[model_id]
        except KeyError:
            raise InvalidArgument(f"{field}: unknown model {model_id!r}", field=field) from None

    def subset(self, model_ids: Iterable[str]) -> Catalog:
        """A catalogue holding only these models, in catalogue order."""
        wanted = set(model_ids)
        return Catalog(tuple(m for m in self.models if m.id in wanted))


def normalise(model_id: str) -> str:
    """A loose name for matching ids across sources: lower case, no org, no chat/instruct tags."""
    name = model_id.rsplit("/", 1)[-1].lower()
    for tag in ("-instruct", "-chat", "-preview", "-hf"):
        name = name.replace(tag, "")
    return re.sub(r"-v\d+\.\d+$", "", name)


def match_model(model_id: str, catalog: Catalog) -> ModelSpec | None:
    """The catalogue entry for another source's model id (an outcome table's, say): exact, else
    a unique normalised match (``mistralai/Mixtral-8x7B-Instruct-v0.1`` matches
    ``mistralai/mixtral-8x7b-chat``)."""
    if model_id in catalog:
        return catalog.get(model_id)
    key = normalise(model_id)
    found = [m for m in catalog if normalise(m.id) == key]
    return found[0] if len(found) == 1 else None
