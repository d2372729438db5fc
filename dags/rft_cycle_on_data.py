"""rft_cycle_on_data: starts rft_cycle from the champion whenever the training-data Asset is updated.

Its own file, so the scheduler parses it (one light task) apart from the cycle's seventeen.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, Asset

from rftflow.orchestration.operators import StartNextCycleOperator

with DAG(
    dag_id="rft_cycle_on_data",
    description="Starts rft_cycle from the champion whenever the training-data Asset is updated.",
    # A file:// default keeps parsing cheap; an s3:// URI makes Airflow load the amazon provider's normaliser.
    schedule=[Asset(name="rftflow-training-data",
                    uri=os.environ.get("RFTFLOW_TRAIN_DATA_ASSET")
                    or (Path(__file__).resolve().parent.parent / "include" / "data" / "tiny" / "train.jsonl").as_uri())],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["rftflow", "rft"],
) as rft_cycle_on_data:
    # The cycle's own defaults start from the champion; one run of rft_cycle does the work.
    StartNextCycleOperator(task_id="start_cycle", trigger_dag_id="rft_cycle", conf={"base_model": "champion"})
