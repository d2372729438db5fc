"""The local stages on a GPU, decided on a CPU machine: precision, full or LoRA, vLLM for GRPO and for sampling,
accelerate launch on several GPUs. Every branch of the plan is a pure function of the recipe and what the machine
has, so it is tested here; on CPU the plan hands TRL exactly the arguments it had before GPUs were planned for."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from rftflow.backends.local import gpu
from rftflow.backends.local.gpu import (
    PlanError,
    gpu_plan,
    per_device_batch,
    precision_for,
    training_method,
    vllm_choice,
)
from rftflow.cycle.recipes import RecipeError, RFTConfig, SFTConfig, load_recipe

ROOT = Path(__file__).resolve().parents[3]
CPU = {"cuda": False, "bf16_ok": False, "vllm_available": False}
H100 = {"cuda": True, "bf16_ok": True, "vllm_available": True}
T4 = {"cuda": True, "bf16_ok": False, "vllm_available": False}
TINY_PARAMS = 885_632  # about the tiny track's model (rftflow.backends.local.tiny_model)


# ------------------------------------------------------------------------------------ recipe fields


def test_new_recipe_fields_default_to_auto_and_bad_values_name_the_field():
    for cfg in (SFTConfig(), RFTConfig(), load_recipe("local", "sft"), load_recipe("local", "rft")):
        assert (cfg.precision, cfg.method, cfg.processes, cfg.gradient_checkpointing) == ("auto", "auto", "auto", False)
        assert cfg.lora_above_params == 1.5e9
    assert RFTConfig().vllm == "auto" and RFTConfig().vllm_gpu_memory_utilization == 0.3
    for stage in ("eval", "diversity"):
        assert load_recipe("local", stage).vllm == "auto"
    assert load_recipe("local", "sft", {"processes": "2", "method": "lora"}).processes == 2
    with pytest.raises(RecipeError, match=r"processes: Value error, expected auto or a whole number of processes"):
        load_recipe("local", "sft", {"processes": 0})
    with pytest.raises(RecipeError, match=r"rft.yaml \(overrides\): precision: "):
        load_recipe("local", "rft", {"precision": "fp8"})
    with pytest.raises(RecipeError, match=r"vllm: "):
        load_recipe("local", "eval", {"vllm": "yes"})


# ------------------------------------------------------------------------------------ the pieces of the plan


def test_precision_auto_is_bf16_where_supported_fp16_on_older_gpus_fp32_on_cpu():
    assert precision_for("auto", cuda=False, bf16_ok=False) == "fp32"
    assert precision_for("auto", cuda=True, bf16_ok=True) == "bf16"
    assert precision_for("auto", cuda=True, bf16_ok=False) == "fp16"
    assert precision_for("fp32", cuda=True, bf16_ok=True) == "fp32"
    assert precision_for("bf16", cuda=False, bf16_ok=False) == "bf16"  # torch's CPU autocast
    with pytest.raises(PlanError, match="precision: fp16 needs a CUDA GPU"):
        precision_for("fp16", cuda=False, bf16_ok=False)
    with pytest.raises(PlanError, match=r"precision: bf16 is not supported by this GPU"):
        precision_for("bf16", cuda=True, bf16_ok=False)


def test_method_auto_picks_lora_only_above_the_size_threshold():
    assert training_method("auto", n_params=TINY_PARAMS, lora_above_params=1.5e9) == "full"
    assert training_method("auto", n_params=1_500_000_000, lora_above_params=1.5e9) == "full"  # at it: full
    assert training_method("auto", n_params=7_000_000_000, lora_above_params=1.5e9) == "lora"
    assert training_method("auto", n_params=None, lora_above_params=1.5e9) == "full"
    assert training_method("full", n_params=7_000_000_000, lora_above_params=1.5e9) == "full"
    assert training_method("lora", n_params=TINY_PARAMS, lora_above_params=1.5e9) == "lora"


def test_vllm_is_used_only_with_cuda_and_the_package_and_on_says_what_is_missing():
    assert vllm_choice("auto", cuda=True, vllm_available=True) is True
    assert vllm_choice("on", cuda=True, vllm_available=True) is True
    assert vllm_choice("off", cuda=True, vllm_available=True) is False
    assert vllm_choice("auto", cuda=True, vllm_available=False) is False
    assert vllm_choice("auto", cuda=False, vllm_available=True) is False
    with pytest.raises(PlanError) as err:
        vllm_choice("on", cuda=False, vllm_available=False)
    assert "vllm: on needs a CUDA GPU" in str(err.value) and "and the vllm package" in str(err.value)
    with pytest.raises(PlanError, match=r"vllm: on needs the vllm package \(not importable"):
        vllm_choice("on", cuda=True, vllm_available=False)
    with pytest.raises(PlanError, match=r"vllm: on needs a CUDA GPU \(torch.cuda.is_available\(\) is False\);"):
        vllm_choice("on", cuda=False, vllm_available=True)


def test_the_global_batch_is_split_between_processes_or_the_field_is_named():
    assert per_device_batch(SFTConfig(batch_size=64), 1) == 64
    assert per_device_batch(SFTConfig(batch_size=64), 4) == 16
    assert per_device_batch(RFTConfig(prompts_per_step=32, num_generations=8), 2) == 128
    assert per_device_batch(RFTConfig(prompts_per_step=1, num_generations=8), 2) == 4  # a group across 2 ranks
    with pytest.raises(PlanError, match=r"batch_size \(64\) is not divisible by the 3 training processes"):
        per_device_batch(SFTConfig(batch_size=64), 3)
    with pytest.raises(PlanError, match=r"prompts_per_step x num_generations \(3 x 3 = 9\) is not divisible by the 2"):
        per_device_batch(RFTConfig(prompts_per_step=3, num_generations=3), 2)


# ------------------------------------------------------------------------------------ the whole plan


def test_on_cpu_the_plan_hands_trl_exactly_the_arguments_it_had_before():
    for cfg in (load_recipe("local", "sft"), load_recipe("local", "rft"), SFTConfig(), RFTConfig()):
        plan = gpu_plan(cfg, **CPU, n_params=TINY_PARAMS)
        # what _common_args passed before: use_cpu=not cuda, bf16=False, fp16=False, activation_checkpointing=False
        assert plan["trainer_args"] == {"use_cpu": True, "bf16": False, "fp16": False,
                                        "activation_checkpointing": False}
        assert plan["grpo_args"] == {} and plan["load_dtype"] is None and plan["vllm"] is False
        assert (plan["precision"], plan["method"], plan["world_size"]) == ("fp32", "full", 1)
    assert gpu_plan(load_recipe("local", "rft"), **CPU, n_params=TINY_PARAMS)["per_device_batch"] == 256
    assert gpu_plan(SFTConfig(gradient_checkpointing=True), **CPU, n_params=1)["trainer_args"][
        "activation_checkpointing"] is True


def test_on_a_bf16_gpu_with_vllm_grpo_generates_with_colocated_vllm_in_bf16():
    plan = gpu_plan(RFTConfig(vllm_gpu_memory_utilization=0.4), **H100, n_params=TINY_PARAMS)
    assert plan["trainer_args"] == {"use_cpu": False, "bf16": True, "fp16": False, "activation_checkpointing": False}
    assert plan["grpo_args"] == {"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.4}
    assert (plan["method"], plan["load_dtype"]) == ("full", "float32")  # fp32 master weights under autocast
    big = gpu_plan(RFTConfig(), **H100, n_params=7_000_000_000)
    assert (big["method"], big["load_dtype"]) == ("lora", "bfloat16")  # a frozen base in bf16, fp32 adapters
    assert gpu_plan(RFTConfig(vllm="off"), **H100, n_params=1)["grpo_args"] == {}
    sft = gpu_plan(SFTConfig(), **H100, n_params=7_000_000_000)
    assert sft["vllm"] is False and sft["grpo_args"] == {} and sft["method"] == "lora"


def test_on_an_older_gpu_without_vllm_it_trains_in_fp16_and_generates_with_hf():
    plan = gpu_plan(RFTConfig(method="lora"), **T4, n_params=TINY_PARAMS)
    assert plan["trainer_args"] == {"use_cpu": False, "bf16": False, "fp16": True, "activation_checkpointing": False}
    assert plan["grpo_args"] == {} and plan["load_dtype"] == "float16"
    with pytest.raises(PlanError, match="vllm: on needs the vllm package"):
        gpu_plan(RFTConfig(vllm="on"), **T4, n_params=1)
    with pytest.raises(PlanError, match="vllm: on needs a CUDA GPU"):
        gpu_plan(RFTConfig(vllm="on"), **CPU, n_params=1)
    assert gpu_plan(RFTConfig(precision="fp32"), **T4, n_params=1)["trainer_args"]["fp16"] is False


def test_the_planned_argument_names_are_fields_of_trls_configs():
    import dataclasses

    from trl import GRPOConfig
    from trl import SFTConfig as TrlSFTConfig

    plan = gpu_plan(RFTConfig(), **H100, n_params=1)
    assert set(plan["trainer_args"]) <= {f.name for f in dataclasses.fields(TrlSFTConfig)}
    assert set(plan["trainer_args"]) | set(plan["grpo_args"]) <= {f.name for f in dataclasses.fields(GRPOConfig)}


def test_the_tiny_model_is_counted_from_its_config_and_auto_trains_it_in_full(tmp_path):
    from rftflow.backends.local.tiny_model import build_tiny

    info = build_tiny(tmp_path / "tiny", seed=0)
    n = gpu.count_parameters(str(tmp_path / "tiny"))
    assert n == info["parameters"] < 1.5e9
    assert gpu_plan(load_recipe("local", "sft"), **H100, n_params=n)["method"] == "full"


# ------------------------------------------------------------------------------------ sampling through vLLM


def test_vllm_sampling_arguments_mirror_the_hf_pass():
    greedy = gpu.vllm_sampling_kwargs(k=8, temperature=0.0, top_p=0.9, top_k=0, max_new_tokens=24, seed=7)
    assert greedy == {"n": 1, "temperature": 0.0, "top_p": 1.0, "top_k": -1, "seed": 7, "max_tokens": 24}
    sampled = gpu.vllm_sampling_kwargs(k=8, temperature=1.0, top_p=0.9, top_k=0, max_new_tokens=24, seed=7)
    assert sampled == {"n": 8, "temperature": 1.0, "top_p": 0.9, "top_k": -1, "seed": 7, "max_tokens": 24}
    assert gpu.vllm_sampling_kwargs(k=2, temperature=0.7, top_p=1.0, top_k=50, max_new_tokens=4, seed=0)["top_k"] == 50
    engine = gpu.vllm_engine_kwargs("/m", bf16_ok=False, gpu_memory_utilization=0.5, seed=3)
    assert engine == {"model": "/m", "tokenizer": "/m", "dtype": "float16", "gpu_memory_utilization": 0.5, "seed": 3,
                      "tensor_parallel_size": 1}


@pytest.fixture(scope="module")
def tokenizer():
    from rftflow.backends.local.tiny_model import build_tokenizer

    return build_tokenizer()


def test_a_vllm_completion_is_the_same_dict_as_the_hf_one(tokenizer):
    from rftflow.backends.local.sampling import _completion, vllm_completion

    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    body = tokenizer(" 57-33=24 #### 24", add_special_tokens=False)["input_ids"]
    stopped = vllm_completion(tokenizer, body + [eos], "stop", eos, pad)
    assert stopped == _completion(tokenizer, body + [eos], eos, pad)
    assert stopped == {"text": " 57-33=24 #### 24", "tokens": len(body) + 1, "truncated": False}
    # should vLLM leave the EOS it stopped on out of token_ids, the count still includes it
    assert vllm_completion(tokenizer, body, "stop", eos, pad) == stopped
    cut = vllm_completion(tokenizer, body, "length", eos, pad)
    assert cut == _completion(tokenizer, body, eos, pad) == {"text": " 57-33=24 #### 24", "tokens": len(body),
                                                             "truncated": True}


def test_vllm_sample_sends_the_chat_prompts_as_token_ids_and_returns_k_completions(tokenizer, monkeypatch):
    from rftflow.backends.local.sampling import render_prompts, vllm_sample

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(SamplingParams=lambda **kw: kw))
    eos = tokenizer.eos_token_id
    answer = tokenizer(" 1 #### 1", add_special_tokens=False)["input_ids"]

    class FakeLLM:
        def generate(self, prompts, params, use_tqdm=True):
            self.prompts, self.params = prompts, params
            outs = [types.SimpleNamespace(token_ids=answer + [eos], finish_reason="stop")] * params["n"]
            return [types.SimpleNamespace(outputs=outs) for _ in prompts]

    llm = FakeLLM()
    prompts = [[{"role": "user", "content": "What was the change?"}], [{"role": "user", "content": "Total?"}]]
    got = vllm_sample(llm, tokenizer, prompts, k=3, temperature=1.0, top_p=0.9, max_new_tokens=12, seed=5)
    texts = render_prompts(tokenizer, prompts)
    assert llm.prompts == [{"prompt_token_ids": tokenizer(t, add_special_tokens=False)["input_ids"]} for t in texts]
    assert llm.params == {"n": 3, "temperature": 1.0, "top_p": 0.9, "top_k": -1, "seed": 5, "max_tokens": 12}
    assert [len(r) for r in got] == [3, 3] and got[0][0] == {"text": " 1 #### 1", "tokens": len(answer) + 1,
                                                              "truncated": False}
    greedy = vllm_sample(llm, tokenizer, prompts, k=4, temperature=0.0)
    assert llm.params["n"] == 1 and [len(r) for r in greedy] == [4, 4]  # one greedy completion, copied k times
    assert greedy[0][0] is not greedy[0][1]


def test_sampling_with_vllm_on_without_cuda_fails_before_loading_anything():
    from rftflow.backends.local.sampling import sample_passes

    with pytest.raises(PlanError, match="vllm: on needs a CUDA GPU .* and the vllm package"):
        sample_passes("/no/such/model", [], [], vllm="on")


# ------------------------------------------------------------------------------------ processes


def test_processes_auto_is_one_per_gpu_and_more_than_the_gpus_is_an_error():
    assert gpu.resolve_processes("auto", device_count=0) == 1
    assert gpu.resolve_processes("auto", device_count=1) == 1
    assert gpu.resolve_processes("auto", device_count=8) == 8
    assert gpu.resolve_processes(2, device_count=8) == 2
    assert gpu.resolve_processes(1, device_count=0) == 1
    with pytest.raises(PlanError, match="processes: 2 needs 2 CUDA devices; this machine has 0"):
        gpu.resolve_processes(2, device_count=0)


def test_several_processes_start_the_worker_with_accelerate_launch_and_valid_flags():
    from accelerate.commands.launch import launch_command_parser

    assert gpu.worker_command("/j/sft.json", processes=1, python="py") == ["py", "-m", "rftflow.backends.local.worker",
                                                                            "/j/sft.json"]
    argv = gpu.worker_command("/j/sft.json", processes=4, mixed_precision="bf16", python="py", port=29555)
    assert argv[:3] == ["py", "-m", "accelerate.commands.launch"]
    args = launch_command_parser().parse_args(argv[3:])  # accelerate's own parser accepts what we build
    assert (args.num_processes, args.mixed_precision, args.multi_gpu, args.num_machines) == (4, "bf16", True, 1)
    assert (args.module, args.training_script, args.training_script_args) == (True, "rftflow.backends.local.worker",
                                                                              ["/j/sft.json"])
    assert args.main_process_port == 29555
    assert gpu.launch_plan({"processes": "auto", "precision": "auto"}, {"devices": 4, "bf16": False}) == {
        "processes": 4, "mixed_precision": "fp16", "env": {}}
    assert gpu.launch_plan({}, {"devices": 0, "bf16": False}) == {"processes": 1, "mixed_precision": "no", "env": {}}


def test_the_runner_probes_no_gpu_here_and_starts_the_worker_as_before(tmp_path, monkeypatch):
    from rftflow.backends.local import runner

    assert gpu.cuda_probe() == {"devices": 0, "bf16": False}  # no NVIDIA device node on this machine
    assert gpu.cuda_probe({"CUDA_VISIBLE_DEVICES": ""}) == {"devices": 0, "bf16": False}
    job = tmp_path / "sft.json"
    plain = [sys.executable, "-m", "rftflow.backends.local.worker", str(job)]
    assert runner.worker_launch("sft", {"cfg": SFTConfig().model_dump()}, job, {}) == (plain, {})
    assert runner.worker_launch("grpo", {"cfg": RFTConfig().model_dump()}, job, {}) == (plain, {})


def test_on_a_node_with_several_gpus_the_runner_starts_one_trainer_process_per_gpu(tmp_path, monkeypatch):
    from rftflow.backends.local import runner

    job = tmp_path / "grpo.json"
    plain = [sys.executable, "-m", "rftflow.backends.local.worker", str(job)]
    monkeypatch.setattr(gpu, "cuda_probe", lambda env=None: {"devices": 4, "bf16": True})
    argv, env = runner.worker_launch("grpo", {"cfg": RFTConfig().model_dump()}, job, {})
    assert "accelerate.commands.launch" in argv and argv[argv.index("--num_processes") + 1] == "4" and env == {}
    assert argv[argv.index("--mixed_precision") + 1] == "bf16" and argv[-3:] == ["-m", "rftflow.backends.local.worker", str(job)]
    assert runner.worker_launch("generate", {}, job, {}) == (plain, {})  # sampling: one process (vLLM or HF)
    # one process on a 4-GPU node sees one GPU: the Trainer would otherwise use DataParallel and 4x the batch
    one = {"cfg": SFTConfig(processes=1).model_dump()}
    assert runner.worker_launch("sft", one, job, {}) == (plain, {"CUDA_VISIBLE_DEVICES": "0"})
    assert runner.worker_launch("sft", one, job, {"CUDA_VISIBLE_DEVICES": "2,3"}) == (plain, {"CUDA_VISIBLE_DEVICES": "2"})


def test_a_recipe_the_machine_cannot_honour_fails_before_a_lease_or_child_exists(tmp_path, monkeypatch):
    from rftflow.backends.local import lease, runner

    monkeypatch.setattr(gpu, "cuda_probe", lambda env=None: {"devices": 1, "bf16": True})
    with pytest.raises(PlanError, match="processes: 2 needs 2 CUDA devices; this machine has 1"):
        runner.start_or_adopt("sft", {"cfg": SFTConfig(processes=2).model_dump()}, job_dir=tmp_path)
    assert lease.read_lease(tmp_path) is None and not (tmp_path / "sft.json").exists()


def test_a_worker_on_another_rank_trains_without_the_lease_and_writes_no_result(tmp_path, monkeypatch):
    from rftflow.backends.local import worker

    ran = []
    monkeypatch.setattr(worker, "_setup", lambda threads: None)
    monkeypatch.setitem(worker.JOBS, "sft", lambda params: ran.append(params) or {"rank": 1})
    job = tmp_path / "sft.json"
    job.write_text(json.dumps({"kind": "sft", "params": {"lease": {"dir": str(tmp_path / "nowhere"), "owner": "x"}},
                               "result_path": str(tmp_path / "sft-result.json")}))
    monkeypatch.setenv("RANK", "1")
    assert worker.main([str(job)]) == 0 and len(ran) == 1
    assert not (tmp_path / "sft-result.json").exists() and not (tmp_path / "nowhere").exists()
    job.write_text(json.dumps({"kind": "generate", "params": {}, "result_path": str(tmp_path / "r.json")}))
    assert worker.main([str(job)]) == 1  # only training runs on several processes


def test_world_reads_the_environment_until_a_process_group_exists(monkeypatch):
    from rftflow.backends.local.training import world

    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert world() == (0, 1)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert world() == (3, 4)
    monkeypatch.setenv("WORLD_SIZE", "many")
    assert world() == (0, 1)


# ------------------------------------------------------------------------------------ benchmark


def test_the_gpu_benchmark_says_in_one_line_that_it_needs_cuda_and_exits_2():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py")], capture_output=True,
                          text=True, timeout=120, env={"CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2, done.stderr
    assert done.stdout == "" and done.stderr.strip().count("\n") == 0
    assert done.stderr.startswith("bench_gpu: no CUDA device here")
