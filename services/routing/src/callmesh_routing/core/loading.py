"""Load the core's dataclasses from plain dicts (JSON), collecting every problem.

Configuration arrives from the api as JSON. Rather than stopping at the first mistake, the
loader walks the whole document and reports each problem with a precise path
("steps.main-menu.options.2"), so whoever saves a scenario sees everything at once.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any, TypeVar

T = TypeVar("T")

_MISSING = object()


@dataclass(frozen=True, slots=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '<root>'}: {self.message}"


class LoadError(ValueError):
    """Raised with every problem found when a document cannot be loaded."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


def join(path: str, part: str | int) -> str:
    return f"{path}.{part}" if path else str(part)


def load(
    cls: type[T], data: object, path: str, problems: list[Problem], skip: tuple[str, ...] = ()
) -> T | None:
    """Build dataclass `cls` from `data`; append problems and return None on failure.

    `skip` names keys the caller has already consumed (such as a step's "kind").
    """
    if not isinstance(data, Mapping):
        problems.append(Problem(path, f"expected an object, got {_describe(data)}"))
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    before = len(problems)
    kwargs: dict[str, Any] = {}
    for key in data:
        if key not in fields and key not in skip:
            problems.append(Problem(join(path, str(key)), "unknown field"))
    for name, spec in fields.items():
        if name in data:
            value = _convert(hints[name], data[name], join(path, name), problems)
            if value is not _MISSING:
                kwargs[name] = value
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            problems.append(Problem(join(path, name), "is required"))
    if len(problems) > before:
        return None
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        problems.append(Problem(path, str(exc)))
        return None


def _describe(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _convert(hint: Any, value: object, path: str, problems: list[Problem]) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return _convert(non_none[0], value, path, problems)
        problems.append(Problem(path, "unsupported union"))
        return _MISSING
    if origin is tuple:
        if not isinstance(value, list | tuple):
            problems.append(Problem(path, f"expected a list, got {_describe(value)}"))
            return _MISSING
        item_type = args[0]
        items = [_convert(item_type, v, join(path, i), problems) for i, v in enumerate(value)]
        return _MISSING if _MISSING in items else tuple(items)
    if origin in (dict, Mapping, typing.Mapping):
        if not isinstance(value, Mapping):
            problems.append(Problem(path, f"expected an object, got {_describe(value)}"))
            return _MISSING
        key_type, value_type = args
        converted: dict[Any, Any] = {}
        ok = True
        for key, item in value.items():
            item_path = join(path, str(key))
            new_key = _convert(key_type, key, item_path, problems)
            new_value = _convert(value_type, item, item_path, problems)
            if new_key is _MISSING or new_value is _MISSING:
                ok = False
            else:
                converted[new_key] = new_value
        return converted if ok else _MISSING
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        loaded = load(hint, value, path, problems)
        return _MISSING if loaded is None else loaded
    return _scalar(hint, value, path, problems)


def _scalar(hint: Any, value: object, path: str, problems: list[Problem]) -> Any:
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
        elif hint is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        elif hint is float:
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
        elif hint is str:
            if isinstance(value, str):
                return value
        elif hint is Decimal:
            if isinstance(value, str | int | float) and not isinstance(value, bool):
                return Decimal(str(value))
        elif isinstance(hint, type) and issubclass(hint, Enum):
            try:
                return hint(value)
            except ValueError:
                if isinstance(value, str) and value.upper() in hint.__members__:
                    return hint.__members__[value.upper()]
                allowed = ", ".join(repr(m.value) for m in hint)
                problems.append(Problem(path, f"{value!r} is not one of {allowed}"))
                return _MISSING
        elif hint is time:
            if isinstance(value, str):
                return time.fromisoformat(value)
        elif hint is datetime:
            if isinstance(value, str):
                return datetime.fromisoformat(value)
        elif hint is date:
            if isinstance(value, str):
                return date.fromisoformat(value)
        else:
            problems.append(Problem(path, f"unsupported type {hint!r}"))
            return _MISSING
    except (ValueError, InvalidOperation):
        readable = getattr(hint, "__name__", hint)
        problems.append(Problem(path, f"cannot read {value!r} as {readable}"))
        return _MISSING
    name = getattr(hint, "__name__", str(hint))
    problems.append(Problem(path, f"expected {name}, got {_describe(value)}"))
    return _MISSING
