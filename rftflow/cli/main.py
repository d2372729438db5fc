"""`rftflow` command line: the data-team operations without opening Airflow.

validate / convert a dataset, test a reward on rollouts, deploy or verify a reward Lambda, run a
cycle locally, show the champion and the cycle history.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

# subcommand -> (module, help); each module exposes add_arguments(parser) and run(args) -> int
_DELEGATED = {
    "validate": ("rftflow.cli.data:validate", "check a dataset (schema + dataset-level checks)"),
    "convert": ("rftflow.cli.data:convert", "convert question/answer CSV or JSONL to RFT JSONL"),
    "test": ("rftflow.cli.reward", "score rollouts with a reward function and print a table"),
    "gate": ("rftflow.cli.gate", "re-run the gate's decision from stored eval results (other settings allowed)"),
    "lambda": ("rftflow.cli.aws", "package, deploy or verify a reward Lambda"),
}


def _load(spec: str):
    module, _, prefix = spec.partition(":")
    mod = importlib.import_module(module)
    if not prefix:
        return mod.add_arguments, mod.run
    return getattr(mod, f"add_{prefix}_arguments"), getattr(mod, f"run_{prefix}")


def _say(text: str = "") -> bool:
    """Print and flush; False when the reader went away (`rftflow history | head`).

    A closed pipe is not an error of the command: the rest of the output is dropped quietly (stdout is
    pointed at /dev/null, so neither later prints nor the interpreter's final flush raise BrokenPipeError),
    and a running cycle is not abandoned halfway because nobody reads its messages any more.
    """
    try:
        print(text, flush=True)
        return True
    except BrokenPipeError:
        _silence_stdout()
        return False


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # a stream without a file descriptor (captured output)
        pass


def _param_names() -> list[str]:
    from rftflow.cycle.params import DEFAULTS

    return sorted(DEFAULTS)


class UsageError(ValueError):
    """Bad command-line input: printed as one message with what was expected, exit code 2."""


def _conf_from(args: argparse.Namespace) -> dict[str, Any]:
    """--fast's overrides, then --conf, then each --set; every key must be an rft_cycle param."""
    conf: dict[str, Any] = {}
    if args.fast:
        from rftflow.cli.demo import FAST  # the demo's smoke settings, so the two never drift apart

        conf.update(json.loads(json.dumps(FAST)))
    if args.conf:
        try:
            given = json.loads(args.conf)
        except json.JSONDecodeError as err:
            raise UsageError(f"--conf: not JSON ({err}); expected an object such as "
                             "'{\"base_model\": \"tiny\", \"max_cycles\": 2}'") from None
        if not isinstance(given, dict):
            raise UsageError(f"--conf: expected a JSON object of params, got {type(given).__name__}")
        conf.update(given)
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set {item!r}: expected KEY=VALUE, e.g. --set max_cycles=2")
        try:
            conf[key] = json.loads(value)
        except json.JSONDecodeError:
            conf[key] = value  # plain text: --set base_model=tiny
    unknown = sorted(set(conf) - set(_param_names()))
    if unknown:
        raise UsageError(f"unknown parameter(s) {', '.join(unknown)}; valid names: {', '.join(_param_names())}")
    return conf


def _cycle_key(summary: dict[str, Any]) -> tuple[str, str, int]:
    return str(summary.get("dag_id")), str(summary.get("run_id")), int(summary.get("cycle") or 0)


def _report_of(summary: dict[str, Any]) -> str | None:
    from rftflow.cli.demo import local_path

    return local_path(summary.get("report_html_uri") or summary.get("report_md_uri"))


def _run_cycle(args: argparse.Namespace) -> int:
    from rftflow.cli.airflow_home import airflow_env, dags_test, ensure_db
    from rftflow.cli.demo import how_to_see
    from rftflow.cycle.params import DEFAULTS, PROJECT_ROOT, default_artifact_root, parse_params
    from rftflow.publish.summary import read_index

    try:
        conf = _conf_from(args)
        parse_params(conf)  # a typo fails here in a second, not in validate_data after Airflow started
    except (UsageError, ValueError) as err:
        print(f"rftflow run: {err}", file=sys.stderr)
        return 2
    home = Path(args.airflow_home or PROJECT_ROOT / ".airflow")
    env = airflow_env(home, args.artifact_root)
    # Where this run's cycles are indexed: the params' artifact root, else the one the run's env gives it.
    root = conf.get("artifact_root") or args.artifact_root or default_artifact_root()
    family = conf.get("model_family") or DEFAULTS["model_family"]
    before = {_cycle_key(s) for s in read_index(root, family)}
    ensure_db(home, env)
    log = home / "runs" / f"{args.dag_id}.log"
    if not args.json:
        _say(f"{args.dag_id}: airflow dags test in {home} (SQLite); artifacts {root}; model family {family}"
             + (" (--fast: smoke step counts)" if args.fast else "") + f"; log {log}")

    def held(answer: str) -> None:
        if not args.json:  # --json: stdout carries only the final object
            _say(f"the gate held the candidate for a person; answering the approval step with {answer!r} "
                 "(--on-hold)")

    progress = None
    if not args.json:  # --json: stdout carries only the final object
        from rftflow.publish.terminal import CycleProgress

        progress = CycleProgress(indent="  ")
    rc = dags_test(args.dag_id, conf, env, log, answer=args.on_hold.capitalize(), on_answer=held,
                   progress=progress)
    cycles = [s for s in read_index(root, family) if _cycle_key(s) not in before]
    if args.json:
        _say(json.dumps({"dag_id": args.dag_id, "exit_code": rc, "log": str(log), "cycles": [
            {"run_id": s.get("run_id"), "cycle": s.get("cycle"), "outcome": s.get("outcome"),
             "outcome_reason": s.get("outcome_reason"), "report": _report_of(s),
             "cycle_json": s.get("cycle_json_uri")} for s in cycles]}, indent=2))
        return rc
    _say(f"{args.dag_id}: exit code {rc}; log {log}")
    for s in cycles:
        _say(f"cycle {s.get('cycle')} of run {s.get('run_id')}: {str(s.get('outcome')).upper()} - "
             f"{s.get('outcome_reason') or 'no reason given'}")
        _say(f"report: {_report_of(s) or 'none written'}")
    if not cycles:
        _say(f"report: none (no cycle of {family} reached its report task under {root}; see the log)")
    _say(how_to_see([log], home, root))
    return rc


def _roots(args: argparse.Namespace) -> list[str]:
    """Where champion/history look: --artifact-root; else the default root, then the demo's, if it has one."""
    if args.artifact_root:
        return [args.artifact_root]
    from rftflow.cli.demo import DEMO_DIR
    from rftflow.cycle.params import default_artifact_root

    roots = [default_artifact_root()]
    demo = (DEMO_DIR / "artifacts").as_uri()
    if demo not in roots and (DEMO_DIR / "artifacts").is_dir():
        roots.append(demo)
    return roots


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    """Left-aligned columns, the last one unpadded (it may be long: a reason or a URI)."""
    cells = [[("-" if v is None else str(v)) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in [headers, *cells]) for i in range(len(headers) - 1)]
    return ["  ".join([*(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)), r[-1]]).rstrip()
            for r in [headers, *cells]]


def _num(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.3f}"


def _champion(args: argparse.Namespace) -> int:
    from rftflow.artifacts.registry import ChampionRegistry

    roots = _roots(args)
    for root in roots:
        registry = ChampionRegistry(root, args.family)
        champion, token = registry.current()
        if champion is None:
            continue
        history = registry.history() if args.history else None
        if args.json:
            out: dict[str, Any] = {"family": args.family, "artifact_root": root, "champion": champion.model_dump(),
                                   "token": token}
            if history is not None:
                out["history"] = history
            _say(json.dumps(out, indent=2, default=str))
            return 0
        metrics = {k: v for k, v in champion.metrics.items() if isinstance(v, int | float)}
        _say(f"champion of {args.family} (in {root})")
        for line in _table(["", ""], [
            ["model", champion.model_uri],
            ["run", f"{champion.run_id}, cycle {champion.cycle}"],
            ["promoted", champion.promoted_at],
            ["metrics", ", ".join(f"{k} {_num(v)}" for k, v in sorted(metrics.items())) or "-"],
            ["manifest", champion.manifest_uri or "-"],
        ])[1:]:
            _say("  " + line)
        if history is not None:
            _say(f"\npromotions ({len(history)}, oldest first):")
            rows = [[e.get("seq"), (e.get("champion") or {}).get("promoted_at"), (e.get("champion") or {}).get("run_id"),
                     (e.get("champion") or {}).get("cycle"),
                     _num(((e.get("champion") or {}).get("metrics") or {}).get("pass_at_1")),
                     (e.get("champion") or {}).get("model_uri")] for e in history]
            for line in _table(["seq", "promoted", "run", "cycle", "pass@1", "model"], rows):
                _say("  " + line)
        return 0
    where = " or ".join(roots)
    if args.json:
        _say(json.dumps({"family": args.family, "champion": None, "looked_in": roots}))
    else:
        _say(f"no champion registered for {args.family} in {where} (--family / --artifact-root to look elsewhere)")
    return 1


def _history(args: argparse.Namespace) -> int:
    from rftflow.publish.report import summary_text
    from rftflow.publish.summary import read_index

    roots = _roots(args)
    found = [(root, read_index(root, args.family)) for root in roots]
    if args.json:
        _say(json.dumps([s for _, cycles in found for s in cycles], indent=2, default=str))
        return 0
    which = f"cycles of {args.family}" if args.family else "cycles"
    if not any(cycles for _, cycles in found):
        _say(f"no finished {which} in {' or '.join(roots)} (--artifact-root to look elsewhere)")
        return 0
    for root, cycles in found:
        if not cycles:
            continue
        _say(f"{len(cycles)} finished {which} in {root}, oldest first:")
        if args.verbose:
            for summary in cycles:
                _say(summary_text(summary, report_uri=_report_of(summary)))
                _say()
            continue
        rows = []
        for s in cycles:
            base = (s.get("baseline") or {}).get("pass_at_1")
            cand = (s.get("candidate") or {}).get("pass_at_1")
            rows.append([s.get("finished_at"), s.get("model_family"), s.get("run_id"), s.get("cycle"),
                         str(s.get("outcome") or "-").upper(), f"{_num(base)} -> {_num(cand)}",
                         s.get("outcome_reason")])
        for line in _table(["finished", "family", "run", "cycle", "outcome", "pass@1", "why"], rows):
            _say("  " + line)
        _say()
    return 0


def build_parser() -> argparse.ArgumentParser:
    from rftflow.cycle.params import DEFAULTS

    ap = argparse.ArgumentParser(prog="rftflow", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    for name, (spec, help_text) in _DELEGATED.items():
        p = sub.add_parser(name, help=help_text)
        p.set_defaults(_spec=spec)
    run = sub.add_parser(
        "run", help="run rft_cycle locally (airflow dags test, SQLite home in the project)",
        description="Run one rft_cycle DAG run with `airflow dags test` in a SQLite Airflow home (no scheduler "
                    "or API server), then print each cycle's outcome and report path. Params not given keep "
                    "the trigger form's defaults.")
    run.add_argument("--dag-id", default="rft_cycle", help="the DAG to run (default: %(default)s)")
    run.add_argument("--conf", metavar="JSON", help="run params as a JSON object, e.g. '{\"base_model\": \"tiny\"}'")
    run.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="one param, repeatable; VALUE is parsed as JSON, else taken as text "
                          "(--set max_cycles=2 --set base_model=tiny). Names: " + ", ".join(sorted(DEFAULTS)))
    run.add_argument("--fast", action="store_true",
                     help="the demo's smoke settings (tiny step counts, 32 diversity prompts, 64 eval prompts): "
                          "checks the wiring in a few minutes, learns little; --conf/--set override them")
    run.add_argument("--artifact-root", metavar="URI",
                     help="where stages write (file:///path or s3://bucket/prefix; default: RFTFLOW_ARTIFACT_ROOT, "
                          "else .artifacts/ in the project)")
    run.add_argument("--airflow-home", metavar="DIR",
                     help="the Airflow home to run in (default: .airflow/ in the project; created and migrated "
                          "on first use)")
    run.add_argument("--on-hold", choices=["reject", "approve"], default="reject",
                     help="when the gate holds the candidate for a person, answer the approval step with this "
                          "(default reject: nobody approved it); in the UI a reviewer answers instead")
    run.add_argument("--json", action="store_true",
                     help="print one JSON object at the end (exit code, log, each cycle's outcome and report) "
                          "instead of text")
    run.set_defaults(_func=_run_cycle)
    where = ("default: RFTFLOW_ARTIFACT_ROOT, else .artifacts/ in the project, then the demo's .demo/artifacts/")
    champ = sub.add_parser("champion", help="show the current champion of a model family",
                           description="Show the champion a model family's cycles compete against.")
    champ.add_argument("--family", default=DEFAULTS["model_family"],
                       help="model family (the trigger form's model_family; default: %(default)s, the demo's)")
    champ.add_argument("--artifact-root", metavar="URI", help=f"where the champion registry lives ({where})")
    champ.add_argument("--history", action="store_true", help="also list every promotion, oldest first")
    champ.add_argument("--json", action="store_true", help="print JSON (the registry's records) instead of a table")
    champ.set_defaults(_func=_champion)
    hist = sub.add_parser("history", help="list finished cycles",
                          description="List finished cycles from the cycle index: outcome, pass@1 baseline -> "
                                      "candidate, and why.")
    hist.add_argument("--family", help="only this model family (default: every family)")
    hist.add_argument("--artifact-root", metavar="URI", help=f"where the cycle index lives ({where})")
    hist.add_argument("-v", "--verbose", action="store_true",
                      help="each cycle's full summary (stages, eval per category, gate, report path)")
    hist.add_argument("--json", action="store_true", help="print the indexed cycle summaries as a JSON list")
    hist.set_defaults(_func=_history)
    return ap


def main(argv: list[str] | None = None) -> int:
    from rftflow.redact import install_log_redaction

    install_log_redaction()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in _DELEGATED:
            # Delegated subcommands own their arguments; build just that sub-parser.
            spec, help_text = _DELEGATED[argv[0]]
            add_arguments, run = _load(spec)
            sub = argparse.ArgumentParser(prog=f"rftflow {argv[0]}", description=help_text)
            add_arguments(sub)
            rc = run(sub.parse_args(argv[1:]))
        else:
            args = build_parser().parse_args(argv)
            rc = args._func(args)
        sys.stdout.flush()  # inside the try: a reader that left shows up here, not at interpreter exit
        return rc
    except BrokenPipeError:  # `rftflow ... | head`: the reader has all it wanted
        _silence_stdout()
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
