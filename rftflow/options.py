"""Where a backend's settings come from when the code does not pass them: the environment first
(RFTFLOW_<PREFIX>_<NAME>, for each prefix in order), then Airflow Variables (rftflow_<prefix>_<name>).

Airflow is consulted only inside Airflow (airflow.sdk already imported), so the CLI and tests stay fast.
"""

from __future__ import annotations

import os
import sys


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
