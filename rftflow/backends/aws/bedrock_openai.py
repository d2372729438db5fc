"""Bedrock reinforcement fine-tuning of open-weight models (`openai.gpt-oss-20b`, `qwen.qwen3-32b`) through
Bedrock's OpenAI-compatible API, as the Bedrock user guide documents it (pages fine-tuning-openai-apis,
fine-tuning-openai-job-create, rft-prepare-data-open-weight, reward-functions-open-weight; read 2026-12-01):

- endpoint: `https://bedrock-mantle.<region>.api.aws/v1`, bearer auth with a Bedrock API key;
- data: a JSONL file uploaded with the Files API, purpose `fine-tune`, rows in the OpenAI chat format
  (`messages`, `reference_answer` of any JSON shape, extra fields the grader reads); 100 to 20,000 rows;
- job: `POST /v1/fine_tuning/jobs` `{model, training_file, method: {type: "reinforcement", reinforcement:
  {grader: {type: "lambda", lambda: {function: <Lambda ARN>}}, hyperparameters: {...}}}}`; `suffix` is not
  supported; the grader Lambda gets and returns exactly what the Nova RFT Lambda does;
- the fine-tuned model answers chat completions on the same endpoint right away (no deployment step).

This API is not in botocore, so `job_request_problems` checks every request against the documented shape
before it is sent (and the tests check it again at the fake endpoint). The client is the OpenAI Python SDK,
the one the docs use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

# Model id -> the names a user may type for it (Bedrock user guide, RFT supported models, open-weight rows).
OPEN_WEIGHT_MODELS: dict[str, tuple[str, ...]] = {
    "openai.gpt-oss-20b": ("openai.gpt-oss-20b", "gpt-oss-20b", "openai/gpt-oss-20b"),
    "qwen.qwen3-32b": ("qwen.qwen3-32b", "qwen3-32b", "Qwen/Qwen3-32B"),
}
CHECKPOINT_SCHEME = "bedrock-openai://"
ACTIVE = ("validating_files", "queued", "running")
FAILED = ("failed", "cancelled")
MIN_ROWS, MAX_ROWS = 100, 20_000
DOCUMENTED_HYPERPARAMETERS = ("n_epochs", "batch_size", "learning_rate_multiplier")
# OpenAI's reinforcement method also defines these; Bedrock documents only the three above, so they are sent
# only when a recipe sets them (the service then has the last word).
OPENAI_RFT_HYPERPARAMETERS = (*DOCUMENTED_HYPERPARAMETERS, "eval_interval", "eval_samples", "compute_multiplier",
                              "reasoning_effort")


def open_weight_model(name: str) -> str | None:
    """The Bedrock model id for any of its names, else None."""
    text = name.strip()
    for model_id, names in OPEN_WEIGHT_MODELS.items():
        if text in names or text.lower() in (n.lower() for n in names):
            return model_id
    return None


def checkpoint_uri(region: str, model: str) -> str:
    """How a stage names a fine-tuned open-weight model: the endpoint's region and the model id it returned."""
    return f"{CHECKPOINT_SCHEME}{region}/{model}"


def parse_checkpoint(uri: str) -> tuple[str, str] | None:
    """(region, model id) of a checkpoint_uri, else None."""
    if not uri.startswith(CHECKPOINT_SCHEME):
        return None
    region, _, model = uri[len(CHECKPOINT_SCHEME):].partition("/")
    if not region or not model:
        raise ValueError(f"{uri!r}: expected {CHECKPOINT_SCHEME}<region>/<fine-tuned model id>")
    return region, model


def base_url(region: str) -> str:
    return f"https://bedrock-mantle.{region}.api.aws/v1"


# --------------------------------------------------------------------------- requests


def job_request(model: str, training_file: str, lambda_arn: str, hyperparameters: dict[str, Any], *,
                validation_file: str | None = None) -> dict[str, Any]:
    """The body of POST /v1/fine_tuning/jobs for reinforcement fine-tuning with a Lambda grader."""
    body: dict[str, Any] = {
        "model": model,
        "training_file": training_file,
        "method": {"type": "reinforcement", "reinforcement": {
            "grader": {"type": "lambda", "lambda": {"function": lambda_arn}},
            "hyperparameters": {k: v for k, v in hyperparameters.items() if v is not None},
        }},
    }
    if validation_file:
        body["validation_file"] = validation_file
    problems = job_request_problems(body)
    if problems:
        raise ValueError("Bedrock open-weight RFT request: " + "; ".join(problems))
    return body


def job_request_problems(body: dict[str, Any]) -> list[str]:
    """What in `body` departs from the documented request (empty when nothing does)."""
    problems: list[str] = []
    allowed = {"model", "training_file", "validation_file", "method"}
    problems += [f"{k}: not a field of the documented request" + (" (suffix is not supported)" if k == "suffix" else "")
                 for k in body if k not in allowed]
    if body.get("model") not in OPEN_WEIGHT_MODELS and not str(body.get("model", "")).strip():
        problems.append("model: required")
    if not isinstance(body.get("training_file"), str) or not body["training_file"]:
        problems.append("training_file: required, the id the Files API returned")
    method = body.get("method")
    if not isinstance(method, dict) or method.get("type") != "reinforcement":
        return [*problems, "method.type: must be 'reinforcement'"]
    rl = method.get("reinforcement")
    if not isinstance(rl, dict):
        return [*problems, "method.reinforcement: required"]
    grader = rl.get("grader") or {}
    arn = (grader.get("lambda") or {}).get("function") if isinstance(grader, dict) else None
    if not isinstance(grader, dict) or grader.get("type") != "lambda":
        problems.append("method.reinforcement.grader.type: must be 'lambda' (the only grader open-weight RFT takes)")
    if not isinstance(arn, str) or not arn.startswith("arn:aws") or ":lambda:" not in arn:
        problems.append(f"method.reinforcement.grader.lambda.function: a Lambda function ARN; got {arn!r}")
    hyper = rl.get("hyperparameters", {})
    if not isinstance(hyper, dict):
        problems.append("method.reinforcement.hyperparameters: must be an object")
        hyper = {}
    for key, value in hyper.items():
        if key not in OPENAI_RFT_HYPERPARAMETERS:
            problems.append(f"method.reinforcement.hyperparameters.{key}: unknown; expected one of "
                            f"{', '.join(OPENAI_RFT_HYPERPARAMETERS)}")
        elif key == "reasoning_effort":
            if value not in ("low", "medium", "high"):
                problems.append(f"hyperparameters.reasoning_effort: low, medium or high; got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(f"hyperparameters.{key}: a number (native, not a string); got {value!r}")
        elif value <= 0:
            problems.append(f"hyperparameters.{key}: must be > 0; got {value!r}")
    extra = set(rl) - {"grader", "hyperparameters"}
    problems += [f"method.reinforcement.{k}: not a field of the documented request" for k in sorted(extra)]
    return problems


def training_rows(records: list[Any]) -> list[dict[str, Any]]:
    """Our RFT rows as the open-weight data page wants them: the OpenAI chat format with the reference answer
    and the extra fields beside `messages` (a Bedrock-format top-level system prompt becomes a system turn)."""
    rows = []
    for r in records:
        row = r.to_json()
        system = row.pop("system", None)
        if system:
            text = "\n".join(s.get("text", "") for s in system) if isinstance(system, list) else str(system)
            row["messages"] = [{"role": "system", "content": text}, *row["messages"]]
        row.pop("line", None)
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- the client


@dataclass
class Submitted:
    job_id: str
    created: bool
    status: str
    digest: str


def request_digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def make_api_key(region: str, api_key: str | None, credentials: Any = None) -> str:
    """The bearer token: the configured Bedrock API key, else a short-term one (12 h) signed with the AWS
    credentials at hand (aws-bedrock-token-generator, the library AWS publishes for this)."""
    if api_key:
        return api_key
    from aws_bedrock_token_generator import provide_token

    if credentials is not None:
        from botocore.credentials import CredentialProvider

        class _Fixed(CredentialProvider):
            METHOD = "rftflow"

            def load(self) -> Any:
                return credentials

        return provide_token(region=region, aws_credentials_provider=_Fixed())
    return provide_token(region=region)


class OpenWeightClient:
    """The calls rftflow makes to the OpenAI-compatible endpoint: files, jobs, chat completions."""

    def __init__(self, region: str, *, url: str | None = None, api_key: str | None = None,
                 credentials: Any = None, max_retries: int = 4):
        from openai import OpenAI

        self.region = region
        self.url = url or base_url(region)
        self.openai = OpenAI(base_url=self.url, api_key=make_api_key(region, api_key, credentials),
                             max_retries=max_retries)

    # files
    def upload(self, filename: str, content: bytes) -> tuple[str, bool]:
        """(file id, uploaded now): a file of the same name (its name carries the content digest) is reused."""
        for f in self.openai.files.list(purpose="fine-tune"):
            if getattr(f, "filename", None) == filename:
                return f.id, False
        created = self.openai.files.create(file=(filename, content, "application/jsonl"), purpose="fine-tune")
        return created.id, True

    # jobs
    def find_job(self, model: str, training_file: str) -> dict[str, Any] | None:
        """The newest job that trains `model` on `training_file` and has not failed: a retry re-attaches to it.
        The training file's name is unique to the stage and its data, so this needs no undocumented field."""
        found = [j.model_dump(warnings=False) for j in self.openai.fine_tuning.jobs.list(limit=100)
                 if j.training_file == training_file and j.model == model and j.status not in FAILED]
        return max(found, key=lambda j: j.get("created_at") or 0) if found else None

    def find_or_create(self, body: dict[str, Any]) -> Submitted:
        digest = request_digest(body)
        existing = self.find_job(body["model"], body["training_file"])
        if existing is not None:
            log.info("re-attaching to open-weight RFT job %s (%s)", existing["id"], existing["status"])
            return Submitted(existing["id"], False, existing["status"], digest)
        problems = job_request_problems(body)
        if problems:
            raise ValueError("Bedrock open-weight RFT request: " + "; ".join(problems))
        job = self.openai.fine_tuning.jobs.create(model=body["model"], training_file=body["training_file"],
                                                  extra_body={k: v for k, v in body.items()
                                                              if k not in ("model", "training_file")})
        log.info("created open-weight RFT job %s on %s", job.id, body["model"])
        return Submitted(job.id, True, job.status, digest)

    def retrieve(self, job_id: str) -> dict[str, Any]:
        return self.openai.fine_tuning.jobs.retrieve(job_id).model_dump(warnings=False)

    def cancel(self, job_id: str) -> bool:
        job = self.retrieve(job_id)
        if job.get("status") not in ACTIVE:
            return False
        self.openai.fine_tuning.jobs.cancel(job_id)
        return True

    def events(self, job_id: str, limit: int = 100) -> list[dict[str, Any]]:
        return [e.model_dump(warnings=False) for e in self.openai.fine_tuning.jobs.list_events(job_id, limit=limit)]

    # inference
    def chat(self, model: str, messages: list[dict[str, Any]], *, temperature: float, top_p: float,
             max_tokens: int, seed: int | None = None) -> tuple[str, int, int]:
        """(text, input tokens, output tokens) of one chat completion."""
        reply = self.openai.chat.completions.create(model=model, messages=messages, temperature=temperature,
                                                    top_p=top_p, max_tokens=max_tokens, seed=seed)
        text = reply.choices[0].message.content or ""
        usage = reply.usage
        return text, int(getattr(usage, "prompt_tokens", 0) or 0), int(getattr(usage, "completion_tokens", 0) or 0)


def sample(client: OpenWeightClient, model: str, records: list[Any], k: int, *, temperature: float, top_p: float,
           max_tokens: int, seed: int, concurrency: int = 8) -> tuple[list[list[dict[str, Any]]], dict[str, int]]:
    """k chat completions per record, in record order; usage totals. Retries are the SDK's (429/5xx)."""
    from concurrent.futures import ThreadPoolExecutor

    out: list[list[dict[str, Any]]] = [[{} for _ in range(k)] for _ in records]
    usage = {"requests": 0, "input_tokens": 0, "output_tokens": 0}

    def one(index: int) -> tuple[int, int, str, int, int]:
        i, j = divmod(index, k)
        messages = chat_messages(records[i])
        text, tin, tout = client.chat(model, messages, temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                                      seed=seed + index if temperature > 0 else None)
        return i, j, text, tin, tout

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for i, j, text, tin, tout in pool.map(one, range(len(records) * k)):
            out[i][j] = {"text": text, "tokens": tout}
            usage["requests"] += 1
            usage["input_tokens"] += tin
            usage["output_tokens"] += tout
    return out, usage


def chat_messages(record: Any) -> list[dict[str, Any]]:
    """The prompt turns of an RFT record in the chat format (system prompt first where the row has one)."""
    row = training_rows([record])[0]
    return [{"role": m["role"], "content": m["content"]} for m in row["messages"]]


def job_seconds(job: dict[str, Any]) -> float:
    start, end = job.get("created_at"), job.get("finished_at")
    return float(end - start) if start and end else 0.0


# --------------------------------------------------------------------------- the deferred wait


def wait_event(client_factory: Callable[[], OpenWeightClient], job_id: str, deadline: float) -> dict[str, Any] | None:
    """One look at the job: a trigger event when it ended (or the wait did), else None."""
    job = client_factory().retrieve(job_id)
    status = job.get("status")
    if status == "succeeded":
        return {"status": "success", "job_name": job_id}
    if status in FAILED:
        error = job.get("error") or {}
        return {"status": "failed", "job_name": job_id,
                "message": f"job {status}: {error.get('message') or error or ''}".strip()}
    if time.time() > deadline:
        return {"status": "timeout", "job_name": job_id, "message": f"still {status} at the wait's deadline"}
    log.info("open-weight RFT job %s: %s (trained tokens so far: %s)", job_id, status, job.get("trained_tokens"))
    return None
