"""The README's demo: two rft_cycle runs on the embedded default (local backend, file:// artifacts).

Cycle 1 starts from the tiny base model (expected: all-fail -> SFT -> RFT -> gate -> promote);
cycle 2 starts from the champion (SFT skipped). Ends with what each stage decided and why.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from rftflow.cli.airflow_home import airflow_bin, airflow_env, dags_test, ensure_db
from rftflow.cycle.params import PROJECT_ROOT

DEMO_DIR = PROJECT_ROOT / ".demo"
FAMILY = "tiny-demo"
# --fast (also `rftflow run --fast`): a smoke run, the same path in a fraction of the time, without the learning.
FAST = {
    "recipe_overrides": {
        "sft": {"max_steps": 40, "warmup_steps": 2},
        "rft": {"max_steps": 4, "prompts_per_step": 8},
        "eval": {"max_prompts": 64},
    },
    "diversity_prompts": 32,
}
# What `airflow standalone` needs from the demo's environment to show its runs, plugin page and champion.
_UI_ENV = ("AIRFLOW_HOME", "AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW__CORE__PLUGINS_FOLDER",
           "AIRFLOW__CORE__LOAD_EXAMPLES", "RFTFLOW_ARTIFACT_ROOT")


def cycles(fast: bool, seed: int = 0) -> list[tuple[str, dict]]:
    """The two cycles' run conf. `seed` picks the tiny model's initialisation (tiny:seed=N) and the trainers'
    seeds (data order, GRPO's sampling); the data is the embedded sample either way."""
    first = {"base_model": "tiny" if seed == 0 else f"tiny:seed={seed}", "model_family": FAMILY,
             "sft_policy": "auto", "max_cycles": 1}
    second = {"base_model": "champion", "model_family": FAMILY, "sft_policy": "auto", "max_cycles": 1}
    # The demo's time budget (10 minutes on 2 CPU cores): SFT stops at half the recipe's steps and GRPO
    # takes 30 steps at lr 1e-4 (where most of the recipe's gain arrives). `make bench` runs the full recipes.
    budget = {"recipe_overrides": {"sft": {"max_steps": 1500, "warmup_steps": 75},
                                   "rft": {"max_steps": 30, "learning_rate": 1.0e-4}}}
    first, second = {**first, **budget}, {**second, **budget}
    if fast:  # a smoke run: the same path in a fraction of the time, without the learning
        first, second = {**first, **FAST}, {**second, **FAST}
    if seed:  # the recipes' own seed is 0
        for conf in (first, second):
            conf["recipe_overrides"] = {stage: {**over, **({"seed": seed} if stage in ("sft", "rft") else {})}
                                        for stage, over in conf["recipe_overrides"].items()}
    return [("cycle 1: from the tiny base model", first), ("cycle 2: from the champion", second)]


def local_path(uri: str | None) -> str | None:
    """A file:// URI as the path a person can open; any other URI as it is."""
    if uri and uri.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return unquote(urlparse(uri).path)
    return uri


def ui_command(airflow_home: Path, artifact_root: str) -> str:
    """The shell command that serves this Airflow home in the UI, with the env the demo ran its runs with."""
    env = airflow_env(airflow_home, artifact_root)
    airflow = Path(airflow_bin())
    # standalone starts its scheduler, API server ... as `airflow` from PATH: the venv's bin goes first.
    path = f'PATH={shlex.quote(str(airflow.parent))}:"$PATH" ' if airflow.is_absolute() else ""
    return path + " ".join(f"{k}={shlex.quote(env[k])}" for k in _UI_ENV) + f" {shlex.quote(str(airflow))} standalone"


def how_to_see(logs: list[Path], airflow_home: Path, artifact_root: str) -> str:
    """Where the demo's task logs are, and how to open its runs in the Airflow UI.

    `airflow dags test` runs the tasks inside its own process and prints their logs to its output, which the
    demo writes to .demo/cycle-N.log; nothing lands in the log folder the UI reads, so the UI lists these
    runs without task logs.
    """
    shown = ", ".join(str(log.relative_to(PROJECT_ROOT)) if log.is_relative_to(PROJECT_ROOT) else str(log)
                      for log in logs)
    return "\n".join([
        f"task logs: {shown} (`airflow dags test` writes every task's log there; the Airflow UI lists "
        "these runs without task logs)",
        "to browse the runs, the RFT cycles page and the reports in the Airflow UI, run (it prints the "
        "admin password; then open http://localhost:8080):",
        f"  {ui_command(airflow_home, artifact_root)}",
    ])


def _held(answer: str) -> None:
    print(f"   the gate could not decide on its own and held the candidate for a person (its table is in the "
          f"log); the demo answers the approval step as an absent reviewer: {answer} (--on-hold approve to "
          "approve; in the Airflow UI a reviewer answers under Required Actions)", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run two rft_cycle runs on the tiny sample track.")
    ap.add_argument("--fast", action="store_true", help="tiny step counts: checks the wiring, learns little")
    ap.add_argument("--keep", action="store_true", help="keep earlier demo artifacts (and champion)")
    ap.add_argument("--on-hold", choices=["reject", "approve"], default="reject",
                    help="when the gate holds a candidate for a person, answer its approval step with this "
                         "(default reject: nobody approved it)")
    ap.add_argument("--seed", type=int, default=0,
                    help="the tiny model's initialisation (tiny:seed=N) and the trainers' seeds (default 0)")
    ap.add_argument("--backend", choices=["local", "ray"], default="local",
                    help="local (default): TRL in child processes; ray: the same stages as Ray jobs (SFT and GRPO "
                         "on 2 Ray Train workers) on a Ray head started here on 127.0.0.1, or on --ray-address")
    ap.add_argument("--ray-address", default=None,
                    help="with --backend ray: a running cluster's dashboard URL instead of a head started here "
                         "(its nodes must see this machine's .demo/artifacts folder)")
    args = ap.parse_args(argv)
    if args.backend == "ray":
        return _with_ray_head(args, lambda extra: _run(args, extra))
    return _run(args, {})


def _with_ray_head(args: argparse.Namespace, run: Callable[[dict[str, str]], int]) -> int:
    """Run the demo against `--ray-address`, or a Ray head started (and stopped) here."""
    import sys

    extra = {"RFTFLOW_RAY_PYTHON": sys.executable, "RFTFLOW_RAY_CONN_ID": "none"}
    if args.ray_address:
        return run({**extra, "RFTFLOW_RAY_ADDRESS": args.ray_address})
    from rftflow.backends.ray.local_head import start_head

    started = time.time()
    print("rftflow demo: starting a Ray head on 127.0.0.1 (2 CPUs) ...", flush=True)
    head = start_head(num_cpus=2)
    print(f"rftflow demo: Ray head up in {time.time() - started:.0f} s; dashboard and Jobs API at {head.address}")
    try:
        return run({**extra, "RFTFLOW_RAY_ADDRESS": head.address})
    finally:
        head.stop()
        print("rftflow demo: Ray head stopped")


def _run(args: argparse.Namespace, extra_env: dict[str, str]) -> int:

    from rftflow.publish.report import summary_text
    from rftflow.publish.summary import read_index
    from rftflow.publish.terminal import CycleProgress

    artifacts = DEMO_DIR / "artifacts"
    if artifacts.exists() and not args.keep:
        shutil.rmtree(artifacts)
    env = {**airflow_env(DEMO_DIR / "airflow", artifacts.as_uri()), **extra_env}
    t0 = time.time()
    print(f"rftflow demo: Airflow home {DEMO_DIR / 'airflow'} (SQLite), artifacts {artifacts}")
    ensure_db(DEMO_DIR / "airflow", env)
    for i, (title, conf) in enumerate(cycles(args.fast, args.seed), start=1):
        conf = {**conf, "backend": args.backend}
        log = DEMO_DIR / f"cycle-{i}.log"
        started = time.time()
        print(f"\n== {title} (airflow dags test rft_cycle; log: {log.relative_to(PROJECT_ROOT)})", flush=True)
        rc = dags_test("rft_cycle", conf, env, log, answer=args.on_hold.capitalize(), on_answer=_held,
                       progress=CycleProgress())
        print(f"   finished in {time.time() - started:.0f} s, exit code {rc}")
        if rc != 0:
            print(f"   the run failed; the last error in {log}:")
            # Traceback lines are the ones without a log timestamp in front.
            lines = [ln for ln in log.read_text(errors="replace").splitlines() if not ln[:4].isdigit()]
            print("\n".join(lines[-25:]))
            return rc
    print()
    for summary in read_index(artifacts.as_uri(), FAMILY):
        # The index entry names the report it wrote (report_html_uri / report_md_uri); print it as a path.
        report = local_path(summary.get("report_html_uri") or summary.get("report_md_uri"))
        print(summary_text(summary, report_uri=report))
        print()
    logs = [DEMO_DIR / f"cycle-{i}.log" for i in range(1, len(cycles(args.fast, args.seed)) + 1)]
    print(how_to_see(logs, DEMO_DIR / "airflow", artifacts.as_uri()))
    print(f"\ndemo finished in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
