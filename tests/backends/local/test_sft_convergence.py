"""The SFT stage's convergence report: a stalled run (loss on a plateau, answers far below the demonstrations')
is flagged instead of surfacing later as an RFT stage that changed nothing."""

from __future__ import annotations

from rftflow.backends.local.training import final_answer, loss_trend, sft_convergence


def _rows(losses: list[float], every: int = 50) -> list[dict]:
    return [{"step": every * (i + 1), "train/loss": v} for i, v in enumerate(losses)]


def test_final_answer_takes_the_text_after_the_last_marker():
    assert final_answer("57-33=24 #### 24") == "24"
    assert final_answer("a #### 1\nb #### 2\nmore") == "2"
    assert final_answer("  just   text ") == "just text"
    assert final_answer(None) == ""


def test_loss_trend_measures_the_fall_over_the_last_tenth_of_the_steps():
    t = loss_trend(_rows([4.0, 2.0, 1.0, 1.0, 0.9, 0.9, 0.8, 0.8, 0.6, 0.6, 0.3, 0.3]))  # steps 50..600
    assert (t["loss_first"], t["loss_last"], t["loss_min"]) == (4.0, 0.3, 0.3)
    # the tenth before the last: steps (480, 540], i.e. step 500 (0.6); the last tenth: steps 550 and 600 (0.3)
    assert abs(t["loss_fall_last_tenth"] - (0.6 - 0.3) / 0.6) < 1e-9
    assert loss_trend([]) == {}
    assert loss_trend([{"step": 5, "actor/lr": 1.0}]) == {}


def test_a_plateau_that_imitates_its_demos_is_converged():
    c = sft_convergence(_rows([3.0, 1.0, 0.1, 0.06, 0.05, 0.05, 0.05, 0.05]),
                        {"fit_prompts": 256, "demo_agreement": 0.83, "demo_accuracy": 0.75, "model_accuracy": 0.66})
    assert c["converged"] is True and c["not_converged_reasons"] == []


def test_a_stalled_run_is_flagged_by_its_accuracy_against_the_demos():
    # seed 2's symptom: the loss creeps on a plateau, the schedule runs out, answers stay mostly wrong
    c = sft_convergence(_rows([3.0, 0.45, 0.32, 0.28, 0.25, 0.23, 0.22, 0.21]),
                        {"fit_prompts": 256, "demo_agreement": 0.12, "demo_accuracy": 0.75, "model_accuracy": 0.10})
    assert c["converged"] is False
    assert any("below 0.5 x the demonstrations' own 0.750" in r for r in c["not_converged_reasons"])


def test_without_reference_answers_agreement_with_the_demos_decides():
    fit = {"fit_prompts": 100, "demo_agreement": 0.2}
    assert sft_convergence(_rows([1.0, 0.5, 0.5, 0.5]), fit)["converged"] is False
    assert sft_convergence(_rows([1.0, 0.5, 0.5, 0.5]), {**fit, "demo_agreement": 0.9})["converged"] is True


def test_a_jump_that_finished_before_the_end_is_not_still_falling():
    # the loss fell steeply in the third quarter (the model's jump) and was flat over the last fifth
    rows = _rows([3.0, 0.4, 0.35, 0.3, 0.3, 0.3, 0.25, 0.1, 0.05, 0.04, 0.04, 0.04, 0.04, 0.04, 0.04, 0.04])
    c = sft_convergence(rows, {"fit_prompts": 256, "demo_agreement": 0.85, "demo_accuracy": 0.75,
                               "model_accuracy": 0.66})
    assert c["loss_fall_last_tenth"] == 0.0 and c["converged"] is True


def test_a_loss_still_falling_steeply_is_not_converged():
    c = sft_convergence(_rows([3.0, 2.0, 1.5, 1.2, 1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.3, 0.2]),
                        {"fit_prompts": 256, "demo_agreement": 0.9, "demo_accuracy": 0.75, "model_accuracy": 0.7})
    assert c["converged"] is False and "loss still falling" in c["not_converged_reasons"][0]


def test_nothing_measured_is_unknown_not_converged():
    assert sft_convergence([], {"fit_prompts": 0})["converged"] is None
