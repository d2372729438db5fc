"""What each rft_cycle task does, a few lines each around one function of rftflow.cycle.stages.

`CycleTask(task_id=name, inputs={...})` runs `name(context, **inputs)` from this module; inputs are upstream
results (XCom), resolved by Airflow before the call. Imported only when a task runs, never at parse time.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset, AssetAlias

from rftflow.cycle import stages as cycle
from rftflow.orchestration.operators import CHAMPION_ALIAS


def validate_data(context: Any) -> dict:
    from airflow.sdk.exceptions import AirflowFailException

    try:
        return cycle.validate_data(*cycle.for_task(context, "validate_data"))
    except ValueError as err:  # bad params, recipe or data: retrying cannot help
        raise AirflowFailException(str(err)) from None


def baseline_eval(context: Any) -> dict:
    return cycle.baseline_eval(*cycle.for_task(context, "baseline_eval"))


def diversity_check(context: Any) -> dict:
    return cycle.diversity_check(*cycle.for_task(context, "diversity_check"))


def plan_training(context: Any, diversity: dict) -> str:
    return cycle.plan_training(cycle.for_task(context, "plan_training")[0], diversity)


def diversity_recheck(context: Any) -> dict:
    return cycle.diversity_check(*cycle.for_task(context, "diversity_recheck"))


def plan_rft(context: Any, recheck: dict) -> str:
    return cycle.plan_rft(cycle.for_task(context, "plan_rft")[0], recheck)


def stop(context: Any) -> dict:
    return cycle.stop(*cycle.for_task(context, "stop"))


def checkpoint_eval(context: Any) -> dict:
    return cycle.checkpoint_eval(*cycle.for_task(context, "checkpoint_eval"))


def gate(context: Any) -> dict:
    return cycle.gate(*cycle.for_task(context, "gate"))


def choose_outcome(context: Any, decision: dict) -> str | list[str]:
    return cycle.choose_outcome(cycle.for_task(context, "choose_outcome")[0], decision)


def promote(context: Any, decision: dict, baseline: dict | None = None) -> dict:
    # `baseline` is what DAG versions that passed the baseline's XCom still send; the token is read from
    # the baseline stage's manifest either way.
    p, ctx = cycle.for_task(context, "promote")
    result = cycle.promote(p, ctx, decision["candidate_uri"], cycle.baseline_champion_token(ctx))
    if result["promoted"]:  # the Asset event a deployment DAG schedules on
        alias = AssetAlias(CHAMPION_ALIAS)
        context["outlet_events"][alias].add(Asset(result["asset_uri"]), extra=result["asset_extra"])
    return result


def iterate(context: Any, decision: dict) -> dict:
    p, ctx = cycle.for_task(context, "iterate")
    return cycle.next_cycle_conf(p, ctx.run_id, decision["candidate_uri"])


def report(context: Any) -> dict:
    return cycle.report(*cycle.for_task(context, "report"))
