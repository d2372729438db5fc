"""Learning benchmark for the local backend: base -> SFT -> GRPO on the tiny track, with an equal-compute
SFT control, printing accuracy (greedy and sampled, by category), diversity, wall times and throughput.

    .venv/bin/python benchmarks/bench_learning.py --seed 0
    .venv/bin/python benchmarks/bench_learning.py --seeds 0-4      # one row per seed, min/median/max, share met
    .venv/bin/python benchmarks/bench_learning.py --seeds 0-4 --sft-only   # SFT and its eval only

Every stage runs through LocalBackend exactly as the DAG runs it (child processes, manifests, metrics.jsonl).
Targets (2 CPU cores): SFT greedy pass@1 >= 0.55 and converged; the whole story <= 8 min; GRPO beats its SFT
start and the control by >= 10 points greedy pass@1; GRPO ends above the teacher's accuracy; batched sampling
>= 3x one prompt at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rftflow.artifacts import store  # noqa: E402
from rftflow.backends.base import StageContext  # noqa: E402
from rftflow.backends.local.backend import LocalBackend  # noqa: E402
from rftflow.cycle.recipes import load_recipe  # noqa: E402
from rftflow.data import sample_data
from rftflow.scoring import diversity

TARGET_STORY_S = 8 * 60
TARGET_SFT = 0.55
TARGET_GAIN = 0.10
TARGET_SPEEDUP = 3.0
REWARD = "numeric"


def cpu_seconds() -> float:
    """CPU time of this process plus its finished children (the worker processes): a load-independent cost."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def eval_summary(backend: LocalBackend, ctx: StageContext, model_uri: str, eval_uri: str, k: int) -> dict[str, Any]:
    t0, c0 = time.time(), cpu_seconds()
    m = backend.evaluate(ctx, model_uri, eval_uri, REWARD, {"pass_at_k": k, "max_prompts": None})
    rows = [json.loads(line) for line in store.read_text(m.outputs["rows_uri"]).splitlines() if line.strip()]
    table = diversity.summarize(diversity.outcome_rows([r["id"] for r in rows], [r["sample_rewards"] for r in rows],
                                                       1.0))
    teacher_slips = sum(1 for r in rows if r["metadata"].get("category") == "carry" and _is_slip(r))
    carry = sum(1 for r in rows if r["metadata"].get("category") == "carry")
    return {"metrics": m.metrics, "diversity": table, "wall_s": time.time() - t0, "cpu_s": cpu_seconds() - c0,
            "slip_rate_carry": teacher_slips / carry if carry else None}


def _is_slip(row: dict[str, Any]) -> bool:
    """True when the greedy answer is exactly the teacher's forgot-the-carry answer (reference +- 10)."""
    text = row["completion"]
    if "####" not in text:
        return False
    try:
        got = int(text.rsplit("####", 1)[1].strip())
        ref = int(row["reference_answer"])
    except ValueError:
        return False
    op = row["metadata"].get("op")
    return got == (ref - 10 if op == "add" else ref + 10)


def diversity_decision(backend: LocalBackend, ctx: StageContext, model_uri: str, train_uri: str) -> dict[str, Any]:
    t0 = time.time()
    m = backend.diversity(ctx, model_uri, train_uri, REWARD)
    return {"metrics": m.metrics, "decision": m.decision, "wall_s": time.time() - t0}


def sampling_throughput(model_path: str, eval_uri: str, threads: int, n_prompts: int = 64, k: int = 8) -> dict:
    """Batched (all prompts in one generate call) against one prompt per call, same rollouts each."""
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", "10000")  # as the worker child does (see rftflow.backends.local.runner)
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    from rftflow.backends.local.sampling import load_model, sample
    from rftflow.data.dataset import read_records

    torch.set_num_threads(threads)
    model, tokenizer = load_model(model_path)
    prompts = [r.prompt_messages() for r in read_records(eval_uri)[:n_prompts]]
    sample(model, tokenizer, prompts[:4], k=k, temperature=1.0, batch_size=4)  # warm-up
    out = {}
    for name, batch in (("batched", n_prompts), ("one_prompt_at_a_time", 1)):
        t0 = time.perf_counter()
        sample(model, tokenizer, prompts, k=k, temperature=1.0, batch_size=batch, seed=7)
        seconds = time.perf_counter() - t0
        out[name] = {"seconds": seconds, "rollouts_per_s": n_prompts * k / seconds}
    out["speedup"] = out["one_prompt_at_a_time"]["seconds"] / out["batched"]["seconds"]
    return out


def pct(x: float | None) -> str:
    return "  -  " if x is None else f"{x:.3f}"


def check(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def parse_seeds(text: str) -> list[int]:
    """"0-4" -> [0, 1, 2, 3, 4]; "0,2,5" -> [0, 2, 5]; "3" -> [3]."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part[1:]:
            lo, hi = part.split("-", 1) if not part.startswith("-") else part.rsplit("-", 1)
            seeds.extend(range(int(lo), int(hi) + 1))
        elif part:
            seeds.append(int(part))
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: expected distinct seeds such as 0-4 or 0,2,5")
    return seeds


def trainer_result(ctx: StageContext, kind: str) -> dict[str, Any]:
    """The trainer's own result (kept in the stage's logs folder), for what the manifest does not carry."""
    local = store.local_path(ctx.uri)
    path = Path(local) / "logs" / f"{kind}-result.json" if local else None
    if path is None or not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8")).get("result") or {}


def sft_convergence(sft_metrics: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
    """The SFT stage's convergence report: from its manifest metrics, else from the trainer's result."""
    if isinstance(sft_metrics.get("convergence"), dict):
        return sft_metrics["convergence"]
    return trainer_result(ctx, "sft").get("convergence") or {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0, help="data, teacher noise, model init, GRPO prompts")
    ap.add_argument("--seeds", type=parse_seeds, default=None,
                    help="several seeds, e.g. 0-4 or 0,2,5: one story each, then a table with one row per seed, "
                         "the min/median/max of each column and the share of seeds meeting each target")
    ap.add_argument("--sft-only", action="store_true", help="stop after SFT and its eval (no GRPO, no control)")
    ap.add_argument("--sft-steps", type=int, default=None, help="default: the local sft recipe")
    ap.add_argument("--grpo-steps", type=int, default=None, help="default: the local rft recipe")
    ap.add_argument("--k", type=int, default=8, help="sampled rollouts per eval prompt")
    ap.add_argument("--threads", type=int, default=2, help="torch threads in the worker")
    ap.add_argument("--out", default=None, help="artifact root (default: a fresh temporary folder); with --seeds "
                                                "each seed writes under seed<N>/")
    ap.add_argument("--control-clock", choices=["wall", "cpu"], default="wall",
                    help="match the control to GRPO's training wall time (default) or its CPU time, the fairer "
                         "measure when other jobs share the cores")
    ap.add_argument("--no-decisions", action="store_true", help="skip the diversity stage on training prompts")
    ap.add_argument("--no-throughput", action="store_true", help="skip the batched-sampling speed check")
    args = ap.parse_args(argv)
    if args.seeds is None:
        run_seed(args, args.seed, Path(args.out) if args.out else None)
        return 0
    base = Path(args.out or tempfile.mkdtemp(prefix="bench-learning-seeds-"))
    summaries = []
    for i, seed in enumerate(args.seeds):
        if i:
            args.no_throughput = True  # once is enough: it measures sampling, not learning
        summaries.append(run_seed(args, seed, base / f"seed{seed}"))
        print(flush=True)
    print(seeds_table(summaries, args.sft_only))
    (base / "seeds.json").write_text(json.dumps(summaries, indent=2, default=str))
    print(f"per-seed summaries: {base / 'seeds.json'}")
    return 0


def run_seed(args: argparse.Namespace, seed: int, root: Path | None) -> dict[str, Any]:
    """One seed's story (or its SFT only); prints its report and returns its summary."""
    args = argparse.Namespace(**{**vars(args), "seed": seed})
    story_t0, story_c0 = time.time(), cpu_seconds()
    root = root or Path(tempfile.mkdtemp(prefix=f"bench-learning-s{args.seed}-"))
    data = sample_data.write_track("tiny", root / "data", seed=args.seed)
    eval_uri, train_uri, sft_uri = str(data["eval"]), str(data["train"]), str(data["sft"])
    sft_rows = [json.loads(line) for line in Path(sft_uri).read_text().splitlines()]
    teacher_acc = sum(r["messages"][-1]["content"].endswith(f"#### {r['reference_answer']}") for r in sft_rows) \
        / len(sft_rows)
    backend = LocalBackend(torch_threads=args.threads, work_dir=str(root / "work"), reuse_complete=False)
    ctx = StageContext(str(root / "artifacts"), "bench_learning", f"seed{args.seed}", 0, "base")
    sft_cfg = load_recipe("local", "sft", {"seed": args.seed, **({"max_steps": args.sft_steps} if args.sft_steps else {})})
    rft_cfg = load_recipe("local", "rft", {"seed": args.seed, **({"max_steps": args.grpo_steps} if args.grpo_steps else {})})
    print(f"seed {args.seed}: artifacts under {root}; teacher accuracy on its demos {teacher_acc:.3f}; "
          f"{len(sft_rows)} demos, SFT {sft_cfg.max_steps} steps, GRPO {rft_cfg.max_steps} steps, "
          f"{args.threads} torch threads, cpu count {os.cpu_count()}, load avg {os.getloadavg()[0]:.1f}", flush=True)

    t0, c0 = time.time(), cpu_seconds()
    base = backend.resolve_model(f"tiny:seed={args.seed}", ctx)
    times = {"build_tiny": time.time() - t0}
    cpu = {"build_tiny": cpu_seconds() - c0}
    stages: dict[str, dict[str, Any]] = {}
    decisions: dict[str, dict[str, Any]] = {}

    def run_eval(label: str, model_uri: str) -> None:
        stages[label] = eval_summary(backend, ctx.for_stage(f"eval_{label}"), model_uri, eval_uri, args.k)
        m = stages[label]["metrics"]
        print(f"  eval {label}: greedy {m['pass_at_1']:.3f}, sampled {m['sampled_pass_at_1']:.3f}, "
              f"pass@{args.k} {m['pass_at_k']:.3f} ({stages[label]['wall_s']:.1f} s)", flush=True)
        if not args.no_decisions and label in ("base", "sft"):  # where the pipeline decides what to run next
            decisions[label] = diversity_decision(backend, ctx.for_stage(f"diversity_{label}"), model_uri, train_uri)
            d = decisions[label]
            print(f"  diversity {label} (train prompts): {d['decision']['decision']} ({d['wall_s']:.1f} s)", flush=True)

    run_eval("base", base)
    t0, c0 = time.time(), cpu_seconds()
    sft = backend.sft(ctx.for_stage("sft"), base, sft_uri, {"seed": args.seed, "max_steps": sft_cfg.max_steps})
    times["sft"], cpu["sft"] = time.time() - t0, cpu_seconds() - c0
    print(f"  sft: {sft.metrics['steps']} steps, train {sft.metrics['train_seconds']:.1f} s "
          f"({sft.metrics['train_cpu_seconds']:.0f} s CPU) "
          f"(stage {times['sft']:.1f} s)", flush=True)
    conv = sft_convergence(sft.metrics, ctx.for_stage("sft"))
    if conv:
        print(f"  sft converged: {conv.get('converged')} (loss {pct(conv.get('loss_last'))}, fall over the last "
              f"tenth of the steps {pct(conv.get('loss_fall_last_tenth'))}; on {conv.get('fit_prompts')} demo prompts "
              f"accuracy {pct(conv.get('model_accuracy'))} against the demos' {pct(conv.get('demo_accuracy'))})"
              + "".join(f"; {r}" for r in conv.get("not_converged_reasons") or []), flush=True)
    run_eval("sft", sft.checkpoint_uri)
    if args.sft_only:
        story_s = time.time() - story_t0
        m = stages["sft"]["metrics"]
        print(f"  seed {args.seed}: SFT greedy {m['pass_at_1']:.3f} (target >= {TARGET_SFT})  "
              f"{check(m['pass_at_1'] >= TARGET_SFT)}; {story_s / 60:.1f} min", flush=True)
        return {"seed": args.seed, "sft_only": True, "story_s": story_s, "story_cpu_s": cpu_seconds() - story_c0,
                "times": times, "cpu": cpu, "teacher_acc": teacher_acc,
                "greedy": {x: stages[x]["metrics"]["pass_at_1"] for x in stages},
                "sampled": {x: stages[x]["metrics"]["sampled_pass_at_1"] for x in stages},
                "pass_at_k": {x: stages[x]["metrics"]["pass_at_k"] for x in stages},
                "decisions": {x: d["decision"] for x, d in decisions.items()},
                "sft": sft.metrics, "sft_convergence": conv}

    t0, c0 = time.time(), cpu_seconds()
    grpo = backend.rft(ctx.for_stage("rft"), sft.checkpoint_uri, train_uri, REWARD,
                       {"seed": args.seed, "max_steps": rft_cfg.max_steps})
    times["grpo"], cpu["grpo"] = time.time() - t0, cpu_seconds() - c0
    print(f"  grpo: {grpo.metrics['steps']} steps, train {grpo.metrics['train_seconds']:.1f} s, "
          f"{grpo.metrics['rollouts']} rollouts, {grpo.metrics['rollouts_per_s']:.0f} rollouts/s "
          f"(stage {times['grpo']:.1f} s)", flush=True)
    run_eval("grpo", grpo.checkpoint_uri)

    # Equal-compute control: SFT continued on the same demos for GRPO's training time (wall or CPU clock).
    budget = grpo.metrics["train_cpu_seconds" if args.control_clock == "cpu" else "train_seconds"]
    t0, c0 = time.time(), cpu_seconds()
    control = backend.sft(ctx.for_stage("sft_control"), sft.checkpoint_uri, sft_uri, {
        "seed": args.seed, "max_steps": 1_000_000, "learning_rate": 3e-4, "lr_scheduler": "constant_with_warmup",
        "warmup_steps": 20, "save_steps": 1_000_000, "max_train_seconds": budget, "train_clock": args.control_clock})
    times["control"], cpu["control"] = time.time() - t0, cpu_seconds() - c0
    print(f"  control: {control.metrics['steps']} steps in {control.metrics['train_seconds']:.1f} s "
          f"(stage {times['control']:.1f} s)", flush=True)
    stages_order = ["base", "sft", "grpo", "control"]
    stages["control"] = eval_summary(backend, ctx.for_stage("eval_control"), control.checkpoint_uri, eval_uri, args.k)
    story_s, story_cpu = time.time() - story_t0, cpu_seconds() - story_c0

    t0 = time.time()
    throughput = None if args.no_throughput else sampling_throughput(store.local_path(sft.checkpoint_uri),
                                                                     eval_uri, args.threads)
    times["throughput"] = time.time() - t0

    # ---------------------------------------------------------------------------------------- report
    print()
    print(f"== tiny track, seed {args.seed}: 500 held-out prompts; sampled = T 1.0, k={args.k}, seed 1234 ==")
    cats = sorted({c for s in stages.values() for c in s["metrics"]["breakdown"].get("category", {})})
    head = f"{'stage':<8} {'greedy':>7} {'sampled':>8} " + " ".join(f"{'g:' + c:>10} {'s:' + c:>10}" for c in cats)
    head += (f" {'pass@' + str(args.k):>7} {'all-fail':>8} {'mixed':>6} {'all-pass':>8} {'slip':>6} {'wall s':>7}"
             f" {'cpu s':>7}")
    print(head)
    walls = {"base": times["build_tiny"], "sft": times["sft"], "grpo": times["grpo"], "control": times["control"]}
    cpu["base"] = cpu["build_tiny"]
    for label in stages_order:
        s = stages[label]
        m, d = s["metrics"], s["diversity"]
        by = m["breakdown"].get("category", {})
        line = f"{label:<8} {pct(m['pass_at_1']):>7} {pct(m['sampled_pass_at_1']):>8} "
        line += " ".join(f"{pct(by.get(c, {}).get('pass_at_1')):>10} {pct(by.get(c, {}).get('sampled_pass_at_1')):>10}"
                         for c in cats)
        line += (f" {pct(m['pass_at_k']):>7} {pct(d['all_fail']):>8} {pct(d['mixed']):>6} {pct(d['all_pass']):>8}"
                 f" {pct(s['slip_rate_carry']):>6} {walls[label]:>7.1f} {cpu[label]:>7.1f}")
        print(line)
    print("  (slip = share of carry prompts whose greedy answer is exactly the teacher's forgot-carry answer;"
          " wall s / cpu s = the stage's wall time and CPU time (worker + caller): build, SFT, GRPO, control;"
          " the evals took " + ", ".join(f"{stages[x]['wall_s']:.0f}" for x in stages_order) + " s wall, "
          + ", ".join(f"{stages[x]['cpu_s']:.0f}" for x in stages_order) + " s CPU)")
    if decisions:
        print("diversity stage on 256 training prompts x 8 (the pipeline's decision):")
        for label, d in decisions.items():
            m = d["metrics"]
            print(f"  {label:<7} all-fail {m['all_fail']:.3f} mixed {m['mixed']:.3f} all-pass {m['all_pass']:.3f} "
                  f"mean pass {m['mean_pass_rate']:.3f} expected mixed {m['expected_mixed']:.3f} "
                  f"(per-prompt {m['expected_mixed_per_prompt']:.3f}) -> {d['decision']['decision']}")
    g = {x: stages[x]["metrics"]["pass_at_1"] for x in stages_order}
    gain_sft, gain_ctl = g["grpo"] - g["sft"], g["grpo"] - g["control"]
    print()
    print(f"GRPO: {grpo.metrics['steps']} steps, {grpo.metrics['train_seconds']:.1f} s training, "
          f"{grpo.metrics['rollouts']} rollouts, {grpo.metrics['rollouts_per_s']:.0f} rollouts/s (incl. update); "
          f"training reward (first -> last logging window) {pct(grpo.metrics['reward_first'])} -> "
          f"{pct(grpo.metrics['reward_last'])}")
    print(f"control: SFT continued {control.metrics['steps']} steps in {control.metrics['train_seconds']:.1f} s wall, "
          f"{control.metrics['train_cpu_seconds']:.1f} s CPU (GRPO trained {grpo.metrics['train_seconds']:.1f} s wall, "
          f"{grpo.metrics['train_cpu_seconds']:.1f} s CPU; budget matched on the {args.control_clock} clock)")
    bt = throughput
    if bt:
        print(f"sampling 64 prompts x 8: batched {bt['batched']['seconds']:.2f} s "
              f"({bt['batched']['rollouts_per_s']:.0f}/s), one prompt at a time "
              f"{bt['one_prompt_at_a_time']['seconds']:.2f} s ({bt['one_prompt_at_a_time']['rollouts_per_s']:.0f}/s): "
              f"{bt['speedup']:.1f}x")
    print()
    print("targets:")
    print(f"  whole story <= {TARGET_STORY_S // 60} min: {story_s / 60:.1f} min  {check(story_s <= TARGET_STORY_S)}"
          f"   (throughput check adds {times['throughput']:.0f} s; load avg now {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores)")
    print(f"    CPU time of the story: {story_cpu:.0f} s over {args.threads} worker threads (includes the threads' "
          f"short spin-waits, so it grows when other jobs share the cores)")
    print(f"  GRPO - SFT start >= +{TARGET_GAIN * 100:.0f} pts greedy: {gain_sft * 100:+.1f}  {check(gain_sft >= TARGET_GAIN)}")
    print(f"  GRPO - control   >= +{TARGET_GAIN * 100:.0f} pts greedy: {gain_ctl * 100:+.1f}  {check(gain_ctl >= TARGET_GAIN)}")
    print(f"  GRPO > teacher ({teacher_acc:.3f}): {g['grpo']:.3f}  {check(g['grpo'] > teacher_acc)}")
    print(f"  SFT greedy >= {TARGET_SFT}: {g['sft']:.3f}  {check(g['sft'] >= TARGET_SFT)}; SFT converged (its own "
          f"check): {conv.get('converged')}")
    if bt:
        print(f"  batched sampling >= {TARGET_SPEEDUP:.0f}x: {bt['speedup']:.1f}x  "
              f"{check(bt['speedup'] >= TARGET_SPEEDUP)}")
    summary = {"seed": args.seed, "story_s": story_s, "story_cpu_s": story_cpu, "times": times, "cpu": cpu, "teacher_acc": teacher_acc,
               "greedy": g, "sampled": {x: stages[x]["metrics"]["sampled_pass_at_1"] for x in stages_order},
               "breakdown": {x: stages[x]["metrics"]["breakdown"] for x in stages_order},
               "diversity": {x: stages[x]["diversity"] for x in stages_order},
               "decisions": {x: d["decision"] for x, d in decisions.items()},
               "pass_at_k": {x: stages[x]["metrics"]["pass_at_k"] for x in stages_order},
               "grpo": grpo.metrics, "control": control.metrics, "sft": sft.metrics, "sft_convergence": conv,
               "throughput": throughput}
    (root / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"summary: {root / 'summary.json'}")
    return summary


def _get(summary: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(summary, dict) or summary.get(key) is None:
            return None
        summary = summary[key]
    return summary


# (header, width, value of a summary, target test or None); a missing value is shown as "-" and not counted.
def _columns(sft_only: bool) -> list[tuple[str, Any, Any]]:
    cols: list[tuple[str, Any, Any]] = [
        ("teacher", lambda s: s["teacher_acc"], None),
        ("base", lambda s: _get(s, "greedy", "base"), None),
        ("sft", lambda s: _get(s, "greedy", "sft"), lambda v, s: v >= TARGET_SFT),
        ("sft smp", lambda s: _get(s, "sampled", "sft"), None),
        ("sft p@k", lambda s: _get(s, "pass_at_k", "sft"), None),
        ("sft loss", lambda s: _get(s, "sft_convergence", "loss_last"), None),
        ("conv", lambda s: _get(s, "sft_convergence", "converged"), lambda v, s: v is True),
    ]
    if not sft_only:
        cols += [
            ("grpo", lambda s: _get(s, "greedy", "grpo"), lambda v, s: v > s["teacher_acc"]),
            ("control", lambda s: _get(s, "greedy", "control"), None),
            ("g-sft", lambda s: s["greedy"]["grpo"] - s["greedy"]["sft"], lambda v, s: v >= TARGET_GAIN - 1e-9),
            ("g-ctl", lambda s: s["greedy"]["grpo"] - s["greedy"]["control"], lambda v, s: v >= TARGET_GAIN - 1e-9),
            ("grpo smp", lambda s: _get(s, "sampled", "grpo"), None),
        ]
    cols += [
        ("sft s", lambda s: _get(s, "times", "sft"), None),
        ("min", lambda s: s["story_s"] / 60, None if sft_only else lambda v, s: v * 60 <= TARGET_STORY_S),
    ]
    return cols


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3f}"
    return str(value)


def seeds_table(summaries: list[dict[str, Any]], sft_only: bool) -> str:
    """One row per seed, then min / median / max of each numeric column and the share of seeds meeting each
    target (teacher = accuracy of the demos; base/sft/grpo/control = greedy pass@1 on the 500 eval prompts;
    smp = sampled pass@1 at T 1; g-sft / g-ctl = GRPO's greedy gain over its SFT start / the control;
    conv = the SFT stage's own convergence check; sft s = SFT stage seconds; min = the seed's story minutes)."""
    cols = _columns(sft_only)
    width = 9
    lines = ["seed " + " ".join(f"{name:>{width}}" for name, _, _ in cols)]
    values: list[list[Any]] = []
    for s in summaries:
        row = []
        for _, get, _ in cols:
            try:
                row.append(get(s))
            except (KeyError, TypeError):
                row.append(None)
        values.append(row)
        lines.append(f"{s['seed']:>4} " + " ".join(f"{_fmt(v):>{width}}" for v in row))
    for label, fn in (("min", min), ("med", statistics.median), ("max", max)):
        cells = []
        for j in range(len(cols)):
            nums = [r[j] for r in values if isinstance(r[j], int | float) and not isinstance(r[j], bool)]
            cells.append(_fmt(float(fn(nums))) if nums else "")
        lines.append(f"{label:>4} " + " ".join(f"{c:>{width}}" for c in cells))
    cells = []
    for j, (_, _, target) in enumerate(cols):
        if target is None:
            cells.append("")
            continue
        met = sum(1 for r, s in zip(values, summaries, strict=True) if r[j] is not None and target(r[j], s))
        cells.append(f"{met}/{len(summaries)}")
    lines.append(f"{'met':>4} " + " ".join(f"{c:>{width}}" for c in cells))
    targets = [f"sft >= {TARGET_SFT}", "conv = the SFT stage's check says converged"]
    if not sft_only:
        targets += ["grpo > teacher", f"g-sft and g-ctl >= +{TARGET_GAIN:.2f}",
                    f"min <= {TARGET_STORY_S // 60} (the story's wall minutes)"]
    lines.append("targets (met = seeds meeting it): " + "; ".join(targets))
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
