"""`rftflow` command line: the data-team operations without opening Airflow.

validate / convert a dataset, test a reward on rollouts, deploy or verify a reward Lambda, run a
cycle locally, show the champion and the cycle history.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

# subcommand -> (module, help); each module exposes add_arguments(parser) and run(args) -> int
_DELEGATED = {
    "validate": ("rftflow.cli_data:validate", "check a dataset (schema + dataset-level checks)"),
    "convert": ("rftflow.cli_data:convert", "convert question/answer CSV or JSONL to RFT JSONL"),
    "test": ("rftflow.cli_reward", "score rollouts with a reward function and print a table"),
    "gate": ("rftflow.cli_gate", "re-run the gate's decision from stored eval results (other settings allowed)"),
    "lambda": ("rftflow.aws.cli", "package, deploy or verify a reward Lambda"),
}


def _load(spec: str):
    module, _, prefix = spec.partition(":")
    mod = importlib.import_module(module)
    if not prefix:
        return mod.add_arguments, mod.run
    return getattr(mod, f"add_{prefix}_arguments"), getattr(mod, f"run_{prefix}")


def _run_cycle(args: argparse.Namespace) -> int:
    from rftflow.airflow_home import airflow_env, dags_test, ensure_db
    from rftflow.params import PROJECT_ROOT

    conf = json.loads(args.conf) if args.conf else {}
    for item in args.set or []:
        key, _, value = item.partition("=")
        try:
            conf[key] = json.loads(value)
        except json.JSONDecodeError:
            conf[key] = value
    home = Path(args.airflow_home or PROJECT_ROOT / ".airflow")
    env = airflow_env(home, args.artifact_root)
    ensure_db(home, env)
    log = home / "runs" / f"{args.dag_id}.log"
    rc = dags_test(args.dag_id, conf, env, log, answer=args.on_hold.capitalize(),
                   on_answer=lambda answer: print(f"the gate held the candidate for a person; answering the "
                                                  f"approval step with {answer!r} (--on-hold)", flush=True))
    print(f"{args.dag_id}: exit code {rc}; log {log}")
    return rc


def _champion(args: argparse.Namespace) -> int:
    from rftflow.params import default_artifact_root
    from rftflow.registry import ChampionRegistry

    registry = ChampionRegistry(args.artifact_root or default_artifact_root(), args.family)
    champion, token = registry.current()
    if champion is None:
        print(f"no champion registered for {args.family}")
        return 1
    print(json.dumps({"champion": champion.model_dump(), "token": token}, indent=2, default=str))
    if args.history:
        for entry in registry.history():
            print(json.dumps(entry, default=str))
    return 0


def _history(args: argparse.Namespace) -> int:
    from rftflow.params import default_artifact_root
    from rftflow.report import summary_text
    from rftflow.summary import read_index

    cycles = read_index(args.artifact_root or default_artifact_root(), args.family)
    if not cycles:
        print("no finished cycles")
        return 0
    for summary in cycles:
        print(
            summary_text(summary)
            if args.verbose
            else f"{summary['run_id']} cycle {summary['cycle']}: {summary['outcome']} — {summary['outcome_reason']}"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="rftflow", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    for name, (spec, help_text) in _DELEGATED.items():
        p = sub.add_parser(name, help=help_text)
        p.set_defaults(_spec=spec)
    run = sub.add_parser("run", help="run rft_cycle locally (airflow dags test, SQLite home in the project)")
    run.add_argument("--dag-id", default="rft_cycle")
    run.add_argument("--conf", help="run params as JSON")
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="one param (value parsed as JSON)")
    run.add_argument("--artifact-root")
    run.add_argument("--airflow-home")
    run.add_argument("--on-hold", choices=["reject", "approve"], default="reject",
                     help="when the gate holds the candidate for a person, answer the approval step with this "
                          "(default reject: nobody approved it); in the UI a reviewer answers instead")
    run.set_defaults(_func=_run_cycle)
    champ = sub.add_parser("champion", help="show the current champion")
    champ.add_argument("--family", default="tiny-finqa")
    champ.add_argument("--artifact-root")
    champ.add_argument("--history", action="store_true")
    champ.set_defaults(_func=_champion)
    hist = sub.add_parser("history", help="list finished cycles")
    hist.add_argument("--family")
    hist.add_argument("--artifact-root")
    hist.add_argument("-v", "--verbose", action="store_true")
    hist.set_defaults(_func=_history)
    return ap


def main(argv: list[str] | None = None) -> int:
    from rftflow.redact import install_log_redaction

    install_log_redaction()
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = build_parser()
    if argv and argv[0] in _DELEGATED:
        # Delegated subcommands own their arguments; build just that sub-parser.
        spec, help_text = _DELEGATED[argv[0]]
        add_arguments, run = _load(spec)
        sub = argparse.ArgumentParser(prog=f"rftflow {argv[0]}", description=help_text)
        add_arguments(sub)
        return run(sub.parse_args(argv[1:]))
    args = ap.parse_args(argv)
    return args._func(args)


if __name__ == "__main__":
    raise SystemExit(main())
