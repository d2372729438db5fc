"""DAG parse cost: executing dags/rft_cycle.py after a bare `import airflow.sdk` (target <= 100 ms).

Each run is a fresh interpreter that first imports airflow.sdk (the DAG processor pays that once),
then times the DAG file alone; prints medians of both and their ratio.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = 9
PROBE = f"""
import json, time
t0 = time.perf_counter()
import airflow.sdk
t1 = time.perf_counter()
import importlib.util as u
spec = u.spec_from_file_location("rft_cycle", {str(ROOT / 'dags' / 'rft_cycle.py')!r})
module = u.module_from_spec(spec)
spec.loader.exec_module(module)
t2 = time.perf_counter()
print(json.dumps([t1 - t0, t2 - t1]))
"""


def main() -> None:
    runs = [json.loads(subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                                      check=True, cwd=ROOT).stdout.strip().splitlines()[-1]) for _ in range(RUNS)]
    sdk = statistics.median(r[0] for r in runs) * 1000
    dag = statistics.median(r[1] for r in runs) * 1000
    print(f"import airflow.sdk (baseline) : {sdk:8.1f} ms  (median of {RUNS} fresh interpreters)")
    print(f"dags/rft_cycle.py on top      : {dag:8.1f} ms  (target <= 100 ms: {'met' if dag <= 100 else 'NOT met'})")
    print(f"ratio DAG file / airflow.sdk  : {dag / sdk:8.3f}")


if __name__ == "__main__":
    main()
