"""A local stand-in for Bedrock's OpenAI-compatible endpoint (bedrock-mantle), for the open-weight RFT tests.

It answers only what the Bedrock user guide documents for open-weight reinforcement fine-tuning, and refuses
requests that depart from it (pages cited beside each check), independently of rftflow's own request check:

- Files API: POST /v1/files (multipart, purpose "fine-tune"), GET /v1/files   (rft-prepare-data-open-weight)
- Fine-tuning jobs: POST /v1/fine_tuning/jobs, GET /v1/fine_tuning/jobs[/{id}[/events]], POST .../cancel
  (fine-tuning-openai-job-create: method.type "reinforcement", grader.type "lambda", lambda.function ARN,
  hyperparameters n_epochs / batch_size / learning_rate_multiplier; suffix not supported)
- Chat completions: POST /v1/chat/completions on base and fine-tuned models (fine-tuning-openai-apis:
  "immediate inference ... without additional deployment steps").
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from typing import Any

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

DOCUMENTED_HYPER = {"n_epochs", "batch_size", "learning_rate_multiplier"}
OPENAI_RFT_HYPER = DOCUMENTED_HYPER | {"eval_interval", "eval_samples", "compute_multiplier", "reasoning_effort"}
MODELS = ("openai.gpt-oss-20b", "qwen.qwen3-32b")


class MantleFake:
    """The endpoint's state: files, jobs, chat calls; `finish(job_id)` plays the training finishing."""

    def __init__(self, answers: dict[str, str] | None = None, *, auto_finish: bool = False):
        self.answers = dict(answers or {})  # user prompt text -> reference answer
        self.auto_finish = auto_finish  # a job succeeds the first time it is looked at (for whole-DAG runs)
        self.files: dict[str, dict[str, Any]] = {}
        self.contents: dict[str, bytes] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self.chat_calls = 0
        self.auth: set[str] = set()
        self._ids = itertools.count(1)
        self.lock = threading.Lock()
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}/v1"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()

    # ------------------------------------------------------------------ test controls

    def finish(self, job_id: str, status: str = "succeeded", trained_tokens: int = 2_000_000) -> None:
        job = self.jobs[job_id]
        job["status"] = status
        job["finished_at"] = job["created_at"] + 5400
        if status == "succeeded":
            job["fine_tuned_model"] = f"{job['model']}:ft:rftflow:{job_id}"
            job["trained_tokens"] = trained_tokens
        else:
            job["error"] = {"code": "invalid_grader", "message": "the grader Lambda returned no score", "param": None}
        for step, reward in ((1, 0.2), (2, 0.5), (3, 0.7)):
            self.events[job_id].insert(0, {"id": f"ev-{job_id}-{step}", "object": "fine_tuning.job.event",
                                           "created_at": job["created_at"] + step, "level": "info",
                                           "message": f"Step {step}/3", "type": "metrics",
                                           "data": {"step": step, "train_reward_mean": reward}})

    # ------------------------------------------------------------------ the endpoint

    def _app(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        self.auth.add(request.headers.get("Authorization", ""))
        try:
            status, body = self._route(request)
        except _Refused as refused:
            status, body = 400, {"error": {"message": str(refused), "type": "invalid_request_error"}}
        return Response(json.dumps(body), status=status, mimetype="application/json")(environ, start_response)

    def _route(self, request: Request) -> tuple[int, Any]:
        path, method = request.path.removeprefix("/v1"), request.method
        with self.lock:
            self.requests.append((method, path, None if method == "GET" else _body_of(request)))
        if path == "/files" and method == "POST":
            return 200, self._upload(request)
        if path == "/files" and method == "GET":
            data = [f for f in self.files.values() if request.args.get("purpose") in (None, f["purpose"])]
            return 200, {"object": "list", "data": data, "has_more": False}
        if path == "/fine_tuning/jobs" and method == "POST":
            return 200, self._create(request.get_json())
        if path == "/fine_tuning/jobs" and method == "GET":
            data = sorted(self.jobs.values(), key=lambda j: -j["created_at"])
            return 200, {"object": "list", "data": data, "has_more": False}
        parts = path.strip("/").split("/")
        if parts[:2] == ["fine_tuning", "jobs"] and len(parts) >= 3:
            job = self.jobs.get(parts[2])
            if job is None:
                return 404, {"error": {"message": f"no job {parts[2]}", "type": "not_found"}}
            if len(parts) == 3:
                if self.auto_finish and job["status"] == "validating_files":
                    self.finish(job["id"])
                return 200, job
            if parts[3] == "events":
                return 200, {"object": "list", "data": self.events[job["id"]], "has_more": False}
            if parts[3] == "cancel" and method == "POST":
                job["status"] = "cancelled"
                return 200, job
        if path == "/chat/completions" and method == "POST":
            return 200, self._chat(request.get_json())
        return 404, {"error": {"message": f"{method} {path}: not served here", "type": "not_found"}}

    def _upload(self, request: Request) -> dict[str, Any]:
        if request.form.get("purpose") != "fine-tune":
            raise _Refused("purpose must be fine-tune (rft-prepare-data-open-weight)")
        upload = request.files["file"]
        content = upload.read()
        rows = [json.loads(line) for line in content.decode().splitlines() if line.strip()]
        if not 100 <= len(rows) <= 20_000:
            raise _Refused(f"training data must have 100-20K examples; got {len(rows)}")
        for i, row in enumerate(rows, 1):
            roles = [m.get("role") for m in row.get("messages", [])]
            if not roles or any(r not in ("system", "user", "assistant") for r in roles):
                raise _Refused(f"line {i}: messages must be OpenAI chat turns; got roles {roles}")
            if any(not isinstance(m.get("content"), str) for m in row["messages"]):
                raise _Refused(f"line {i}: message content must be a string in the chat completions format")
            if row.get("reference_answer") in (None, ""):
                raise _Refused(f"line {i}: reference_answer missing")
        file_id = f"file-{next(self._ids):06d}"
        self.files[file_id] = {"id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                               "filename": upload.filename, "purpose": "fine-tune", "status": "processed"}
        self.contents[file_id] = content
        return self.files[file_id]

    def _create(self, body: dict[str, Any]) -> dict[str, Any]:
        allowed = {"model", "training_file", "validation_file", "method"}
        if set(body) - allowed:
            raise _Refused(f"unsupported fields {sorted(set(body) - allowed)} (suffix is not supported)")
        if body.get("model") not in MODELS:
            raise _Refused(f"model {body.get('model')!r} is not available for reinforcement fine-tuning here")
        if body.get("training_file") not in self.files:
            raise _Refused(f"training_file {body.get('training_file')!r}: no such file")
        method = body.get("method") or {}
        rl = method.get("reinforcement") or {}
        grader = rl.get("grader") or {}
        if method.get("type") != "reinforcement" or grader.get("type") != "lambda":
            raise _Refused("method: expected type reinforcement with a lambda grader")
        arn = (grader.get("lambda") or {}).get("function", "")
        if not (arn.startswith("arn:aws:lambda:") and ":function:" in arn):
            raise _Refused(f"grader.lambda.function: not a Lambda ARN: {arn!r}")
        hyper = rl.get("hyperparameters") or {}
        if set(hyper) - OPENAI_RFT_HYPER:
            raise _Refused(f"unknown hyperparameters {sorted(set(hyper) - OPENAI_RFT_HYPER)}")
        if any(isinstance(hyper.get(k), str) for k in DOCUMENTED_HYPER):
            raise _Refused("hyperparameters are numbers")
        job_id = f"ftjob-{next(self._ids):06d}"
        self.jobs[job_id] = {"id": job_id, "object": "fine_tuning.job", "created_at": int(time.time()),
                             "model": body["model"], "training_file": body["training_file"],
                             "validation_file": body.get("validation_file"), "status": "validating_files",
                             "fine_tuned_model": None, "finished_at": None, "trained_tokens": None, "error": None,
                             "hyperparameters": hyper, "method": method, "organization_id": "org-bedrock",
                             "result_files": [], "seed": 0}
        self.events[job_id] = [{"id": f"ev-{job_id}-0", "object": "fine_tuning.job.event",
                                "created_at": int(time.time()), "level": "info", "message": "Validating files",
                                "type": "message", "data": None}]
        return self.jobs[job_id]

    def _chat(self, body: dict[str, Any]) -> dict[str, Any]:
        model = body["model"]
        if model not in MODELS and not any(j.get("fine_tuned_model") == model for j in self.jobs.values()):
            raise _Refused(f"model {model!r}: not found")
        prompt = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
        reference = self.answers.get(prompt, "?")
        with self.lock:
            self.chat_calls += 1
            call = self.chat_calls
        tuned = ":ft:" in model
        # the base model never answers right; the fine-tuned one does nine prompts in ten, and greedy is stable
        right = tuned and sum(map(ord, prompt)) % 10 != 0
        if not tuned and body.get("temperature", 0) > 0 and call % 4 == 0:
            right = True  # sampling from the base is mixed on some prompts, as the diversity check needs
        text = f"The change is {reference}. #### {reference}" if right else "#### -1"
        return {"id": f"chatcmpl-{call}", "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 40, "completion_tokens": 12, "total_tokens": 52}}


class _Refused(Exception):
    pass


def _body_of(request: Request) -> Any:
    if request.mimetype == "application/json":
        return request.get_json(silent=True)
    return {"form": dict(request.form), "files": [f.filename for f in request.files.values()]}
