"""Seeded generator for the sample datasets shipped under include/data/.

Two tracks: `tiny` (two-digit FinQA-style arithmetic a sub-1M-parameter model learns on a CPU, with
demonstrations from a teacher that forgets the carry) and `finqa` (realistic financial reasoning).
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Iterator
from pathlib import Path

# Eval prompts are drawn first from a fixed seed and excluded from every training stream.
EVAL_SEED = 12345
TEACHER_SLIP = 0.6

_METRICS = [
    "Revenue", "Net income", "Operating income", "Gross profit", "Cash flow", "Total assets",
    "Operating expenses", "Interest expense", "Dividends", "Capital spending", "Inventory", "Deferred revenue",
]
_TEMPLATES = {
    "inc": [
        "{m} was {a} in {y1} and {b} in {y2}. What was the change?",
        "{m} rose from {a} in {y1} to {b} in {y2}. By how much did it increase?",
        "In {y1} {m} was {a}; in {y2} it was {b}. What was the increase?",
    ],
    "dec": [
        "{m} was {a} in {y1} and {b} in {y2}. What was the decrease?",
        "{m} fell from {a} in {y1} to {b} in {y2}. By how much did it decline?",
    ],
    "add": [
        "{m} was {a} in {y1} and {b} in {y2}. What was the total?",
        "{m} of {a} in {y1} plus {b} in {y2} gives what combined amount?",
    ],
}


def is_carry(op: str, a: int, b: int) -> bool:
    """True when the units digits carry (add) or borrow (subtract)."""
    if op == "add":
        return a % 10 + b % 10 >= 10
    hi, lo = (b, a) if op == "inc" else (a, b)
    return hi % 10 < lo % 10


def tiny_problem(rng: random.Random) -> dict:
    op = rng.choice(["inc", "dec", "add"])
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    if op == "inc" and b <= a or op == "dec" and a <= b:
        a, b = b, a
    if a == b:
        b = a + 1 if a < 99 else a - 1
        if op == "dec":
            a, b = max(a, b), min(a, b)
        elif op == "inc":
            a, b = min(a, b), max(a, b)
    y1 = rng.randint(2005, 2023)
    text = rng.choice(_TEMPLATES[op]).format(m=rng.choice(_METRICS), a=a, b=b, y1=y1, y2=y1 + 1)
    if op == "add":
        x, y, ans, sign = a, b, a + b, "+"
    elif op == "inc":
        x, y, ans, sign = b, a, b - a, "-"
    else:
        x, y, ans, sign = a, b, a - b, "-"
    return {
        "prompt": text, "op": op, "x": x, "y": y, "sign": sign, "answer": ans,
        "category": "carry" if is_carry(op, a, b) else "no_carry",
    }


def tiny_solution(p: dict, answer: int) -> str:
    return f"{p['x']}{p['sign']}{p['y']}={answer} #### {answer}"


def teacher_answer(p: dict, rng: random.Random, slip: float = TEACHER_SLIP) -> int:
    """The legacy teacher: right except that it forgets the carry/borrow on `slip` of carry cases."""
    if p["category"] == "carry" and rng.random() < slip:
        return p["answer"] - 10 if p["sign"] == "+" else p["answer"] + 10
    return p["answer"]


def _tiny_row(p: dict, row_id: str) -> dict:
    return {
        "id": row_id,
        "messages": [{"role": "user", "content": p["prompt"]}],
        "reference_answer": str(p["answer"]),
        "category": p["category"],
        "op": p["op"],
    }


def _unique_stream(rng: random.Random, make, seen: set[str]) -> Iterator[dict]:
    while True:
        p = make(rng)
        if p["prompt"] not in seen:
            seen.add(p["prompt"])
            yield p


def tiny_track(seed: int = 0, n_train: int = 2000, n_eval: int = 500, n_sft: int = 20000,
               slip: float = TEACHER_SLIP) -> dict[str, list[dict]]:
    """Train (RFT prompts), eval (held out) and sft (teacher demonstrations) rows for the tiny track."""
    seen: set[str] = set()
    evals = _unique_stream(random.Random(EVAL_SEED), tiny_problem, seen)
    eval_rows = [_tiny_row(next(evals), f"tiny-eval-{i:05d}") for i in range(n_eval)]
    rng = random.Random(seed * 7919 + 1)
    stream = _unique_stream(rng, tiny_problem, seen)
    train_rows = [_tiny_row(next(stream), f"tiny-train-{i:05d}") for i in range(n_train)]
    teacher_rng = random.Random(seed * 7919 + 2)
    sft_rows = []
    for i in range(n_sft):
        # Demonstrations may repeat a prompt (as a legacy log does) but never an eval or RFT prompt.
        p = tiny_problem(rng)
        while p["prompt"] in seen:
            p = tiny_problem(rng)
        row = _tiny_row(p, f"tiny-sft-{i:05d}")
        row["messages"].append({"role": "assistant", "content": tiny_solution(p, teacher_answer(p, teacher_rng, slip))})
        sft_rows.append(row)
    return {"train": train_rows, "eval": eval_rows, "sft": sft_rows}


# ----------------------------------------------------------------------------------------- finqa
_COMPANIES = ["Acme Corp", "Northwind", "Globex", "Initech", "Umbrella Ltd", "Stark Industries", "Wayne Enterprises",
              "Hooli", "Vandelay Imports", "Cyberdyne", "Soylent Co", "Tyrell Corp"]
FINQA_SYSTEM = ("You are a financial analyst. Reason briefly, then give the final numeric answer "
                "on the last line as '#### <number>'.")


def _fmt(x: float) -> str:
    return f"{x:,.1f}"


def finqa_problem(rng: random.Random) -> dict:
    company = rng.choice(_COMPANIES)
    y1 = rng.randint(2012, 2023)
    kind = rng.choice(["pct_change", "margin", "ratio", "cagr_simple", "share"])
    if kind == "pct_change":
        a = round(rng.uniform(100, 5000), 1)
        b = round(a * rng.uniform(0.6, 1.5), 1)
        ans = round((b - a) / a * 100, 1)
        prompt = (f"{company} reported revenue of ${_fmt(a)} million in {y1} and ${_fmt(b)} million in {y1 + 1}. "
                  f"What was the percentage change in revenue? Round to one decimal place.")
        work = f"({_fmt(b)} - {_fmt(a)}) / {_fmt(a)} * 100 = {ans}%"
        unit = "percent"
    elif kind == "margin":
        rev = round(rng.uniform(500, 9000), 1)
        ni = round(rev * rng.uniform(-0.1, 0.35), 1)
        ans = round(ni / rev * 100, 1)
        prompt = (f"| item | {y1} |\n|---|---|\n| Net revenue | {_fmt(rev)} |\n| Net income | {_fmt(ni)} |\n"
                  f"Based on the table for {company} (in $ millions), what was the net margin in {y1}? "
                  f"Round to one decimal place.")
        work = f"{_fmt(ni)} / {_fmt(rev)} * 100 = {ans}%"
        unit = "percent"
    elif kind == "ratio":
        ca = round(rng.uniform(200, 4000), 1)
        cl = round(ca / rng.uniform(0.6, 3.0), 1)
        ans = round(ca / cl, 2)
        prompt = (f"At the end of {y1}, {company} had current assets of ${_fmt(ca)} million and current "
                  f"liabilities of ${_fmt(cl)} million. What was its current ratio? Round to two decimal places.")
        work = f"{_fmt(ca)} / {_fmt(cl)} = {ans}"
        unit = "ratio"
    elif kind == "cagr_simple":
        a = round(rng.uniform(50, 900), 1)
        d = round(rng.uniform(-40, 160), 1)
        b = round(a + d, 1)
        ans = round(b - a, 1)
        prompt = (f"{company}'s operating cash flow was ${_fmt(a)} million in {y1} (vs. ${_fmt(a * 0.9)} million "
                  f"in {y1 - 1}) and ${_fmt(b)} million in {y1 + 1}. What was the change from {y1} to {y1 + 1}, "
                  f"in $ millions?")
        work = f"{_fmt(b)} - {_fmt(a)} = {ans}"
        unit = "usd_millions"
    else:
        seg = round(rng.uniform(50, 2000), 1)
        tot = round(seg / rng.uniform(0.05, 0.9), 1)
        ans = round(seg / tot * 100, 1)
        prompt = (f"In {y1}, {company}'s services segment generated ${_fmt(seg)} million of a total "
                  f"${_fmt(tot)} million in revenue. What share of total revenue came from services, in percent? "
                  f"Round to one decimal place.")
        work = f"{_fmt(seg)} / {_fmt(tot)} * 100 = {ans}%"
        unit = "percent"
    return {"prompt": prompt, "answer": ans, "unit": unit, "kind": kind, "work": work}


def _finqa_row(p: dict, row_id: str, difficulty: str) -> dict:
    return {
        "id": row_id,
        "messages": [{"role": "system", "content": FINQA_SYSTEM}, {"role": "user", "content": p["prompt"]}],
        "reference_answer": {"answer": p["answer"], "unit": p["unit"]},
        "category": p["kind"],
        "difficulty": difficulty,
    }


def finqa_track(seed: int = 0, n_train: int = 2000, n_eval: int = 500, n_sft: int = 1000) -> dict[str, list[dict]]:
    seen: set[str] = set()
    evals = _unique_stream(random.Random(EVAL_SEED), finqa_problem, seen)

    def difficulty(p: dict) -> str:
        return "hard" if p["kind"] in ("margin", "share") else "easy"

    eval_rows = [_finqa_row(p, f"finqa-eval-{i:05d}", difficulty(p)) for i, p in
                 ((i, next(evals)) for i in range(n_eval))]
    stream = _unique_stream(random.Random(seed * 7919 + 11), finqa_problem, seen)
    train_rows = [_finqa_row(p, f"finqa-train-{i:05d}", difficulty(p)) for i, p in
                  ((i, next(stream)) for i in range(n_train))]
    sft_rows = []
    for i in range(n_sft):
        p = next(stream)
        row = _finqa_row(p, f"finqa-sft-{i:05d}", difficulty(p))
        row["messages"].append({"role": "assistant", "content": f"{p['work']}\n#### {p['answer']}"})
        sft_rows.append(row)
    return {"train": train_rows, "eval": eval_rows, "sft": sft_rows}


TRACKS = {"tiny": tiny_track, "finqa": finqa_track}


def write_track(track: str, out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, rows in TRACKS[track](seed=seed).items():
        path = out / f"{split}.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        paths[split] = path
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Regenerate the sample datasets (deterministic for a seed).")
    ap.add_argument("--track", choices=sorted(TRACKS), action="append")
    ap.add_argument("--out", default="include/data")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    for track in args.track or sorted(TRACKS):
        for split, path in write_track(track, Path(args.out) / track, args.seed).items():
            print(f"{track}/{split}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
