"""Outcome tables: every model's outcome for every prompt, pivoted into dense arrays.

The file format is the one of ``../shared/data/outcomes/README.md``: one row per (prompt, model)
with ``prompt_id``, ``task``, ``prompt``, ``model``, ``quality`` and the nullable ``cost_usd``,
``input_tokens``, ``output_tokens`` and ``response_chars``. :func:`load_outcomes` reads such a
file and returns an :class:`OutcomeTable` with one row per prompt and one column per model;
missing values are NaN. Prompts that some model did not answer are dropped (and counted in
``notes``), so the table stays full-information.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from banditroute.errors import ConfigError

FloatMatrix = npt.NDArray[np.float64]
IntVector = npt.NDArray[np.int64]

HOLDOUT_TENTHS = 3
"""Tenths of every table's prompts held out from tuning (see :meth:`OutcomeTable.holdout_split`)."""


def holdout_bucket(prompt_id: str) -> int:
    """0..9 from a fixed hash of the prompt id: the held-out rule every measurement shares."""
    digest = hashlib.blake2b(prompt_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 10


REQUIRED_COLUMNS: tuple[str, ...] = ("prompt_id", "task", "prompt", "model", "quality")
OPTIONAL_COLUMNS: tuple[str, ...] = ("cost_usd", "input_tokens", "output_tokens", "response_chars")


@dataclass(frozen=True)
class OutcomeTable:
    """A full-information outcome table: ``quality[i, k]`` is model ``k``'s score on prompt ``i``.

    ``cost_usd``, ``input_tokens``, ``output_tokens`` and ``response_chars`` have the same
    ``(prompts, models)`` shape and hold NaN where the source has no value. ``tasks`` are kept
    for reporting only: the simulated router never sees them.
    """

    name: str
    prompt_ids: tuple[str, ...]
    prompts: tuple[str, ...]
    tasks: tuple[str, ...]
    models: tuple[str, ...]
    quality: FloatMatrix
    cost_usd: FloatMatrix
    input_tokens: FloatMatrix
    output_tokens: FloatMatrix
    response_chars: FloatMatrix
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        n, k = len(self.prompts), len(self.models)
        if n == 0 or k == 0:
            raise ConfigError(f"{self.name}: the outcome table is empty", field="outcomes")
        if len(self.prompt_ids) != n or len(self.tasks) != n:
            raise ValueError("prompt_ids, prompts and tasks must have the same length")
        for name in ("quality", "cost_usd", "input_tokens", "output_tokens", "response_chars"):
            if getattr(self, name).shape != (n, k):
                raise ValueError(f"{name} must have shape ({n}, {k})")
        q = self.quality
        if not np.all(np.isfinite(q)) or np.any(q < 0) or np.any(q > 1):
            raise ConfigError(
                f"{self.name}: quality must be a number in [0, 1] for every row", field="outcomes"
            )
        for name in OPTIONAL_COLUMNS:
            values = getattr(self, name)
            if np.any(np.isinf(values) | (values < 0)):
                raise ConfigError(
                    f"{self.name}: {name} must be a finite number >= 0 where given",
                    field="outcomes",
                )

    @property
    def n_prompts(self) -> int:
        """Number of prompts (rows)."""
        return len(self.prompts)

    @property
    def n_models(self) -> int:
        """Number of models (columns)."""
        return len(self.models)

    def subset(self, rows: Sequence[int] | IntVector, *, name: str | None = None) -> OutcomeTable:
        """A table with only these prompt rows (in this order)."""
        index = np.asarray(rows, dtype=np.int64)
        return OutcomeTable(
            name=name or self.name,
            prompt_ids=tuple(self.prompt_ids[i] for i in index),
            prompts=tuple(self.prompts[i] for i in index),
            tasks=tuple(self.tasks[i] for i in index),
            models=self.models,
            quality=self.quality[index],
            cost_usd=self.cost_usd[index],
            input_tokens=self.input_tokens[index],
            output_tokens=self.output_tokens[index],
            response_chars=self.response_chars[index],
            notes=self.notes,
        )

    def holdout_split(self, tenths: int = HOLDOUT_TENTHS) -> tuple[OutcomeTable, OutcomeTable]:
        """The tuning part and the held-out part, by a fixed hash of each prompt id.

        A prompt is held out when ``blake2b(prompt_id) mod 10 < tenths`` (30% by default). The
        rule depends on nothing but the id, so every script, seed and session holds out the
        same prompts; the held-out part's task labels are blanked (a router never sees them, and
        reports on it must not lean on them either).
        """
        if not 0 < tenths < 10:
            raise ValueError("tenths must be in 1..9")
        held = np.array([holdout_bucket(pid) < tenths for pid in self.prompt_ids])
        tune = self.subset(np.flatnonzero(~held), name=f"{self.name}[tune]")
        test = self.subset(np.flatnonzero(held), name=f"{self.name}[holdout]")
        return tune, replace(test, tasks=("",) * test.n_prompts)

    def split(self, fraction: float, seed: int) -> tuple[OutcomeTable, OutcomeTable]:
        """Two disjoint tables: a seeded random ``fraction`` of the prompts, and the rest."""
        if not 0.0 < fraction < 1.0:
            raise ValueError("fraction must be in (0, 1)")
        order = np.random.default_rng(seed).permutation(self.n_prompts)
        cut = round(fraction * self.n_prompts)
        return (
            self.subset(np.sort(order[:cut]), name=f"{self.name}[part 1]"),
            self.subset(np.sort(order[cut:]), name=f"{self.name}[part 2]"),
        )


def table_from_rows(
    name: str, rows: Sequence[dict[str, object]], *, model_order: Sequence[str] = ()
) -> OutcomeTable:
    """Pivot long rows (one per prompt x model) into an :class:`OutcomeTable`.

    Models are ordered as in ``model_order`` first, then alphabetically. A prompt some model did
    not answer is dropped; a (prompt, model) pair listed twice is an error.
    """
    if not rows:
        raise ConfigError(f"{name}: the outcome table has no rows", field="outcomes")
    present = {str(r["model"]) for r in rows}
    models = [m for m in model_order if m in present]
    models += sorted(present - set(models))
    column = {m: k for k, m in enumerate(models)}
    by_prompt: dict[str, dict[str, object]] = {}
    cells: dict[tuple[str, int], dict[str, object]] = {}
    for row in rows:
        pid = str(row["prompt_id"])
        key = (pid, column[str(row["model"])])
        if key in cells:
            raise ConfigError(
                f"{name}: prompt {pid!r} has more than one row for model {row['model']!r}",
                field="outcomes",
            )
        cells[key] = row
        by_prompt.setdefault(pid, row)
    complete = [
        pid for pid in sorted(by_prompt) if all((pid, k) in cells for k in range(len(models)))
    ]
    notes: list[str] = []
    dropped = len(by_prompt) - len(complete)
    if dropped:
        notes.append(f"dropped {dropped} prompt(s) that not every model answered")
    n, k = len(complete), len(models)
    arrays = {c: np.full((n, k), np.nan) for c in ("quality", *OPTIONAL_COLUMNS)}
    for i, pid in enumerate(complete):
        for j in range(k):
            cell = cells[(pid, j)]
            for c, array in arrays.items():
                value = cell.get(c)
                if value is not None:
                    try:
                        array[i, j] = float(value)  # type: ignore[arg-type]
                    except (TypeError, ValueError):
                        raise ConfigError(
                            f"{name}: {c} must be a number, got {value!r} "
                            f"(prompt {pid!r}, model {models[j]!r})",
                            field="outcomes",
                        ) from None
    if np.any(np.isnan(arrays["quality"])):
        raise ConfigError(f"{name}: quality is missing in some rows", field="outcomes")
    return OutcomeTable(
        name=name,
        prompt_ids=tuple(complete),
        prompts=tuple(str(by_prompt[p]["prompt"]) for p in complete),
        tasks=tuple(str(by_prompt[p]["task"]) for p in complete),
        models=tuple(models),
        quality=arrays["quality"],
        cost_usd=arrays["cost_usd"],
        input_tokens=arrays["input_tokens"],
        output_tokens=arrays["output_tokens"],
        response_chars=arrays["response_chars"],
        notes=tuple(notes),
    )


def load_outcomes(
    path: Path, *, model_order: Sequence[str] = (), arg: str = "--outcomes"
) -> OutcomeTable:
    """Read an outcome table from Parquet; ConfigError naming ``arg`` if it is unusable."""
    import pyarrow.parquet as pq

    if not path.is_file():
        raise ConfigError(f"{arg}: no such file {str(path)!r}", field=arg)
    try:
        schema = pq.read_schema(path)
    except Exception as exc:  # pyarrow raises several error types for non-Parquet input.
        raise ConfigError(f"{arg}: {path} is not a Parquet file: {exc}", field=arg) from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in schema.names]
    if missing:
        raise ConfigError(
            f"{arg}: {path} lacks column(s) {', '.join(missing)} "
            "(see the outcome table format: prompt_id, task, prompt, model, quality, ...)",
            field=arg,
        )
    columns = [c for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if c in schema.names]
    rows = pq.read_table(path, columns=columns).to_pylist()
    try:
        return table_from_rows(path.name, rows, model_order=model_order)
    except ConfigError as exc:
        raise ConfigError(f"{arg}: {exc.message}", field=arg) from exc


def write_outcomes(table: OutcomeTable, path: Path) -> None:
    """Write a table back to the long Parquet format (one row per prompt x model)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n, k = table.n_prompts, table.n_models

    def column(matrix: FloatMatrix, integer: bool) -> list[float | int | None]:
        out: list[float | int | None] = []
        for value in matrix.reshape(-1):
            if np.isnan(value):
                out.append(None)
            else:
                out.append(int(value) if integer else float(value))
        return out

    data = {
        "prompt_id": [p for p in table.prompt_ids for _ in range(k)],
        "source": [table.name] * (n * k),
        "task": [t for t in table.tasks for _ in range(k)],
        "prompt": [p for p in table.prompts for _ in range(k)],
        "model": list(table.models) * n,
        "quality": column(table.quality, False),
        "cost_usd": column(table.cost_usd, False),
        "input_tokens": column(table.input_tokens, True),
        "output_tokens": column(table.output_tokens, True),
        "response_chars": column(table.response_chars, True),
    }
    schema = pa.schema(
        [
            ("prompt_id", pa.string()),
            ("source", pa.string()),
            ("task", pa.string()),
            ("prompt", pa.string()),
            ("model", pa.string()),
            ("quality", pa.float64()),
            ("cost_usd", pa.float64()),
            ("input_tokens", pa.int64()),
            ("output_tokens", pa.int64()),
            ("response_chars", pa.int64()),
        ]
    )
    pq.write_table(pa.table(data, schema=schema), path, compression="zstd")
