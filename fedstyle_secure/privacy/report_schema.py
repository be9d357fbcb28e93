"""The published JSON Schema (draft 2020-12) of epsilon reports, shipped as package data."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator

SCHEMA_RESOURCE = "report_schema.json"


@cache
def report_schema() -> dict[str, Any]:
    return json.loads(resources.files(__package__).joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8"))


@cache
def _validator() -> Draft202012Validator:
    schema = report_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def report_schema_errors(report: Any) -> list[str]:
    """Human-readable schema violations of ``report`` (empty when it is valid)."""
    errors = sorted(_validator().iter_errors(report), key=lambda error: list(error.absolute_path))
    return [f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}" for error in errors]
