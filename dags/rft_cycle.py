"""rft_cycle: validate data -> baseline eval -> diversity check -> (SFT -> recheck) -> RFT ->
checkpoint eval -> gate -> promote | hold (a person approves) | iterate | reject -> report.

Wiring only: each task runs a few lines of rftflow.cycle.tasks around one function of rftflow.cycle.stages, and
XCom carries small dicts and URIs. Runs manually, or on a cron from RFTFLOW_CYCLE_SCHEDULE;
dags/rft_cycle_on_data.py starts it when the training data changes. Both start from the champion.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import DAG, AssetAlias

from rftflow.cycle.params import build_params
from rftflow.orchestration.operators import (
    CHAMPION_ALIAS,
    CycleBranch,
    CycleTask,
    StartNextCycleOperator,
    TrainingStageOperator,
    notify_failure,
    stop_remote_job,
    task_timeout,
)

JOIN = "none_failed_min_one_success"  # joins after branches: skipped upstreams never fail them


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
        default_args={"retries": 2, "retry_delay": timedelta(minutes=1), "on_failure_callback": notify_failure},
        doc_md=__doc__,
    ) as dag:
        # Each CycleTask runs rftflow.cycle.tasks.<task_id>; `inputs` are upstream results passed by XCom.
        validate_data = CycleTask(task_id="validate_data")
        baseline_eval = CycleTask(task_id="baseline_eval")
        diversity_check = CycleTask(task_id="diversity_check")
        plan_training = CycleBranch(task_id="plan_training", inputs={"diversity": diversity_check.output})
        on_failure = [notify_failure, stop_remote_job]
        sft = TrainingStageOperator(task_id="sft", stage="sft", on_failure_callback=on_failure)
        diversity_recheck = CycleTask(task_id="diversity_recheck")
        plan_rft = CycleBranch(task_id="plan_rft", inputs={"recheck": diversity_recheck.output})
        rft = TrainingStageOperator(task_id="rft", stage="rft", trigger_rule=JOIN, on_failure_callback=on_failure)
        stop = CycleTask(task_id="stop", trigger_rule=JOIN)
        checkpoint_eval = CycleTask(task_id="checkpoint_eval")
        gate = CycleTask(task_id="gate")
        choose_outcome = CycleBranch(task_id="choose_outcome", inputs={"decision": gate.output})
        approve_promotion = ApprovalOperator(
            task_id="approve_promotion",
            subject="Promote the rft_cycle candidate of {{ params.model_family }}?",
            body="{{ ti.xcom_pull(task_ids='gate')['table'] }}",
            defaults="Reject", response_timeout=timedelta(days=7),  # no answer in a week: not promoted
            execution_timeout=task_timeout("approve_promotion"),  # the wait for a person: response_timeout
        )
        # Upstreams: the gate's branch and the approval only. A cycle that stopped before the gate skips
        # them all, so the join skips promote too (an upstream that ran, e.g. baseline_eval, would start it).
        promote = CycleTask(task_id="promote", trigger_rule=JOIN, outlets=[AssetAlias(CHAMPION_ALIAS)],
                            inputs={"decision": gate.output})
        iterate = CycleTask(task_id="iterate", inputs={"decision": gate.output})
        start_next_cycle = StartNextCycleOperator(task_id="start_next_cycle", trigger_dag_id=dag_id,
                                                  conf=iterate.output)
        reject = EmptyOperator(task_id="reject", execution_timeout=task_timeout("reject"))
        report = CycleTask(task_id="report", trigger_rule=JOIN)

        validate_data >> baseline_eval >> diversity_check
        plan_training >> [sft, rft, stop]
        sft >> diversity_recheck  # >> plan_rft: the recheck's decision is obeyed (rft, or stop)
        plan_rft >> [rft, stop]
        rft >> checkpoint_eval >> gate
        choose_outcome >> [approve_promotion, promote, iterate, reject]
        approve_promotion >> promote
        [promote, start_next_cycle, reject, stop] >> report
        # A held candidate that the reviewer rejects skips promote; the branch itself still leads to the
        # report (a branch never skips a task that is also downstream of the branch it chose).
        choose_outcome >> report
    return dag


rft_cycle = build_rft_cycle(
    "rft_cycle", os.environ.get("RFTFLOW_CYCLE_SCHEDULE") or None,
    "One SFT -> RFT -> eval -> gate cycle; promotes only a measurably better model.",
)
