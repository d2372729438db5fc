"""Where a backend's settings come from when the code does not pass them: the environment first
(RFTFLOW_<PREFIX>_<NAME>, for each prefix in order), then Airflow Variables (rftflow_<prefix>_<name>).

Airflow is consulted only inside Airflow (airflow.sdk already imported), so the CLI and tests stay fast.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, TypeVar

_Options = TypeVar("_Options")


def setting(name: str, prefixes: tuple[str, ...]) -> str | None:
    """The first value found for `name` under the prefixes (e.g. ("sagemaker", "aws")), or None."""
    for prefix in prefixes:
        env = f"RFTFLOW_{prefix.upper()}_{name.upper()}"
        if os.environ.get(env):
            return os.environ[env]
    if "airflow.sdk" not in sys.modules:  # not running inside Airflow: env only, no slow import
        return None
    try:
        from airflow.sdk import Variable

        for prefix in prefixes:
            value = Variable.get(f"rftflow_{prefix}_{name}", default=None)
            if value is not None:
                return value
    except Exception:  # no Variable backend reachable
        return None
    return None


def resolve(model: type[_Options], given: dict[str, Any], prefixes: tuple[str, ...], what: str) -> _Options:
    """A backend's options (a pydantic model): each one given in code, else its `setting` (JSON for a list or
    a dict); an unknown name fails with the names there are."""
    fields = model.model_fields  # type: ignore[attr-defined]
    unknown = set(given) - set(fields)
    if unknown:
        raise ValueError(f"{what}: unknown option(s) {sorted(unknown)}; expected {', '.join(fields)}")
    values = dict(given)
    for name, field in fields.items():
        if name not in values and (found := setting(name, prefixes)) is not None:
            structured = field.annotation not in (str, str | None) and found[:1] in "[{"
            values[name] = json.loads(found) if structured else found
    return model.model_validate(values)  # type: ignore[attr-defined]
