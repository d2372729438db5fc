"""DAG parse cost: executing each file of dags/ after a bare `import airflow.sdk` (target <= 100 ms).

Each run is a fresh interpreter that first imports airflow.sdk (the DAG processor pays that once),
then times one DAG file alone; prints the median and the fastest run of each, and the ratio of the
median to airflow.sdk's own import. The DAG processor parses each file in its own process, so every
file pays its own imports.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = 9
PROBE = """
import json, time
t0 = time.perf_counter()
import airflow.sdk
t1 = time.perf_counter()
import importlib.util as u
spec = u.spec_from_file_location("dag_file", PATH)
module = u.module_from_spec(spec)
spec.loader.exec_module(module)
t2 = time.perf_counter()
print(json.dumps([t1 - t0, t2 - t1]))
"""


def main() -> None:
    results, sdk_runs = [], []
    for path in sorted((ROOT / "dags").glob("*.py")):
        probe = f"PATH = {str(path)!r}\n" + PROBE
        runs = [json.loads(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                          check=True, cwd=ROOT).stdout.strip().splitlines()[-1]) for _ in range(RUNS)]
        sdk_runs += [r[0] for r in runs]
        results.append((path.name, statistics.median(r[1] for r in runs) * 1000, min(r[1] for r in runs) * 1000))
    sdk = statistics.median(sdk_runs) * 1000
    print(f"import airflow.sdk (baseline): {sdk:7.1f} ms  (median of {len(sdk_runs)} fresh interpreters)")
    for name, dag, fastest in results:
        verdict = "met" if dag <= 100 else "NOT met"
        print(f"dags/{name:22s} on top: {dag:6.1f} ms median, {fastest:6.1f} ms fastest, "
              f"ratio to airflow.sdk {dag / sdk:.3f} (target <= 100 ms: {verdict})")


if __name__ == "__main__":
    main()
