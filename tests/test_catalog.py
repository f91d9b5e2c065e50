"""The model catalogue: prices, latency priors, validation and lookup."""

from __future__ import annotations

import math

import pytest

from banditroute.catalog import Catalog, ModelSpec
from banditroute.config import Settings
from banditroute.errors import ConfigError, InvalidArgument


def _spec(model_id: str = "m", **kwargs: object) -> ModelSpec:
    values: dict[str, object] = {"input_usd_per_mtok": 2.0, "output_usd_per_mtok": 6.0}
    values.update(kwargs)
    return ModelSpec(model_id, "prov", **values)  # type: ignore[arg-type]


def test_price_is_per_million_tokens() -> None:
    """price() charges input and output tokens at their per-million-token rates."""
    spec = _spec(input_usd_per_mtok=10.0, output_usd_per_mtok=30.0)
    assert spec.price(1000, 500) == pytest.approx((1000 * 10.0 + 500 * 30.0) / 1e6)
    assert spec.price(0, 0) == 0.0
    assert spec.price(1_000_000, 0) == pytest.approx(10.0)
    assert spec.price(0, 1_000_000) == pytest.approx(30.0)


def test_default_catalogue_prices_gpt4(default_settings: Settings) -> None:
    """The default GPT-4 entry costs $10 / $30 per million tokens."""
    gpt4 = default_settings.catalog.get("gpt-4-1106-preview")
    assert gpt4.price(2000, 1000) == pytest.approx(0.05)


def test_expected_latency_is_ttft_plus_decode_time() -> None:
    """The latency prior is time to first token plus output tokens over decode speed."""
    spec = _spec(ttft_ms=200.0, tokens_per_s=50.0, typical_output_tokens=100)
    assert spec.expected_latency_ms() == pytest.approx(200.0 + 2000.0)
    assert spec.expected_latency_ms(10) == pytest.approx(200.0 + 200.0)


@pytest.mark.parametrize(
    ("input_price", "output_price", "tier"),
    [(0.2, 0.2, 0), (1.0, 2.0, 1), (2.0, 4.0, 2), (8.0, 16.0, 3), (10.0, 30.0, 4)],
)
def test_price_tier_follows_blended_price(
    input_price: float, output_price: float, tier: int
) -> None:
    """The coarse price tier grows with the blended (3:1 input:output) price."""
    spec = _spec(input_usd_per_mtok=input_price, output_usd_per_mtok=output_price)
    assert spec.blended_usd_per_mtok == pytest.approx(0.75 * input_price + 0.25 * output_price)
    assert spec.price_tier == tier


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"input_usd_per_mtok": -1.0}, "input_usd_per_mtok"),
        ({"output_usd_per_mtok": math.nan}, "output_usd_per_mtok"),
        ({"ttft_ms": math.inf}, "ttft_ms"),
        ({"tokens_per_s": 0.0}, "tokens_per_s"),
        ({"context_window": 0}, "tokens_per_s"),
        ({"tokens_per_s": math.nan}, "tokens_per_s"),
        ({"typical_output_tokens": -100}, "typical_output_tokens"),
        ({"data_classes": frozenset({"publik"})}, "data_classes"),
    ],
)
def test_invalid_model_spec_is_rejected(kwargs: dict[str, object], field: str) -> None:
    """Negative, non-finite or zero numbers in a model entry raise ConfigError naming the field."""
    with pytest.raises(ConfigError) as info:
        _spec(**kwargs)
    assert info.value.field == field


def test_empty_model_id_is_rejected() -> None:
    """A model needs an id."""
    with pytest.raises(ConfigError, match="id"):
        _spec("")


def test_duplicate_ids_are_rejected() -> None:
    """A catalogue listing the same id twice raises ConfigError naming the model."""
    with pytest.raises(ConfigError, match="'a'") as info:
        Catalog((_spec("a"), _spec("b"), _spec("a")))
    assert info.value.field == "models"


def test_empty_catalogue_is_rejected() -> None:
    """A catalogue with no model is a configuration error."""
    with pytest.raises(ConfigError):
        Catalog(())


def test_get_returns_the_model_and_unknown_raises_naming_the_field() -> None:
    """get() finds a model by id; an unknown id raises InvalidArgument with the caller's field."""
    catalog = Catalog((_spec("a"), _spec("b")))
    assert catalog.get("b").id == "b"
    with pytest.raises(InvalidArgument, match="nope") as info:
        catalog.get("nope", field="candidate_models")
    assert info.value.field == "candidate_models"
    assert info.value.status == "INVALID_ARGUMENT"
    with pytest.raises(InvalidArgument) as default_field:
        catalog.get("nope")
    assert default_field.value.field == "model"


def test_catalogue_order_membership_and_subset() -> None:
    """ids keep catalogue order; `in` tests membership; subset keeps catalogue order."""
    catalog = Catalog((_spec("c"), _spec("a"), _spec("b")))
    assert catalog.ids == ("c", "a", "b")
    assert len(catalog) == 3
    assert "a" in catalog
    assert "z" not in catalog
    assert catalog.subset(["b", "c"]).ids == ("c", "b")
