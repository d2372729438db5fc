"""Tests for the cycle report: Markdown + HTML + valid PNG plots for full and minimal cycles."""

import re
from pathlib import Path

from rftflow.artifacts import store
from rftflow.publish.report import summary_text, write_cycle_report
from rftflow.scoring.gate import EvalEvidence, GateConfig, decide
from rftflow.scoring.gate_simulation import nested_rows

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


# --------------------------------------------------------------------------- per-prompt rows, link, stage why

def finished_cycle_report(tmp_path: Path, monkeypatch, improved: bool = True) -> tuple[dict, str, str]:
    """A cycle written stage by stage with its rows.jsonl files (tests/plugins/test_plugin.py); (summary, md, html)."""
    from finished_cycles import write_finished_cycle

    monkeypatch.setenv("RFTFLOW_TRACKING", "off")
    summary = write_finished_cycle((tmp_path / "artifacts").as_uri(), "manual__2026-11-24T09:00:00+00:00",
                                   improved=improved)
    return summary, store.read_text(summary["report_md_uri"]), store.read_text(summary["report_html_uri"])


def test_pass_rate_histogram_from_the_diversity_rows(tmp_path: Path, monkeypatch):
    summary, md, page = finished_cycle_report(tmp_path, monkeypatch)
    # 20 prompts x 4 rollouts: 4 all-fail, 3 / 5 / 3 with one to three passes, 5 all-pass; mean rate 0.525
    # expected at that rate: 20 * C(4, j) 0.525^j 0.475^(4-j)
    for row in ("| 0 of 4 | 4 | 20% | 1.0 |", "| 1 of 4 | 3 | 15% | 4.5 |", "| 2 of 4 | 5 | 25% | 7.5 |",
                "| 3 of 4 | 3 | 15% | 5.5 |", "| 4 of 4 | 5 | 25% | 1.5 |"):
        assert row in md
    assert ("55% of prompts are mixed where 87% would be if every prompt passed with the mean rate 0.53: "
            "pass rates differ from prompt to prompt") in md
    plot = summary["report_html_uri"].rsplit("/", 1)[0] + "/plots/pass_rates.png"
    assert plot in summary["plots"]
    assert_png(plot)
    assert 'src="plots/pass_rates.png"' in page


def test_samples_where_baseline_and_candidate_differ_come_from_the_eval_rows(tmp_path: Path, monkeypatch):
    _, md, page = finished_cycle_report(tmp_path, monkeypatch)
    # baseline passes p0..p79, candidate p0..p109: 30 wins, no loss; five shown, spread over the 30
    assert "On 30 prompt(s) the candidate passes where the baseline fails, on 0 the reverse; 5 shown" in md
    shown = re.findall(r"#### Prompt (p\d+): candidate passes, baseline fails \(category=(\w+)\)", md)
    assert [pid for pid, _ in shown] == ["p80", "p86", "p92", "p98", "p104"]
    # p86: its question from the eval set, the reference, and both answers as the evals wrote them
    p86 = md.split("#### Prompt p86")[1].split("####")[0]
    assert "What is 17 * 86 + 3?" in p86 and "\n1465\n" in p86
    assert "*baseline (fail, reward 0)*" in p86 and "so the answer is 14651" in p86
    assert "*candidate (pass, reward 1)*" in p86 and "so the answer is 1465\n" in p86
    assert "<pre>[baseline] step" in page

    _, rejected, _ = finished_cycle_report(tmp_path / "rejected", monkeypatch, improved=False)
    assert "on 0 prompt(s) the candidate passes where the baseline fails, on 10 the reverse" in rejected.replace(
        "On 0", "on 0")
    assert rejected.count("baseline passes, candidate fails") == 5


def test_samples_are_escaped_and_cut(tmp_path: Path):
    rows = {"baseline": [{"id": "a", "passed": False, "reward": 0.0, "reference_answer": {"x": 1},
                          "completion": "<script>alert(1)</script> " + "x" * 2000}],
            "candidate": [{"id": "a", "passed": True, "reward": 1.0, "completion": "```fenced``` & fine"}]}
    summary = {**full_summary(), "stages": []}
    result = write_cycle_report(str(tmp_path), summary, {}, rows, prompts={"a": "Is 1 < 2?"})
    page = store.read_text(result["report_html_uri"])
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Is 1 &lt; 2?" in page and "```fenced``` &amp; fine" in page and '{"x": 1}' in page.replace(
        "&quot;", '"')
    assert "[1426 more characters]" in page  # 600 of the 2,026 characters shown
    md = store.read_text(result["report_md_uri"])
    assert "````text\n```fenced``` & fine\n````" in md  # a fence longer than any backtick run inside


def test_pass_fail_reward_gets_one_eval_panel(tmp_path: Path, monkeypatch):
    summary, md, _ = finished_cycle_report(tmp_path, monkeypatch)
    assert "mean reward equals pass@1 and is shown once" in md
    assert "| mean reward |" not in md and "candidate reward" not in md
    one = store.read_bytes(summary["report_html_uri"].rsplit("/", 1)[0] + "/plots/eval_comparison.png")
    # a reward that is not pass/fail (mean reward = pass@1 + 0.05) keeps both panels
    two = store.read_bytes(write_cycle_report(str(tmp_path / "graded"), full_summary(), {})["plots"][1])
    assert "eval_comparison" in write_cycle_report(str(tmp_path / "graded"), full_summary(), {})["plots"][1]
    height = lambda png: int.from_bytes(png[20:24], "big")  # noqa: E731
    assert height(one) < 0.7 * height(two)
    graded = store.read_text(str(tmp_path / "graded" / "report.md"))
    assert "| mean reward | 0.150 | 0.670 | +0.520 |" in graded and "shown once" not in graded


def test_response_length_as_a_distribution(tmp_path: Path, monkeypatch):
    _, md, _ = finished_cycle_report(tmp_path, monkeypatch)
    assert "### Response length (tokens)" in md
    assert "| baseline | 200 | 9 | 14.0 | 18 | 19 | 14.0 |" in md
    assert "| candidate | 200 | 13 | 18.0 | 22 | 23 | 18.0 |" in md
    assert "| mean response tokens |" not in md  # the distribution replaces the single number
    # rows without token counts (an AWS eval returns text): words of the answer
    rows = {"baseline": [{"id": str(i), "passed": True, "reward": 1.0, "completion": "a b c"[: 2 * i + 1]}
                         for i in range(3)]}
    result = write_cycle_report(str(tmp_path / "words"), {"baseline": {"pass_at_1": 1.0}}, {}, rows)
    words = store.read_text(result["report_md_uri"])
    assert "### Response length (words)" in words and "| baseline | 3 | 1 | 2.0 | 3 | 3 | 2.0 |" in words


def test_airflow_link_only_when_the_base_url_is_set(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.com/")
    with_link = write_cycle_report(str(tmp_path / "a"), full_summary(), {})
    md = store.read_text(with_link["report_md_uri"])
    url = "https://airflow.example.com/dags/rft_cycle/runs/manual__2025-01-01T00%3A00%3A00%2B00%3A00"
    assert f"[open this run in Airflow]({url})" in md
    assert f'<a href="{url}">open this run in Airflow</a>' in store.read_text(with_link["report_html_uri"])
    monkeypatch.delenv("AIRFLOW__API__BASE_URL")
    without = write_cycle_report(str(tmp_path / "b"), full_summary(), {})
    assert "open this run in Airflow" not in store.read_text(without["report_md_uri"])
    assert "<a " not in store.read_text(without["report_html_uri"])


def test_stage_table_says_why_sft_ran_and_what_rft_ran_on(tmp_path: Path, monkeypatch):
    md = store.read_text(write_cycle_report(str(tmp_path), full_summary(), {})["report_md_uri"])
    assert "| sft | done |  | diversity_check chose SFT first (82% all-fail, 10% mixed, 8% all-pass) |" in md
    assert ("| rft | done |  | GRPO from the SFT checkpoint, after diversity_recheck decided rft "
            "(31% all-fail, 41% mixed, 28% all-pass) |") in md
    _, finished, _ = finished_cycle_report(tmp_path / "finished", monkeypatch)
    assert "| sft | skipped |  | not needed: diversity_check chose RFT directly (20% all-fail, 55% mixed" in finished
    assert re.search(r"\| rft \| done \|  \| GRPO from the start model \(\.\.\./models/base\) on train\.jsonl, "
                     r"after diversity_check decided rft", finished)


def test_report_renders_when_rows_are_missing_or_odd(tmp_path: Path):
    summary = full_summary()
    odd = {"baseline": [{"id": 1}, {"passed": True}], "candidate": [], "diversity_check": [{"k": 0}],
           "diversity_recheck": [{"k": 4, "pass_rate": "?"}]}
    result = write_cycle_report(str(tmp_path), summary, {}, odd, prompts=None, airflow_base_url="")
    md = store.read_text(result["report_md_uri"])
    assert "## Evaluation" in md and "Per-prompt pass rates" not in md and "Sample outputs" not in md
    assert "| mean reward |" in md  # no usable rows: the metrics decide, and they are not pass/fail
