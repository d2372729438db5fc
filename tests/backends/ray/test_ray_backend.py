"""The `ray` backend against a real Ray head on 127.0.0.1 (rftflow.backends.ray.local_head): jobs submitted over the Jobs
REST API, waited for by the trigger, adopted on retry, stopped when the task fails for good, and failing with
their last log lines."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from rftflow.artifacts import store
from rftflow.backends.base import PendingJob, StageContext, run_remote
from rftflow.backends.local.backend import LocalBackend
from rftflow.backends.ray.backend import RayBackend, load_ray_recipe
from rftflow.backends.ray.client import RayJobs

pytestmark = pytest.mark.slow

TINY = Path(__file__).resolve().parents[3] / "include" / "data" / "tiny"
EVAL = {"max_prompts": 64, "batch_size": 16}  # 4 batches: the Ray job splits them over 2 tasks


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray-models")
    return LocalBackend(work_dir=str(root / "work")).resolve_model(
        "tiny", StageContext((root / "artifacts").as_uri(), "t", "r", 0, "base"))


def _ctx(root: str, stage: str, run: str = "run-1") -> StageContext:
    return StageContext(root, "rft_cycle", run, 1, stage)


def _jobs_of(address: str, stage: str, run: str) -> list[dict]:
    return [j for j in RayJobs(address).list()
            if (j.get("metadata") or {}).get("rftflow_stage") == stage
            and (j.get("metadata") or {}).get("rftflow_run_id") == run]


def _wait_status(address: str, submission: str, wanted: tuple[str, ...], timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = RayJobs(address).info(submission)["status"]
        if status in wanted:
            return status
        time.sleep(0.5)
    raise AssertionError(f"{submission} still {status} after {timeout_s} s")


def test_eval_on_ray_gives_the_local_backends_completions_and_metrics(ray_head, tiny, tmp_path):
    """The eval's batches go to 2 Ray tasks; greedy completions, pass@1 and mean reward are those the local
    backend gives for the same model and prompts; scoring and the manifest are the local backend's own."""
    local = LocalBackend(work_dir=str(tmp_path / "work")).evaluate(
        _ctx((tmp_path / "local").as_uri(), "baseline_eval"), tiny, str(TINY / "eval.jsonl"), "numeric", EVAL)
    ray = RayBackend(poll_s=0.5).evaluate(
        _ctx((tmp_path / "ray").as_uri(), "baseline_eval"), tiny, str(TINY / "eval.jsonl"), "numeric", EVAL)
    assert ray.backend == "ray" and ray.metrics["n"] == local.metrics["n"] == 64
    for key in ("pass_at_1", "mean_reward", "mean_response_tokens"):
        assert ray.metrics[key] == local.metrics[key], key
    rows = {r["id"]: r for r in store.read_jsonl(local.outputs["rows_uri"])}
    ray_rows = store.read_jsonl(ray.outputs["rows_uri"])
    assert [r["id"] for r in ray_rows] == list(rows)
    assert all(r["completion"] == rows[r["id"]]["completion"] for r in ray_rows)
    assert ray.metrics["sampling"]["greedy"]["tasks"] == 2  # it did fan out
    assert "generate job done" in store.read_text(store.join(ray.outputs["rows_uri"].rsplit("/", 1)[0], "logs",
                                                             "evaluate.log"))


def test_a_retried_stage_adopts_its_job_and_a_failed_task_stops_it(ray_head, tiny, tmp_path):
    """Two starts of one stage (a retry, another worker) make one Ray job; a task that failed for good stops it,
    one that will be retried leaves it running; the next start after a stop submits a new attempt."""
    from rftflow.cycle.context import stage_context
    from rftflow.cycle.params import parse_params
    from rftflow.orchestration.operators import stop_remote_job

    root = (tmp_path / "artifacts").as_uri()
    p = parse_params({"artifact_root": root, "backend": "ray"})
    run = "manual__adopt"
    ctx = stage_context(p, "rft_cycle", run, "sft")
    long_sft = {"max_steps": 100_000, "batch_size": 4, "save_steps": 100_000, "warmup_steps": 0}
    first = RayBackend().sft(ctx, tiny, str(TINY / "sft.jsonl"), long_sft)
    again = RayBackend().sft(ctx, tiny, str(TINY / "sft.jsonl"), long_sft)
    assert isinstance(first, PendingJob) and again.job_name == first.job_name
    assert len(_jobs_of(ray_head, "sft", run)) == 1
    _wait_status(ray_head, first.job_name, ("RUNNING",))

    def failure(state: str) -> dict:
        return {"params": p.model_dump(), "dag": SimpleNamespace(dag_id="rft_cycle"), "run_id": run,
                "task": SimpleNamespace(task_id="sft"), "ti": SimpleNamespace(state=state),
                "exception": RuntimeError("the gate's data went missing")}

    stop_remote_job(failure("up_for_retry"))
    assert RayJobs(ray_head).info(first.job_name)["status"] == "RUNNING"
    stop_remote_job(failure("failed"))
    assert _wait_status(ray_head, first.job_name, ("STOPPED",)) == "STOPPED"
    retry = RayBackend().sft(ctx, tiny, str(TINY / "sft.jsonl"), long_sft)
    try:
        assert retry.job_name == f"{first.job_name}-2"
        assert len(_jobs_of(ray_head, "sft", run)) == 2
    finally:
        RayBackend().stop(retry)
        _wait_status(ray_head, retry.job_name, ("STOPPED", "FAILED", "SUCCEEDED"))


def test_a_failing_job_fails_the_stage_with_its_last_log_lines(ray_head, tiny, tmp_path):
    """A model whose config the sampler cannot load: the job fails on the cluster, and the stage's error says
    so with the job's last log lines, not only "the job failed"."""
    import shutil

    broken = tmp_path / "broken-model"
    shutil.copytree(store.local_path(tiny), broken)
    (broken / "config.json").write_text(json.dumps({"hidden_size": 8}))
    ctx = _ctx((tmp_path / "artifacts").as_uri(), "baseline_eval")
    with pytest.raises(RuntimeError) as err:
        RayBackend(poll_s=0.5).evaluate(ctx, str(broken), str(TINY / "eval.jsonl"), "numeric", EVAL)
    message = str(err.value)
    assert "ended FAILED" in message and "its last log lines:" in message
    assert "model_type" in message  # transformers' own complaint, from the job's log


def test_preflight_names_the_unreachable_cluster_and_the_bad_scaling_field(tmp_path):
    backend = RayBackend(address="http://127.0.0.1:9", conn_id="none")
    problems = backend.preflight(model="tiny", reward="numeric", stages=("rft", "eval"),
                                 overrides={"rft": {"ray": {"num_workers": 0}}, "eval": {"max_new_tokens": 0}})
    text = "\n".join(problems)
    assert "recipe_overrides.rft" in text and "num_workers" in text
    assert "recipe_overrides.eval" in text and "max_new_tokens" in text
    assert "Ray cluster http://127.0.0.1:9 cannot be reached" in text
    cfg, scaling = load_ray_recipe("sft", {"ray": {"num_workers": 4}, "max_steps": 7})
    assert (scaling.num_workers, cfg.max_steps, cfg.batch_size) == (4, 7, 64)  # the local recipe underneath


def test_the_trigger_keeps_no_secret_and_reads_it_where_it_runs(monkeypatch):
    from rftflow.orchestration.ray_trigger import RayJobTrigger

    monkeypatch.setenv("RFTFLOW_RAY_TOKEN", "s3cr3t-token")
    backend = RayBackend(address="http://head:8265", conn_id="none")
    trigger = backend.trigger_for(PendingJob("ray_job", "rftflow-sft-c1-abc", details={"deadline": 1e12}))
    path, kwargs = trigger.serialize()
    assert path == "rftflow.orchestration.ray_trigger.RayJobTrigger" and "s3cr3t" not in json.dumps(kwargs)
    rebuilt = RayJobTrigger(**kwargs).jobs()
    assert rebuilt.address == "http://head:8265" and rebuilt.token == "s3cr3t-token"


def test_run_remote_outside_airflow_waits_for_the_job_here(ray_head, tiny, tmp_path):
    """The CLI and library path: no deferral, the trigger runs in this process and the stage completes."""
    backend = RayBackend(poll_s=0.5)
    ctx = _ctx((tmp_path / "artifacts").as_uri(), "diversity_check")
    manifest = run_remote(backend, ctx, lambda: backend.start_diversity(
        ctx, tiny, str(TINY / "train.jsonl"), "numeric", {"max_prompts": 16, "k": 2, "batch_size": 8}))
    assert manifest.decision["decision"] in ("sft_first", "rft", "stop_saturated")
    assert manifest.metrics["n_prompts"] == 16 and manifest.metrics["sampling"]["sampled"]["tasks"] == 2


def test_fsdp_and_deepspeed_reach_trl_on_gpus_and_are_refused_on_cpus(tiny, tmp_path):
    """The recipe's ray.strategy becomes TRL training arguments on every worker; on CPUs only DDP runs, and
    saying otherwise fails before anything is submitted."""
    from rftflow.backends.local.training import training_plan
    from rftflow.backends.ray.backend import strategy_args

    _, fsdp = load_ray_recipe("sft", {"ray": {"strategy": "fsdp", "use_gpu": True}})
    assert strategy_args(fsdp)["fsdp"] == "full_shard auto_wrap"
    _, zero = load_ray_recipe("rft", {"ray": {"strategy": "deepspeed", "use_gpu": True,
                                              "deepspeed_config": {"zero_optimization": {"stage": 3}}}})
    assert strategy_args(zero) == {"deepspeed": {"zero_optimization": {"stage": 3}}}
    cfg, ddp = load_ray_recipe("sft", None)
    assert strategy_args(ddp) == {}
    plan = training_plan(cfg, store.local_path(tiny), 2, strategy_args(fsdp))
    assert plan["trainer_args"]["fsdp"] == "full_shard auto_wrap" and plan["trainer_args"]["use_cpu"] is True
    backend = RayBackend(address="http://127.0.0.1:9", conn_id="none")
    with pytest.raises(ValueError, match="ray.strategy=fsdp needs GPUs"):
        backend.sft(_ctx((tmp_path / "a").as_uri(), "sft"), tiny, str(TINY / "sft.jsonl"),
                    {"ray": {"strategy": "fsdp"}})


def test_the_task_log_gets_each_new_job_log_line_once():
    """The trigger reads the whole job log on every poll (the API has no offset): only lines not shown yet go to
    the task log, Ray's colour codes stripped, and a block Ray Train repeats is said once."""
    from rftflow.orchestration.ray_trigger import LogFollower

    class Log:
        text = ""

        def logs(self, submission_id: str) -> str:
            return self.text

    log = Log()
    follower = LogFollower(log, "rftflow-sft-c1-abc")  # type: ignore[arg-type]
    log.text = "\x1b[36m(RayTrainWorker pid=1)\x1b[0m sft: step 5/40\nsaved\n(RayTrainWorker pid=1) sft: step 5/40\nsaved\n"
    assert follower.new_lines() == ["(RayTrainWorker pid=1) sft: step 5/40", "saved"]
    log.text += "\n(RayTrainWorker pid=1) sft: step 10/40\n"
    assert follower.new_lines() == ["(RayTrainWorker pid=1) sft: step 10/40"]
    assert follower.new_lines() == []


def test_a_driver_whose_supervisor_is_gone_exits_instead_of_training_on(tmp_path):
    """A job stopped while its entrypoint starts can orphan the driver (seen here: a STOPPED job whose Ray Train
    workers trained on and held the head's CPUs). The driver notices its supervisor is gone and exits."""
    import os
    import signal
    import subprocess
    import sys

    driver = ("from rftflow.backends.ray.job import exit_with_supervisor; exit_with_supervisor(0.1); "
              "import time; time.sleep(120)")
    supervisor = (f"import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', {driver!r}]); "
                  "print(p.pid, flush=True); time.sleep(120)")
    parent = subprocess.Popen([sys.executable, "-c", supervisor], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    time.sleep(1.0)
    os.kill(child, 0)  # running while its supervisor lives
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        try:  # reap it if it was reparented to us (a subreaper); otherwise init reaps it
            os.waitpid(child, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        raise AssertionError("the orphaned driver kept running after its supervisor was killed")


def test_a_driver_whose_supervisor_went_before_it_started_exits_at_once(tmp_path):
    """The same race, earlier: the job is stopped while the driver's interpreter starts, so its shell is gone
    before the driver looks (seen here: a STOPPED SFT job trained on for 40 minutes and starved the next job).
    The entrypoint passes its shell's pid ($$); a driver whose parent is no longer that shell exits at once."""
    import subprocess
    import sys

    spec = tmp_path / "never-read.json"
    started = time.time()
    # sh starts the driver in the background and exits: the driver is orphaned before its main runs
    subprocess.run(["/bin/sh", "-c", f"{sys.executable} -m rftflow.backends.ray.job {spec} --parent $$ "
                                     f"> {tmp_path / 'out.txt'} 2>&1 & echo $! > {tmp_path / 'pid'}"], check=True)
    pid = int((tmp_path / "pid").read_text())
    while time.time() - started < 60 and Path(f"/proc/{pid}").exists() and \
            Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z":
        time.sleep(0.1)
    said = (tmp_path / "out.txt").read_text()
    assert "the job's supervisor" in said and "exiting" in said
    assert "never-read.json" not in said  # it left before reading its job (which does not exist)
