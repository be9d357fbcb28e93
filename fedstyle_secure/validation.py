"""Strict validation of config files and config dataclasses: types, ranges, unknown and missing fields.

Every failure becomes one :class:`ConfigError` that names the file, the table and each offending
field with the value it got, e.g. ``server.toml: server.max_buyer_calls: must be greater than 0, got
0``.  Strict: a TOML string is never read as a number, nor a boolean as an integer; an integer is
accepted where a float is expected (``phase_seconds = 30``).

A field's rules are its type annotation: ``int``, ``float``, ``bool``, ``str``, ``frozenset[int]``,
a dataclass (an instance of it), ``X | None``, and ``Annotated[X, *rules]`` with the rules below
(:class:`Bound`, :data:`FINITE`, :func:`one_of`, :data:`AS_PATH`).  Pure standard library: an artist
process validates its config and every announced DP plan without importing a validation framework
(pydantic cost each artist 9 MB resident).
"""

from __future__ import annotations

import dataclasses
import math
import operator
import types
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, Union, get_args, get_origin, get_type_hints

from fedstyle_secure.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


_BOUND_WORDS = {
    "gt": "greater than",
    "ge": "greater than or equal to",
    "lt": "less than",
    "le": "less than or equal to",
}


@dataclasses.dataclass(frozen=True)
class Bound:
    """``value OP limit`` must hold (``op``: gt, ge, lt, le); NaN fails every bound."""

    op: str
    limit: float

    def problem(self, value: float) -> str | None:
        holds = getattr(operator, self.op)(value, self.limit)
        return None if holds else f"must be {_BOUND_WORDS[self.op]} {self.limit}"


def gt(limit: float) -> Bound:
    return Bound("gt", limit)


def ge(limit: float) -> Bound:
    return Bound("ge", limit)


def lt(limit: float) -> Bound:
    return Bound("lt", limit)


def le(limit: float) -> Bound:
    return Bound("le", limit)


@dataclasses.dataclass(frozen=True)
class OneOf:
    choices: tuple[str, ...]

    def problem(self, value: str) -> str | None:
        return None if value in self.choices else f"must be one of {', '.join(self.choices)}"


def one_of(choices: Iterable[str]) -> OneOf:
    """A rule accepting only ``choices`` (e.g. the registered accountants)."""
    return OneOf(tuple(choices))


@dataclasses.dataclass(frozen=True)
class HostPort:
    """A gRPC address ``host:port`` (``[v6]:port`` for IPv6), the port a number in ``lowest``..65535:
    gRPC silently wraps a larger one (99999 bound port 34463) and takes 443 for a missing one."""

    lowest: int = 1

    def problem(self, value: str) -> str | None:
        host, colon, port = value.rpartition(":")
        if not colon or not host or host == "[]":
            return "must be host:port"
        if not (port.isascii() and port.isdigit() and self.lowest <= int(port) <= 65535):
            return f"must be host:port with a port number in {self.lowest}..65535"
        if ("[" in host or "]" in host) and not (host.startswith("[") and host.endswith("]")):
            return "must be host:port ([address]:port for IPv6)"
        if ":" in host and not host.startswith("["):
            return "must be [address]:port for an IPv6 address"
        return None


HOST_PORT = HostPort()


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


FINITE = _Marker("FINITE")
"""A float that is neither infinite nor NaN."""
AS_PATH = _Marker("AS_PATH")
"""A path, given in a file as a string (converted to :class:`~pathlib.Path`)."""

ConfigPath = Annotated[Path, AS_PATH]
Positive = Annotated[int, gt(0)]
PositiveFinite = Annotated[float, FINITE, gt(0)]
Probability = Annotated[float, gt(0), lt(1)]
"""Strictly between 0 and 1 (a delta)."""
Address = Annotated[str, HOST_PORT]
"""``host:port`` to connect to (:class:`HostPort`)."""
ListenAddress = Annotated[str, HostPort(lowest=0)]
"""``host:port`` to listen on; port 0 lets the system choose one."""
MessageBytes = Annotated[int, gt(0), le(2**31 - 1)]
"""A gRPC message size limit (bytes): gRPC takes a C int."""
Seconds = Annotated[float, FINITE, gt(0), le(7 * 24 * 3600)]
"""A positive duration of at most a week (seconds): a longer one overflows the platform's timestamps."""


class _Invalid(Exception):
    """One field's problem (the message, without field or value)."""


def _convert(value: Any, hint: Any) -> Any:
    """``value`` checked against (and, for paths and numbers, converted to) the type ``hint``."""
    origin = get_origin(hint)
    if origin is Annotated:
        base, *rules = get_args(hint)
        converted = _convert(value, base)
        for rule in rules:
            if rule is FINITE and not math.isfinite(converted):
                raise _Invalid("must be a finite number")
            if isinstance(rule, (Bound, OneOf, HostPort)):
                problem = rule.problem(converted)
                if problem is not None:
                    raise _Invalid(problem)
        return converted
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        (inner,) = [option for option in options if option is not type(None)]
        return _convert(value, inner)
    if origin is frozenset:
        (item,) = get_args(hint)
        if not isinstance(value, (frozenset, set)):
            raise _Invalid("must be a set")
        return frozenset(_convert(v, item) for v in value)
    return _convert_plain(value, hint)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_PLAIN: dict[Any, tuple[Callable[[Any], bool], Callable[[Any], Any], str]] = {
    Path: (lambda v: isinstance(v, (str, Path)), Path, "a path (a string)"),
    bool: (lambda v: isinstance(v, bool), bool, "a valid boolean"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), int, "a valid integer"),
    float: (_is_number, float, "a valid number"),
    str: (lambda v: isinstance(v, str), str, "a valid string"),
}
"""Per plain type: what it accepts (strict: no bool as a number, no string as anything else), how a
value is converted, and what the error says it must be."""


def _convert_plain(value: Any, hint: Any) -> Any:
    if hint in _PLAIN:
        accepts, convert, what = _PLAIN[hint]
        if accepts(value):
            return convert(value)
        raise _Invalid(f"must be {what}")
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if isinstance(value, hint):
            return value
        raise _Invalid(f"must be a {hint.__name__}")
    raise TypeError(f"no validation rule for the annotation {hint!r}")  # a programming error


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """``cls``'s resolved annotations, rules included (resolved once per class: every plan's DP table
    is validated with them)."""
    if cls not in _HINTS:
        _HINTS[cls] = get_type_hints(cls, include_extras=True)
    return _HINTS[cls]


def checked_fields(
    cls: type[Any], values: Mapping[str, Any], where: str, also_known: Iterable[str] = ()
) -> dict[str, Any]:
    """``values`` for the dataclass ``cls``, each checked and converted by its annotation.  Raises
    :class:`ConfigError` naming ``where`` and every bad, unknown or missing field (``also_known``:
    fields of the same table read elsewhere, listed among the known ones)."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = _hints(cls)
    clauses, out = [], {}
    known = ", ".join(sorted({*fields, *also_known}))
    for name in values:
        if name not in fields:
            clauses.append(f"{where}.{name}: unknown field (known: {known})")
    for name, spec in fields.items():
        if name not in values:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                clauses.append(f"{where}.{name}: missing required field")
            continue
        try:
            out[name] = _convert(values[name], hints[name])
        except _Invalid as exc:
            clauses.append(f"{where}.{name}: {exc}, got {values[name]!r}")
    if clauses:
        raise ConfigError("; ".join(clauses))
    return out


def validate_on_init(instance: DataclassInstance) -> None:
    """For a frozen config dataclass's ``__post_init__``: check every field (converting paths and
    numbers in place), so a config built in code is held to the same rules as one read from a file."""
    cls = type(instance)
    values = {f.name: getattr(instance, f.name) for f in dataclasses.fields(instance) if f.init}
    for name, value in checked_fields(cls, values, cls.__name__).items():
        object.__setattr__(instance, name, value)


def from_table(cls: type[T], table: Mapping[str, Any], where: str, also_known: Iterable[str] = ()) -> T:
    """A ``cls`` (a dataclass) built from one TOML table, validated strictly.

    Raises :class:`ConfigError` naming ``where`` and every bad, unknown or missing field, or a rule
    across fields (a ``ValueError`` of the class's ``__post_init__``) as ``where: message``.
    ``also_known``: as in :func:`checked_fields`.
    """
    values = checked_fields(cls, table, where, also_known)
    try:
        return cls(**values)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
