"""Config-file validation by pydantic: strict types, ranges, unknown and missing fields.

Every failure becomes one :class:`ConfigError` that names the file, the table and each
offending field with the value it got, e.g. ``server.toml: server.max_buyer_calls: must be
greater than 0, got 0``.  Strict: a TOML string is never read as a number, nor a boolean as an
integer; an integer is accepted where a float is expected (``phase_seconds = 30``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import pydantic.dataclasses
from pydantic import AfterValidator, ConfigDict, Field, ValidationError

from fedstyle_secure.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")

STRICT = ConfigDict(extra="forbid", strict=True)
"""Unknown fields and loose types are errors (pydantic's strict mode)."""

ConfigPath = Annotated[Path, Field(strict=False)]
"""A path, given in a file as a string."""
Positive = Annotated[int, Field(gt=0)]
PositiveFinite = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Probability = Annotated[float, Field(gt=0, lt=1)]
"""Strictly between 0 and 1 (a delta)."""


def one_of(choices: Iterable[str]) -> AfterValidator:
    """A validator accepting only ``choices`` (e.g. the registered accountants)."""
    allowed = tuple(choices)

    def check(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value

    return AfterValidator(check)


def describe(error: ValidationError, where: str, known: Iterable[str] = ()) -> str:
    """One clause per failure: ``where.field: what was wrong, got value`` (``where: ...`` for a rule
    across fields)."""
    clauses = []
    for item in error.errors():
        field = ".".join([where, *(str(part) for part in item["loc"])])
        message = str(item["msg"]).removeprefix("Value error, ").replace("Input should be", "must be")
        if item["type"] == "unexpected_keyword_argument":
            clauses.append(f"{field}: unknown field (known: {', '.join(sorted(known))})")
        elif item["type"] in ("missing", "missing_argument"):
            clauses.append(f"{field}: missing required field")
        elif not item["loc"]:
            clauses.append(f"{where}: {message}")
        else:
            clauses.append(f"{field}: {message}, got {item.get('input')!r}")
    return "; ".join(clauses)


@functools.cache
def _checked(cls: type[Any]) -> Callable[..., Any]:
    """A strict pydantic twin of the plain dataclass ``cls`` (same fields, validated on construction)."""
    frozen = bool(cls.__dataclass_params__.frozen)  # a frozen class can only have frozen subclasses
    return pydantic.dataclasses.dataclass(cls, config=STRICT, frozen=frozen)


def from_table(cls: type[T], table: Mapping[str, Any], where: str) -> T:
    """A ``cls`` (a plain or pydantic dataclass) built from one TOML table, validated strictly.

    Raises :class:`ConfigError` naming ``where`` and every bad, unknown or missing field.
    """
    known = [f.name for f in dataclasses.fields(cls)]
    is_pydantic = pydantic.dataclasses.is_pydantic_dataclass(cls)
    try:
        built = cls(**table) if is_pydantic else _checked(cls)(**table)
    except ValidationError as exc:
        raise ConfigError(describe(exc, where, known)) from None
    if is_pydantic:
        return built
    return cls(**{name: getattr(built, name) for name in known})
