"""Check a request against botocore's service model before it is sent: types, required members, and the
length/range/pattern/enum limits that botocore itself leaves to the server.

A request that fails here would have been rejected by AWS; failing early names the field and the limit.
"""

from __future__ import annotations

import functools
import re
from typing import Any


class RequestError(ValueError):
    """A request that does not fit the AWS API's own model."""


# Java-style classes used in a few AWS patterns, mapped to close Python equivalents.
_JAVA_CLASSES = {r"\p{L}": r"\w", r"\p{N}": r"\d", r"\p{Z}": r"\s", r"\p{Alnum}": "a-zA-Z0-9"}


@functools.lru_cache(maxsize=32)
def _service_model(service: str) -> Any:
    import botocore.session

    return botocore.session.get_session().get_service_model(service)


@functools.lru_cache(maxsize=512)
def _pattern(raw: str) -> re.Pattern[str] | None:
    text = raw
    for java, python in _JAVA_CLASSES.items():
        text = text.replace(java, python)
    try:
        return re.compile(text)
    except re.error:
        return None


def validate_request(service: str, operation: str, params: dict[str, Any]) -> None:
    """Raise RequestError listing every way `params` breaks the `service`.`operation` input model."""
    from botocore.validate import ParamValidator

    op = _service_model(service).operation_model(operation)
    problems: list[str] = []
    report = ParamValidator().validate(params, op.input_shape)
    if report.has_errors():
        problems.extend(line.strip("- ").strip() for line in report.generate_report().splitlines()[1:])
    _limits(params, op.input_shape, "", problems)
    if problems:
        shown = "\n  ".join(dict.fromkeys(problems))
        raise RequestError(f"{service} {operation} request does not fit the AWS API model:\n  {shown}")


def _limits(value: Any, shape: Any, path: str, problems: list[str]) -> None:
    meta = shape.metadata
    kind = shape.type_name
    where = path or "(request)"
    if kind == "structure" and isinstance(value, dict):
        for name, member in shape.members.items():
            if name in value and value[name] is not None:
                _limits(value[name], member, f"{path}.{name}" if path else name, problems)
        return
    if kind == "list" and isinstance(value, list):
        _size(where, len(value), meta, "items", problems)
        for i, item in enumerate(value):
            _limits(item, shape.member, f"{path}[{i}]", problems)
        return
    if kind == "map" and isinstance(value, dict):
        _size(where, len(value), meta, "entries", problems)
        for key, item in value.items():
            _limits(key, shape.key, f"{path} key {key!r}", problems)
            _limits(item, shape.value, f"{path}[{key!r}]", problems)
        return
    if kind == "string" and isinstance(value, str):
        _size(where, len(value), meta, "characters", problems)
        enum = shape.enum
        if enum and value not in enum:
            problems.append(f"{where}: expected one of {', '.join(enum)}; got {value!r}")
        raw = meta.get("pattern")
        pattern = _pattern(raw) if raw else None
        if pattern is not None and not pattern.fullmatch(value):
            problems.append(f"{where}: {value!r} does not match the API pattern {raw}")
        return
    if kind in ("integer", "long", "float", "double") and isinstance(value, int | float):
        if "min" in meta and value < meta["min"]:
            problems.append(f"{where}: expected >= {meta['min']}; got {value!r}")
        if "max" in meta and value > meta["max"]:
            problems.append(f"{where}: expected <= {meta['max']}; got {value!r}")


def _size(where: str, size: int, meta: dict, unit: str, problems: list[str]) -> None:
    if "max" in meta and size > meta["max"]:
        problems.append(f"{where}: at most {meta['max']} {unit} allowed; got {size}")
