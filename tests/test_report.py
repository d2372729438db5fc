"""Tests for the cycle report: Markdown + HTML + valid PNG plots for full and minimal cycles."""

import re
from pathlib import Path

from rftflow import store
from rftflow.gate import EvalEvidence, GateConfig, decide
from rftflow.gate_simulation import nested_rows
from rftflow.report import summary_text, write_cycle_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def evals(pass_at_1: float, carry: float, no_carry: float, tokens: float = 18.0) -> dict:
    return {
        "pass_at_1": pass_at_1,
        "mean_reward": pass_at_1 + 0.05,
        "mean_response_tokens": tokens,
        "n": 64,
        "pass_at_k": None,
        "k": 0,
        "breakdown": {
            "category": {
                "carry": {"pass_at_1": carry, "mean_reward": carry + 0.05, "n": 32},
                "no_carry": {"pass_at_1": no_carry, "mean_reward": no_carry + 0.05, "n": 32},
            }
        },
    }


def rft_rows(n: int = 12) -> list[dict]:
    out = []
    for i in range(n):
        out.append({
            "step": (i + 1) * 5,
            "critic/rewards/mean": 0.2 + 0.04 * i,
            "critic/rewards/max": 1.0,
            "critic/rewards/min": 0.0,
            "actor/entropy": 1.1 - 0.03 * i,
            "actor/grad_norm": 0.4,
            "actor/lr": 5e-5,
            "response_length/mean": 17.0 + 0.1 * i,
            "frac_reward_zero_std": 0.4 - 0.01 * i,
            **({"actor/kl_loss": 0.01 * i} if i else {}),  # KL missing on the first row, as some backends do
        })
    return out


def sft_rows() -> list[dict]:
    return [{"step": s, "train/loss": 2.0 / (1 + s / 50), "actor/lr": 1e-3, "actor/grad_norm": 1.0}
            for s in range(50, 550, 50)]


def diversity(stage: str, all_fail: float, mixed: float, all_pass: float, decision: str, reason: str) -> dict:
    return {
        "stage": stage,
        "metrics": {"k": 8, "n_prompts": 128, "all_pass": all_pass, "all_fail": all_fail, "mixed": mixed,
                    "mean_pass_rate": 0.3, "expected_mixed": 0.6, "pass_at_k": 0.5},
        "decision": {"decision": decision, "reason": reason},
    }


def full_summary() -> dict:
    baseline, candidate = evals(0.10, 0.02, 0.18), evals(0.62, 0.45, 0.79)
    gate = decide(EvalEvidence(baseline, nested_rows(64, 0.10), "baseline"),
                  EvalEvidence(candidate, nested_rows(64, 0.62), "candidate"), None, rft_rows(), GateConfig(),
                  cycle=1, max_cycles=2)
    assert gate.decision == "promote"
    return {
        "dag_id": "rft_cycle",
        "run_id": "manual__2025-01-01T00:00:00+00:00",
        "cycle": 1,
        "max_cycles": 2,
        "model_family": "tiny",
        "backend": "local",
        "start_model": "file:///models/tiny-base",
        "candidate_model": "file:///artifacts/rft_cycle/run/cycle-1/rft/model",
        "stages": [
            {"stage": "validate_data", "status": "done", "decision": "pass", "reason": "all checks passed",
             "duration_s": 1.2},
            {"stage": "baseline_eval", "status": "reused", "reason": "same model, data and reward as before"},
            {"stage": "diversity_check", "status": "done", "decision": "sft_first",
             "reason": "82% of prompts all-fail (> 70%)", "duration_s": 14.0},
            {"stage": "sft", "status": "done", "duration_s": 95.0},
            {"stage": "diversity_recheck", "status": "done", "decision": "rft", "reason": "41% mixed"},
            {"stage": "rft", "status": "done", "duration_s": 181.0},
            {"stage": "checkpoint_eval", "status": "done", "duration_s": 6.5},
            {"stage": "gate", "status": "done", "decision": gate.decision, "reason": gate.reason},
        ],
        "validation": {
            "status": "warn", "ok": True, "backend": "local", "kind": "rft",
            "files": {"train": {"uri": "file:///data/train.jsonl", "rows": 512}},
            "checks": [{"name": "row_count", "split": "train", "status": "warn", "observed": 512,
                        "expected": ">= 100", "description": "rows"}],
        },
        "baseline": baseline,
        "candidate": candidate,
        "champion": None,
        "diversity": [
            diversity("diversity_check", 0.82, 0.10, 0.08, "sft_first", "82% of prompts all-fail (> 70%)"),
            # logged as counts rather than fractions: still drawn as fractions
            diversity("diversity_recheck", 40, 52, 36, "rft", "41% mixed"),
        ],
        "gate": gate.to_dict(),
        "outcome": "promoted",
        "outcome_reason": gate.reason,
        "cost_usd": 0.0,
    }


def assert_png(uri: str) -> None:
    data = store.read_bytes(uri)
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 100 and height > 100
    assert data.rstrip(b"\0").endswith(b"IEND\xaeB`\x82")


def test_full_report(artifact_root: str):
    out = store.join(artifact_root, "rft_cycle/run/cycle-1/report")  # file:// and s3:// (moto)
    summary = full_summary()
    result = write_cycle_report(out, summary, {"sft": sft_rows(), "rft": rft_rows()})

    assert result["report_md_uri"] == f"{out}/report.md"
    assert result["report_html_uri"] == f"{out}/report.html"
    names = sorted(uri.rsplit("/", 1)[1] for uri in result["plots"])
    assert names == ["diversity.png", "eval_comparison.png", "gate_forest.png", "training_rft.png",
                     "training_sft.png"]
    for uri in result["plots"]:
        assert uri.startswith(out + "/plots/")
        assert_png(uri)

    md = store.read_text(result["report_md_uri"])
    assert "**Outcome: PROMOTED.**" in md
    # every gate reason, with its check name and detail
    for reason in summary["gate"]["reasons"]:
        assert f"| {reason['check']} |" in md
        assert reason["detail"].replace("|", "\\|") in md
    assert "Decision: PROMOTE." in md
    # per-category numbers: carry and no_carry, baseline and candidate, and the change
    assert re.search(r"\| category \| carry \| 32 \| 0\.020 \| 0\.450 \| \+0\.430 \|", md)
    assert re.search(r"\| category \| no_carry \| 32 \| 0\.180 \| 0\.790 \| \+0\.610 \|", md)
    assert "| pass@1 | 0.100 | 0.620 | +0.520 |" in md
    # stage decisions and why
    assert "| diversity_check | done | sft_first | 82% of prompts all-fail (> 70%) |" in md
    assert "| baseline_eval | reused |" in md
    # diversity as fractions, even when a check logged counts
    assert "| diversity_recheck | 8 | 128 | 31% | 41% | 28% | 0.300 | 60% |" in md
    # images are referenced relative to the report
    for name in names:
        assert f"(plots/{name})" in md

    page = store.read_text(result["report_html_uri"])
    assert page.startswith("<!DOCTYPE html>")
    for name in names:
        assert f'src="plots/{name}"' in page
    assert "no_carry" in page and "Decision: PROMOTE." in page
    assert "<script" not in page and "http" not in page.split("<body>")[0]  # self-contained


def test_minimal_report_stopped_after_diversity(tmp_path: Path):
    out = str(tmp_path / "report")  # a plain path works as well as file://
    summary = {
        "dag_id": "rft_cycle",
        "run_id": "scheduled__2025-01-02",
        "cycle": 1,
        "max_cycles": 1,
        "model_family": "tiny",
        "backend": "local",
        "start_model": "file:///models/champion",
        "candidate_model": None,
        "stages": [
            {"stage": "validate_data", "status": "done"},
            {"stage": "baseline_eval", "status": "done"},
            {"stage": "diversity_check", "status": "done", "decision": "stop_saturated",
             "reason": "95% of prompts all-pass"},
            {"stage": "rft", "status": "skipped"},
        ],
        "baseline": {"pass_at_1": 0.95, "mean_reward": 0.96, "n": 64},
        "candidate": None,
        "champion": None,
        "diversity": [
            diversity("diversity_check", 0.0, 0.05, 0.95, "stop_saturated", "95% of prompts all-pass"),
        ],
        "gate": None,
        "outcome": "stopped",
        "outcome_reason": "nothing left to learn: 95% of prompts all-pass",
        "cost_usd": None,
    }
    result = write_cycle_report(out, summary, {})
    names = sorted(uri.rsplit("/", 1)[1] for uri in result["plots"])
    assert names == ["diversity.png", "eval_comparison.png"]
    for uri in result["plots"]:
        assert_png(uri)
    md = store.read_text(result["report_md_uri"])
    assert "**Outcome: STOPPED.** nothing left to learn" in md
    assert "No candidate was evaluated" in md
    assert "## Gate" not in md and "## Training" not in md
    assert (tmp_path / "report" / "report.html").is_file()

    # training stages with no usable rows draw nothing and do not fail
    again = write_cycle_report(out, summary, {"rft": [], "sft": [{"step": 1}]})
    assert sorted(u.rsplit("/", 1)[1] for u in again["plots"]) == names


def test_rft_rows_without_kl_or_entropy_still_plot_what_is_there(tmp_path: Path):
    rows = [{"step": i, "critic/rewards/mean": 0.1 * i} for i in range(5)]
    result = write_cycle_report(f"file://{tmp_path}", {"outcome": "rejected"}, {"rft": rows})
    assert [u.rsplit("/", 1)[1] for u in result["plots"]] == ["training_rft.png"]
    assert_png(result["plots"][0])
    md = store.read_text(result["report_md_uri"])
    assert "| critic/rewards/mean | 5 |" in md and "actor/kl_loss" not in md


def test_summary_text_tells_the_cycle_in_a_few_lines():
    text = summary_text(full_summary(), report_uri="file:///artifacts/report/report.html")
    assert text.splitlines()[1].startswith("outcome: PROMOTED - better than the baseline beyond chance: "
                                           "vs the baseline, +53.1 points (0.094 -> 0.625 on 64 prompts")
    assert re.search(r"diversity_check +done +sft_first - 82% of prompts all-fail \(> 70%\)", text)
    assert "diversity_check: all-fail 82%, mixed 10%, all-pass 8% -> sft_first" in text
    carry = next(line for line in text.splitlines() if "category=carry" in line)
    assert "0.020 / 0.070" in carry and "0.450 / 0.500" in carry and "+0.430" in carry
    assert "gate: promote" in text
    assert text.endswith("report: file:///artifacts/report/report.html")
    assert len(text.splitlines()) < 30


def test_summary_text_minimal():
    text = summary_text({"outcome": "stopped", "outcome_reason": "all prompts all-pass",
                         "baseline": {"pass_at_1": 0.9}})
    assert "outcome: STOPPED - all prompts all-pass" in text
    assert "0.900" in text
