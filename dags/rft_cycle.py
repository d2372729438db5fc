"""rft_cycle: validate data -> baseline eval -> diversity check -> (SFT -> recheck) -> RFT ->
checkpoint eval -> gate -> promote | iterate | reject -> report.

Wiring only: every task body calls one function of rftflow.cycle; XCom carries small dicts and URIs.
Manual, or on a cron from RFTFLOW_CYCLE_SCHEDULE; dags/rft_cycle_on_data.py starts it when the training
data changes. Both start from the champion by default.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import DAG, Asset, AssetAlias, get_current_context, task

from rftflow.operators import StartNextCycleOperator, TrainingStageOperator, notify_failure, stop_remote_job
from rftflow.params import build_params

CHAMPION_ALIAS = "rftflow-champion"
JOIN = "none_failed_min_one_success"


def _stage(name: str):
    """(params, StageContext) for the running task: the one place tasks learn where they write."""
    from rftflow import cycle

    context = get_current_context()
    p = cycle.parse_params(dict(context["params"]))
    return p, cycle.stage_context(p, context["dag"].dag_id, context["run_id"], name)


def build_rft_cycle(dag_id: str, schedule, description: str) -> DAG:
    with DAG(
        dag_id=dag_id,
        description=description,
        schedule=schedule,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        params=build_params(),
        tags=["rftflow", "rft"],
        default_args={"retries": 2, "retry_delay": timedelta(minutes=1),
                      "on_failure_callback": notify_failure},
        doc_md=__doc__,
    ) as dag:

        @task
        def validate_data() -> dict:
            from airflow.sdk.exceptions import AirflowFailException

            from rftflow import cycle

            try:
                return cycle.validate_data(*_stage("validate_data"))
            except ValueError as err:  # bad params, recipe or data: retrying cannot help
                raise AirflowFailException(str(err)) from None

        @task
        def baseline_eval() -> dict:
            from rftflow import cycle

            return cycle.baseline_eval(*_stage("baseline_eval"))

        @task
        def diversity_check() -> dict:
            from rftflow import cycle

            return cycle.diversity_check(*_stage("diversity_check"))

        @task.branch
        def plan_training(diversity: dict) -> str:
            from rftflow import cycle

            p, _ = _stage("plan_training")
            return cycle.plan_training(p, diversity)

        on_failure = [notify_failure, stop_remote_job]
        sft = TrainingStageOperator(task_id="sft", stage="sft", on_failure_callback=on_failure)

        @task
        def diversity_recheck() -> dict:
            from rftflow import cycle

            return cycle.diversity_check(*_stage("diversity_recheck"))

        rft = TrainingStageOperator(task_id="rft", stage="rft", trigger_rule=JOIN, on_failure_callback=on_failure)

        @task
        def stop() -> dict:
            from rftflow import cycle

            return cycle.stop(*_stage("stop"))

        @task
        def checkpoint_eval() -> dict:
            from rftflow import cycle

            return cycle.checkpoint_eval(*_stage("checkpoint_eval"))

        @task
        def gate() -> dict:
            from rftflow import cycle

            return cycle.gate(*_stage("gate"))

        @task.branch
        def choose_outcome(decision: dict) -> str:
            from rftflow import cycle

            p, _ = _stage("choose_outcome")
            return cycle.choose_outcome(p, decision)

        approve_promotion = ApprovalOperator(
            task_id="approve_promotion",
            subject="Promote the rft_cycle candidate of {{ params.model_family }}?",
            body="{{ ti.xcom_pull(task_ids='gate')['table'] }}",
            defaults="Reject", response_timeout=timedelta(days=7),  # no answer in a week: not promoted
        )

        @task(trigger_rule=JOIN, outlets=[AssetAlias(CHAMPION_ALIAS)])
        def promote(baseline: dict, decision: dict) -> dict:
            from rftflow import cycle

            result = cycle.promote(*_stage("promote"), decision["candidate_uri"], baseline["champion_token"])
            if result["promoted"]:
                events = get_current_context()["outlet_events"]
                events[AssetAlias(CHAMPION_ALIAS)].add(Asset(result["asset_uri"]), extra=result["asset_extra"])
            return result

        @task
        def iterate(decision: dict) -> dict:
            from rftflow import cycle

            p, ctx = _stage("iterate")
            return cycle.next_cycle_conf(p, ctx.run_id, decision["candidate_uri"])

        reject = EmptyOperator(task_id="reject")

        @task(trigger_rule=JOIN)
        def report() -> dict:
            from rftflow import cycle

            return cycle.report(*_stage("report"))

        baseline = baseline_eval()
        diversity = diversity_check()
        validate_data() >> baseline >> diversity
        stopped = stop()
        plan_training(diversity) >> [sft, rft, stopped]
        gate_result = gate()
        sft >> diversity_recheck() >> rft >> checkpoint_eval() >> gate_result
        outcome = choose_outcome(gate_result)
        promoted = promote(baseline, gate_result)
        next_conf = iterate(gate_result)
        start_next_cycle = StartNextCycleOperator(task_id="start_next_cycle", trigger_dag_id=dag_id,
                                                  conf=next_conf)
        outcome >> [approve_promotion, promoted, next_conf, reject]
        approve_promotion >> promoted
        next_conf >> start_next_cycle
        [promoted, start_next_cycle, reject, stopped] >> report()
    return dag


rft_cycle = build_rft_cycle(
    "rft_cycle", os.environ.get("RFTFLOW_CYCLE_SCHEDULE") or None,
    "One SFT -> RFT -> eval -> gate cycle; promotes only a measurably better model.",
)
