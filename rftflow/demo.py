"""The README's demo: two rft_cycle runs on the embedded default (local backend, file:// artifacts).

Cycle 1 starts from the tiny base model (expected: all-fail -> SFT -> RFT -> gate -> promote);
cycle 2 starts from the champion (SFT skipped). Ends with what each stage decided and why.
"""

from __future__ import annotations

import argparse
import shutil
import time

from rftflow.airflow_home import airflow_env, dags_test, ensure_db
from rftflow.params import PROJECT_ROOT

DEMO_DIR = PROJECT_ROOT / ".demo"
FAMILY = "tiny-demo"


def cycles(fast: bool) -> list[tuple[str, dict]]:
    first = {"base_model": "tiny", "model_family": FAMILY, "sft_policy": "auto", "max_cycles": 1}
    second = {"base_model": "champion", "model_family": FAMILY, "sft_policy": "auto", "max_cycles": 1}
    # The demo's time budget (10 minutes on 2 CPU cores): SFT stops at half the recipe's steps and GRPO
    # takes 30 steps at lr 1e-4 (where most of the recipe's gain arrives). `make bench` runs the full recipes.
    budget = {"recipe_overrides": {"sft": {"max_steps": 1500, "warmup_steps": 75},
                                   "rft": {"max_steps": 30, "learning_rate": 1.0e-4}}}
    first, second = {**first, **budget}, {**second, **budget}
    if fast:  # a smoke run: the same path in a fraction of the time, without the learning
        small = {
            "recipe_overrides": {
                "sft": {"max_steps": 40, "warmup_steps": 2},
                "rft": {"max_steps": 4, "prompts_per_step": 8},
                "eval": {"max_prompts": 64},
            },
            "diversity_prompts": 32,
        }
        first, second = {**first, **small}, {**second, **small}
    return [("cycle 1: from the tiny base model", first), ("cycle 2: from the champion", second)]


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
    args = ap.parse_args(argv)

    from rftflow.report import summary_text
    from rftflow.summary import read_index

    artifacts = DEMO_DIR / "artifacts"
    if artifacts.exists() and not args.keep:
        shutil.rmtree(artifacts)
    env = airflow_env(DEMO_DIR / "airflow", artifacts.as_uri())
    t0 = time.time()
    print(f"rftflow demo: Airflow home {DEMO_DIR / 'airflow'} (SQLite), artifacts {artifacts}")
    ensure_db(DEMO_DIR / "airflow", env)
    for i, (title, conf) in enumerate(cycles(args.fast), start=1):
        log = DEMO_DIR / f"cycle-{i}.log"
        started = time.time()
        print(f"\n== {title} (airflow dags test rft_cycle; log: {log.relative_to(PROJECT_ROOT)})", flush=True)
        rc = dags_test("rft_cycle", conf, env, log, answer=args.on_hold.capitalize(), on_answer=_held)
        print(f"   finished in {time.time() - started:.0f} s, exit code {rc}")
        if rc != 0:
            print(f"   the run failed; the last error in {log}:")
            # Traceback lines are the ones without a log timestamp in front.
            lines = [ln for ln in log.read_text(errors="replace").splitlines() if not ln[:4].isdigit()]
            print("\n".join(lines[-25:]))
            return rc
    print()
    for summary in read_index(artifacts.as_uri(), FAMILY):
        print(summary_text(summary))
        print()
    print(f"demo finished in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
