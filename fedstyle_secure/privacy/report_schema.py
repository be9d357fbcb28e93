"""The published JSON Schema (draft 2020-12) of epsilon reports, shipped as package data, and the
bounds of an auditable history it cannot express (:mod:`fedstyle_secure.privacy.mechanisms`)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from itertools import islice
from typing import Any

from jsonschema import Draft202012Validator

from fedstyle_secure.privacy.mechanisms import (
    MAX_DISTINCT_MECHANISMS,
    MAX_DP_SGD_STEPS,
    MAX_MECHANISMS,
    MIN_NOISE_MULTIPLIER,
)

SCHEMA_RESOURCE = "report_schema.json"
MAX_MESSAGE_CHARS = 300
MAX_ERRORS = 50
"""The most schema violations reported for one report (the rest are not even looked for)."""
MAX_MAP_ENTRIES = 64
"""The most entries of a report's ``epsilon`` and ``software`` maps (an honest report has 1-3 and 4-6)."""


@cache
def report_schema() -> dict[str, Any]:
    return json.loads(resources.files(__package__).joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8"))


@cache
def _validator() -> Draft202012Validator:
    schema = report_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def report_schema_errors(report: Any) -> list[str]:
    """Human-readable schema violations of ``report`` (empty when it is valid; at most
    :data:`MAX_ERRORS`), then, for a schema-valid report, where its history exceeds the bounds the
    schema cannot express.

    Threat model: the report may be unsigned and crafted.  Its collections' sizes are checked first
    (:func:`collection_size_errors`) and violations are collected lazily: 1.4 million empty
    mechanism records in a 4 MB file once cost the audit 20 GB and 5 minutes, as JSON Schema
    validated, and this function sorted, every one (red-team review, 2026-12-01)."""
    oversized = collection_size_errors(report)
    if oversized:
        return oversized
    errors = sorted(islice(_validator().iter_errors(report), MAX_ERRORS), key=lambda error: list(error.absolute_path))
    if errors:
        return [f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {_message(error)}" for error in errors]
    return history_bound_errors(report["mechanisms"])


def collection_size_errors(report: Any) -> list[str]:
    """Where ``report``'s ``mechanisms`` list holds more than :data:`MAX_MECHANISMS` records or its
    ``epsilon`` or ``software`` map more than :data:`MAX_MAP_ENTRIES` entries: checked in constant
    time, before anything walks them (a signature check or the schema)."""
    if not isinstance(report, Mapping):
        return []
    limits = {
        "mechanisms": (list, MAX_MECHANISMS),
        "epsilon": (dict, MAX_MAP_ENTRIES),
        "software": (dict, MAX_MAP_ENTRIES),
    }
    return [
        f"{field}: {len(report[field])} items, more than the maximum of {limit}"
        for field, (kind, limit) in limits.items()
        if isinstance(report.get(field), kind) and len(report[field]) > limit
    ]


def _message(error: Any) -> str:
    """jsonschema's message, short: its own quotes the whole offending value (a 4 MB string)."""
    if error.validator == "maxItems":
        return f"{len(error.instance)} items, more than the maximum of {error.validator_value}"
    message = str(error.message)
    return message if len(message) <= MAX_MESSAGE_CHARS else f"{message[: MAX_MESSAGE_CHARS - 4]} ..."


def history_bound_errors(mechanisms: Sequence[Mapping[str, Any]]) -> list[str]:
    """Bounds of a schema-valid history's ``mechanisms`` beyond JSON Schema: every release's
    ``sigma / sensitivity`` at least :data:`MIN_NOISE_MULTIPLIER`, at most :data:`MAX_DP_SGD_STEPS`
    DP-SGD steps in all, and at most :data:`MAX_DISTINCT_MECHANISMS` distinct accounting parameter
    sets (one ``dp_accounting`` event each: a DP-SGD group's sample rate, noise multiplier and
    steps; a release's multiplier)."""
    errors = []
    distinct: set[tuple[object, ...]] = set()
    steps = 0
    for index, record in enumerate(mechanisms):
        if record["kind"] == "dp_sgd":
            distinct.add((record["kind"], record["sample_rate"], record["noise_multiplier"], record["steps"]))
            steps += record["steps"]
            continue
        try:
            multiplier = float(record["sigma"]) / float(record["sensitivity"])
        except OverflowError:  # an integer beyond any float
            multiplier = math.inf
        distinct.add((record["kind"], multiplier))
        if not MIN_NOISE_MULTIPLIER <= multiplier < math.inf:
            errors.append(
                f"mechanisms/{index}: sigma / sensitivity = {multiplier:.4g} is not a finite number of at least "
                f"{MIN_NOISE_MULTIPLIER}"
            )
    if steps > MAX_DP_SGD_STEPS:
        errors.append(f"mechanisms: {steps} DP-SGD steps in all, more than the maximum of {MAX_DP_SGD_STEPS}")
    if len(distinct) > MAX_DISTINCT_MECHANISMS:
        errors.append(
            f"mechanisms: {len(distinct)} distinct parameter sets, more than the maximum of {MAX_DISTINCT_MECHANISMS}"
        )
    return errors
