"""What each rft_cycle task does: a few lines each around one stage function of rftflow.cycle.stages.

`CycleTask(task_id=name, inputs={...})` runs `name(context, **inputs)` from this module; inputs are upstream
results (XCom), resolved by Airflow before the call. Every stage gets the run's params as validate_data resolved
them, its folder, and its upstream manifests from the stage graph (`_stage`). Imported only when a task runs,
never at parse time.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset, AssetAlias

from rftflow.cycle.context import for_task
from rftflow.cycle.graph import inputs_of
from rftflow.cycle.stages import branches
from rftflow.orchestration.operators import CHAMPION_ALIAS


def _stage(context: Any) -> tuple[Any, Any, Any]:
    """(params, StageContext, Inputs) of the running task."""
    p, ctx = for_task(context, context["task"].task_id)
    return p, ctx, inputs_of(ctx)


def validate_data(context: Any) -> dict:
    from airflow.sdk.exceptions import AirflowFailException

    from rftflow.cycle.stages.validate_data import validate_data as run

    try:
        return run(*_stage(context))
    except ValueError as err:  # bad params, recipe or data: retrying cannot help
        raise AirflowFailException(str(err)) from None


def baseline_eval(context: Any) -> dict:
    from rftflow.cycle.stages.baseline_eval import baseline_eval as run

    return run(*_stage(context))


def diversity_check(context: Any) -> dict:
    from rftflow.cycle.stages.diversity import diversity_check as run

    return run(*_stage(context))


diversity_recheck = diversity_check  # the graph gives the recheck its own folder and start model (the SFT checkpoint)


def plan_training(context: Any, diversity: dict) -> str:
    return branches.plan_training(_stage(context)[0], diversity)


def plan_rft(context: Any, recheck: dict) -> str:
    return branches.plan_rft(_stage(context)[0], recheck)


def stop(context: Any) -> dict:
    from rftflow.cycle.stages.stop import stop as run

    return run(*_stage(context))


def checkpoint_eval(context: Any) -> dict:
    from rftflow.cycle.stages.checkpoint_eval import checkpoint_eval as run

    return run(*_stage(context))


def gate(context: Any) -> dict:
    from rftflow.cycle.stages.gate import gate as run

    return run(*_stage(context))


def choose_outcome(context: Any, decision: dict) -> str | list[str]:
    return branches.choose_outcome(_stage(context)[0], decision)


def promote(context: Any, decision: dict, baseline: dict | None = None) -> dict:
    # `baseline` is what DAG versions that passed the baseline's XCom still send; the token is read from
    # the baseline stage's manifest either way.
    from rftflow.cycle.stages.promote import promote as run

    p, ctx, inputs = _stage(context)
    result = run(p, ctx, decision["candidate_uri"], inputs)
    if result["promoted"]:  # the Asset event a deployment DAG schedules on
        alias = AssetAlias(CHAMPION_ALIAS)
        context["outlet_events"][alias].add(Asset(result["asset_uri"]), extra=result["asset_extra"])
    return result


def iterate(context: Any, decision: dict) -> dict:
    from rftflow.cycle.stages.promote import next_cycle_conf

    p, ctx, _ = _stage(context)
    return next_cycle_conf(p, ctx.run_id, decision["candidate_uri"])


def report(context: Any) -> dict:
    from rftflow.cycle.stages.report import report as run

    return run(*_stage(context))
