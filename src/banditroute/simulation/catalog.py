"""The model catalogue of a simulation run, and the costs and token counts a table lacks.

A table's models are looked up in the configured catalogue, first by exact id, then by a
normalised name (:func:`banditroute.catalog.match_model`).
A model found there keeps its prices and latency prior. A model not found gets prices fitted by
least squares on the table's realised cost:

* with response lengths: ``cost = in_price * input_tokens + out_price * output_tokens``;
* without them: ``cost = in_price * input_tokens + c``, and ``out_price = c / typical_output``;

(non-negative coefficients; token counts are characters / 3.85). Its latency prior comes from
:data:`LATENCY_PRIORS` or, failing that, from its price tier. Every choice is recorded in
``notes`` so the output can say how cost and latency were derived.

Per (prompt, model) the simulation then uses: the table's ``cost_usd`` where present, otherwise
the catalogue price of the prompt's input tokens and the call's output tokens; output tokens are
the table's ``output_tokens``, else ``response_chars / 3.85``, else the model's typical output.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from banditroute.catalog import CHARS_PER_TOKEN, Catalog, ModelSpec, match_model, normalise
from banditroute.errors import ConfigError
from banditroute.outcome_tables import FloatMatrix, OutcomeTable

LATENCY_PRIORS: dict[str, tuple[float, float]] = {
    "gemini-2.5-pro": (1800.0, 140.0),
    "gemini-2.5-flash": (500.0, 200.0),
    "llama-3.1-8b": (250.0, 160.0),
    "mistral-large-2512": (450.0, 60.0),
    "mixtral-8x7b": (300.0, 90.0),
    "gpt-4-1106": (600.0, 30.0),
}
"""(time to first token in ms, decode tokens/s) by normalised model name: rough public figures
for models that are not in the configured catalogue. Used only to simulate latency."""

BUILT_CONTEXT_WINDOW = 1_000_000
"""Context window given to a model built from a table (the table shows it answered every prompt)."""


@dataclass(frozen=True)
class RunCatalog:
    """The catalogue the simulated router uses, the derived per-call arrays and how."""

    catalog: Catalog
    input_tokens: FloatMatrix
    output_tokens: FloatMatrix
    cost_usd: FloatMatrix
    notes: tuple[str, ...]


def _fit_prices(
    cost: FloatMatrix, input_tokens: FloatMatrix, output_tokens: FloatMatrix | None
) -> tuple[float, float]:
    """Non-negative least squares of cost on (input, output) tokens or (input, 1)."""
    ok = np.isfinite(cost) & np.isfinite(input_tokens)
    if output_tokens is not None:
        ok &= np.isfinite(output_tokens)
        second = output_tokens[ok]
    else:
        second = np.ones(int(ok.sum()))
    x = np.stack([input_tokens[ok], second], axis=1)
    y = cost[ok]
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    if coef[0] < 0 or coef[1] < 0:
        # Drop the negative term and refit the other alone.
        keep = 1 if coef[0] < 0 else 0
        column = x[:, keep]
        value = max(float(column @ y) / max(float(column @ column), 1e-30), 0.0)
        coef = np.zeros(2)
        coef[keep] = value
    return float(coef[0]), float(coef[1])


def _latency_prior(model_id: str, tier: int) -> tuple[float, float, str]:
    key = normalise(model_id)
    for name, (ttft, speed) in LATENCY_PRIORS.items():
        if key.startswith(name):
            return ttft, speed, "built-in prior"
    return 400.0 + 200.0 * tier, max(100.0 - 15.0 * tier, 20.0), f"price-tier {tier} default"


def build_run_catalog(table: OutcomeTable, base: Catalog, *, arg: str = "--outcomes") -> RunCatalog:
    """Match or build a catalogue entry for each model of ``table`` and derive per-call costs."""
    n, k = table.n_prompts, table.n_models
    chars = np.array([len(p) for p in table.prompts], dtype=np.float64)
    estimated_in = np.repeat((chars / CHARS_PER_TOKEN)[:, None], k, axis=1)
    input_tokens = np.where(np.isfinite(table.input_tokens), table.input_tokens, estimated_in)
    from_chars = table.response_chars / CHARS_PER_TOKEN
    known_out = np.where(np.isfinite(table.output_tokens), table.output_tokens, from_chars)
    notes: list[str] = list(table.notes)
    if np.all(np.isfinite(table.input_tokens)):
        notes.append("input tokens: from the table")
    else:
        notes.append("input tokens: prompt characters / 3.85 where the table has none")
    specs: list[ModelSpec] = []
    for j, model_id in enumerate(table.models):
        cost = table.cost_usd[:, j]
        out = known_out[:, j].copy()
        has_out = bool(np.isfinite(out).any())
        mean_out = float(np.nanmean(out)) if has_out else None
        matched = match_model(model_id, base)
        if matched is not None:
            spec = replace(matched, id=model_id)
            how = "catalogue entry" if matched.id == model_id else f"catalogue entry {matched.id!r}"
            if mean_out is not None:
                spec = replace(spec, typical_output_tokens=max(1, round(mean_out)))
            notes.append(
                f"{model_id}: prices and latency prior from the {how} "
                f"(${spec.input_usd_per_mtok:g}/${spec.output_usd_per_mtok:g} per Mtok in/out)"
            )
        elif np.isfinite(cost).any():
            typical = max(1, round(mean_out)) if mean_out is not None else 150
            a, b = _fit_prices(cost, input_tokens[:, j], out if has_out else None)
            out_price = b if has_out else b / typical
            tier = ModelSpec("x", "x", a * 1e6, out_price * 1e6).price_tier
            ttft, speed, source = _latency_prior(model_id, tier)
            spec = ModelSpec(
                id=model_id,
                provider=model_id.split("/", 1)[0] if "/" in model_id else "unknown",
                input_usd_per_mtok=a * 1e6,
                output_usd_per_mtok=out_price * 1e6,
                context_window=BUILT_CONTEXT_WINDOW,
                ttft_ms=ttft,
                tokens_per_s=speed,
                typical_output_tokens=typical,
            )
            fit = "input/output tokens" if has_out else f"input tokens + a constant ({typical} tok)"
            notes.append(
                f"{model_id}: not in the catalogue; prices fitted on the table's cost over "
                f"{fit}: ${spec.input_usd_per_mtok:.3g}/${spec.output_usd_per_mtok:.3g} per Mtok "
                f"in/out; latency {source} ({ttft:g} ms + tokens / {speed:g} tok/s)"
            )
        else:
            raise ConfigError(
                f"{arg}: model {model_id!r} has no cost in the table and no catalogue entry to "
                "price it (add it to the config's [[models]])",
                field=arg,
            )
        specs.append(spec)
        if mean_out is None and matched is None:
            # Output tokens implied by the realised cost under the fitted prices.
            implied = (cost - input_tokens[:, j] * spec.input_usd_per_mtok / 1e6) / (
                spec.output_usd_per_mtok / 1e6
            )
            known_out[:, j] = np.clip(implied, 0.0, None)
            notes.append(
                f"{model_id}: output tokens unknown; implied by each call's cost under the "
                f"fitted prices (mean {np.nanmean(known_out[:, j]):.0f})"
            )
        elif mean_out is None:
            notes.append(
                f"{model_id}: output tokens unknown; the model's typical "
                f"{spec.typical_output_tokens} tokens used for cost and latency"
            )
    typical_out = np.array([s.typical_output_tokens for s in specs], dtype=np.float64)
    output_tokens = np.where(np.isfinite(known_out), known_out, typical_out[None, :])
    inp = np.array([s.input_usd_per_mtok for s in specs]) / 1e6
    outp = np.array([s.output_usd_per_mtok for s in specs]) / 1e6
    catalogue_cost = input_tokens * inp[None, :] + output_tokens * outp[None, :]
    cost_usd = np.where(np.isfinite(table.cost_usd), table.cost_usd, catalogue_cost)
    missing = int(np.sum(~np.isfinite(table.cost_usd)))
    if missing == n * k:
        notes.append("cost: the table has none; priced from catalogue prices x token counts")
    elif missing:
        notes.append(f"cost: {missing} missing cell(s) priced from catalogue prices")
    else:
        notes.append("cost: the table's realised cost_usd")
    if not np.all(np.isfinite(cost_usd)):
        raise ConfigError(f"{arg}: some costs could not be derived", field=arg)
    return RunCatalog(Catalog(tuple(specs)), input_tokens, output_tokens, cost_usd, tuple(notes))
