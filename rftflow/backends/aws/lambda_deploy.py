"""Deploy a reward handler from include/rewards/ as an AWS Lambda, and verify it with sample rollouts.

The zip holds the handler file and the sibling pure-Python modules it uses, byte-for-byte deterministic, so
an unchanged handler is not re-uploaded. `verify` runs the reward contract check before any job is paid for.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import io
import json
import logging
import re
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rftflow.backends.aws.clients import is_not_found
from rftflow.backends.aws.modelcheck import validate_request
from rftflow.backends.aws.recipes import LAMBDA_NAME_PREFIX

log = logging.getLogger(__name__)

REWARDS_DIR = Path(__file__).resolve().parents[3] / "include" / "rewards"
FUNCTION_PREFIX = f"{LAMBDA_NAME_PREFIX}rftflow-"
MIN_TIMEOUT_S = 300  # RFT calls the Lambda with batches of rollouts; the 3 s default times out
MAX_TIMEOUT_S = 900  # the documented Lambda maximum the RFT services wait for
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_FUNCTION_NAME = re.compile(r"[a-zA-Z0-9-_]{1,64}")


class LambdaSettings(BaseModel):
    """How the reward function is deployed."""

    model_config = ConfigDict(extra="forbid")

    role_arn: str = Field(min_length=20, description="Execution role the function runs as.")
    memory_mb: int = Field(512, ge=128, le=10240)
    timeout_s: int = Field(MIN_TIMEOUT_S, ge=MIN_TIMEOUT_S, le=MAX_TIMEOUT_S)
    runtime: str = "python3.12"
    architecture: str = Field("x86_64", pattern="^(x86_64|arm64)$")
    environment: dict[str, str] = {}
    tags: dict[str, str] = {}
    response: str = Field("list", pattern="^(list|http)$",
                          description="list: the results list (Nova on SageMaker and Bedrock, Bedrock open-weight); "
                                      "http: {statusCode, headers, body: JSON of the list}, the envelope SageMaker "
                                      "serverless customization expects of open-weight reward functions.")


# --------------------------------------------------------------------------- packaging


SHAPED = "shaped_"


def handler_spec(reward: str) -> tuple[Path, list[str], dict[str, str]]:
    """(handler file, extra sibling modules, environment) for a reward: `shaped_<inner>` is shaping.py with
    its inner reward packaged beside it and named in SHAPING_INNER_REWARD, as rftflow.rewards.runner runs it."""
    if reward.startswith(SHAPED) and (REWARDS_DIR / f"{reward[len(SHAPED):]}.py").is_file():
        inner = reward[len(SHAPED):]
        return REWARDS_DIR / "shaping.py", [inner], {"SHAPING_INNER_REWARD": inner}
    return handler_path(reward), [], {}


def handler_path(reward: str) -> Path:
    """A built-in reward name (`numeric`, ...) or a path to a handler .py file."""
    candidate = Path(reward)
    if candidate.suffix == ".py":
        if not candidate.is_file():
            raise FileNotFoundError(f"reward handler {reward!r}: no such file")
        return candidate.resolve()
    builtin = REWARDS_DIR / f"{reward}.py"
    if builtin.is_file():
        return builtin
    known = sorted(p.stem for p in REWARDS_DIR.glob("*.py") if not p.stem.startswith("_"))
    raise FileNotFoundError(f"reward {reward!r}: expected a built-in name ({', '.join(known)}) or a path to a .py file")


def _siblings_named(path: Path) -> set[str]:
    """Sibling module names a handler imports, or names as a string literal (e.g. shaping's inner reward)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            names.update(alias.name for alias in node.names)
            if node.module:
                names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isidentifier():
            names.add(node.value)
    return names


def package_files(path: Path, extra: Sequence[str] = ()) -> dict[str, Path]:
    """{archive name: file} for the handler and, transitively, the sibling modules/packages it uses."""
    folder = path.parent
    files: dict[str, Path] = {path.name: path}
    todo = [path, *[handler_path(e) if not (folder / e).is_dir() else folder / e for e in extra]]
    seen: set[Path] = set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        if current.is_dir():
            for file in sorted(current.rglob("*.py")):
                files[file.relative_to(folder).as_posix()] = file
                todo.append(file)
            continue
        files.setdefault(current.relative_to(folder).as_posix() if current.is_relative_to(folder)
                         else current.name, current)
        for name in _siblings_named(current):
            module, package = folder / f"{name}.py", folder / name
            if module.is_file() and module != current:
                todo.append(module)
            elif package.is_dir() and (package / "__init__.py").is_file():
                todo.append(package)
    return dict(sorted(files.items()))


def build_zip(path: Path, extra: Sequence[str] = (), generated: dict[str, bytes] | None = None) -> bytes:
    """A deterministic zip (fixed dates and modes, sorted names) of the handler and its siblings, plus any
    `generated` files (archive name: content)."""
    entries = {name: file.read_bytes() for name, file in package_files(path, extra).items()}
    entries.update(generated or {})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, entries[name])
    return buffer.getvalue()


@dataclass
class Package:
    """What gets uploaded for a reward: the zip, its file list and the environment the handler needs."""

    module: str
    zip_bytes: bytes
    files: list[str]
    environment: dict[str, str]

    @property
    def code_sha256(self) -> str:
        return code_sha256(self.zip_bytes)


HTTP_ENVELOPE_MODULE = "rftflow_http_envelope"
_HTTP_ENVELOPE = '''"""Wraps the reward handler {module}.lambda_handler for callers that expect an HTTP-style answer:
{{"statusCode": 200, "headers": {{...}}, "body": "<JSON list of results>"}} (SageMaker serverless customization of
open-weight models). A request that arrives as such an envelope is unwrapped first."""

import json

import {module} as _inner


def lambda_handler(event, context):
    if isinstance(event, dict) and isinstance(event.get("body"), str):
        event = json.loads(event["body"])
    results = _inner.lambda_handler(event, context)
    return {{"statusCode": 200, "headers": {{"Content-Type": "application/json"}}, "body": json.dumps(results)}}
'''


def package(reward: str, extra: Sequence[str] = (), response: str = "list") -> Package:
    """The zip for `reward`; with response "http" it also holds a wrapper module, which becomes the handler."""
    path, implied, env = handler_spec(reward)
    modules = [*implied, *extra]
    files = list(package_files(path, modules))
    if response != "http":
        return Package(path.stem, build_zip(path, modules), files, env)
    wrapper = {f"{HTTP_ENVELOPE_MODULE}.py": _HTTP_ENVELOPE.format(module=path.stem).encode()}
    return Package(HTTP_ENVELOPE_MODULE, build_zip(path, modules, wrapper), sorted([*files, *wrapper]), env)


def unwrap_response(payload: Any, function: str = "the reward function") -> Any:
    """The results list from a reward function's answer: the list itself, or the body of an HTTP-style envelope
    ({statusCode, body}) as open-weight reward functions on SageMaker return it; a non-200 envelope is an error."""
    if isinstance(payload, dict) and "statusCode" in payload and "body" in payload:
        if payload.get("statusCode") != 200:
            raise RuntimeError(f"{function} answered status {payload.get('statusCode')}: "
                               f"{str(payload.get('body'))[:2000]}")
        body = payload["body"]
        return json.loads(body) if isinstance(body, str) else body
    return payload


def code_sha256(zip_bytes: bytes) -> str:
    """The CodeSha256 Lambda reports for a package (base64 of the SHA-256)."""
    return base64.b64encode(hashlib.sha256(zip_bytes).digest()).decode("ascii")


def function_name(reward: str, name: str | None = None, response: str = "list") -> str:
    """`SageMaker-rftflow-<reward>` (`...-http` for the HTTP-envelope variant) unless a name is given; it must
    keep the `SageMaker-` prefix."""
    if name is None:
        stem = Path(reward).stem if reward.endswith(".py") else reward
        tail = "-http" if response == "http" else ""
        room = 64 - len(FUNCTION_PREFIX) - len(tail)
        name = FUNCTION_PREFIX + re.sub(r"[^a-zA-Z0-9-]+", "-", stem).strip("-")[:room] + tail
    if not _FUNCTION_NAME.fullmatch(name):
        raise ValueError(f"function name: expected 1-64 letters, digits, '-' or '_'; got {name!r}")
    if not name.startswith(LAMBDA_NAME_PREFIX):
        raise ValueError(f"function name: must start with {LAMBDA_NAME_PREFIX!r} (the SageMaker execution role's "
                         f"managed policy only lets training invoke such functions); got {name!r}")
    return name


# --------------------------------------------------------------------------- create or update


def create_request(name: str, zip_bytes: bytes, handler_module: str, settings: LambdaSettings) -> dict[str, Any]:
    request: dict[str, Any] = {
        "FunctionName": name,
        "Runtime": settings.runtime,
        "Role": settings.role_arn,
        "Handler": f"{handler_module}.lambda_handler",
        "Code": {"ZipFile": zip_bytes},
        "Description": f"rftflow reward function ({handler_module})",
        "Timeout": settings.timeout_s,
        "MemorySize": settings.memory_mb,
        "Architectures": [settings.architecture],
        "Tags": {"rftflow:reward": handler_module, **settings.tags},
    }
    if settings.environment:
        request["Environment"] = {"Variables": dict(settings.environment)}
    validate_request("lambda", "CreateFunction", request)
    return request


def configuration_request(name: str, handler_module: str, settings: LambdaSettings) -> dict[str, Any]:
    request: dict[str, Any] = {
        "FunctionName": name,
        "Role": settings.role_arn,
        "Handler": f"{handler_module}.lambda_handler",
        "Runtime": settings.runtime,
        "Timeout": settings.timeout_s,
        "MemorySize": settings.memory_mb,
        "Environment": {"Variables": dict(settings.environment)},
    }
    validate_request("lambda", "UpdateFunctionConfiguration", request)
    return request


@dataclass
class DeployResult:
    function_name: str
    arn: str
    action: str  # created | updated | unchanged
    code_sha256: str
    files: list[str] = field(default_factory=list)


def deploy(client: Any, reward: str, settings: LambdaSettings, *, name: str | None = None,
           extra: Sequence[str] = (), wait: bool = True) -> DeployResult:
    """Create the function, or update its code and configuration when they changed; returns its ARN."""
    pkg = package(reward, extra, settings.response)
    settings = settings.model_copy(update={"environment": {**pkg.environment, **settings.environment}})
    name = function_name(reward, name, settings.response)
    zip_bytes, files, sha, module = pkg.zip_bytes, pkg.files, pkg.code_sha256, pkg.module
    try:
        current = client.get_function(FunctionName=name)["Configuration"]
    except Exception as exc:
        if not is_not_found(exc):
            raise
        arn = client.create_function(**create_request(name, zip_bytes, module, settings))["FunctionArn"]
        _wait(client, "function_active_v2", name, wait)
        return DeployResult(name, arn, "created", sha, files)
    action = "unchanged"
    if current.get("CodeSha256") != sha:
        code = {"FunctionName": name, "ZipFile": zip_bytes, "Architectures": [settings.architecture]}
        validate_request("lambda", "UpdateFunctionCode", code)
        client.update_function_code(**code)
        _wait(client, "function_updated_v2", name, wait)
        action = "updated"
    wanted = configuration_request(name, module, settings)
    have = {"Role": current.get("Role"), "Handler": current.get("Handler"), "Runtime": current.get("Runtime"),
            "Timeout": current.get("Timeout"), "MemorySize": current.get("MemorySize"),
            "Environment": {"Variables": (current.get("Environment") or {}).get("Variables", {})}}
    if any(have[k] != wanted[k] for k in have):
        client.update_function_configuration(**wanted)
        _wait(client, "function_updated_v2", name, wait)
        action = "updated"
    return DeployResult(name, current["FunctionArn"], action, sha, files)


def _wait(client: Any, waiter: str, name: str, wait: bool) -> None:
    if wait:
        client.get_waiter(waiter).wait(FunctionName=name, WaiterConfig={"Delay": 2, "MaxAttempts": 150})


def function_arn(client: Any, name: str) -> str | None:
    """The ARN of a deployed function, or None when there is none by that name."""
    try:
        return client.get_function(FunctionName=name)["Configuration"]["FunctionArn"]
    except Exception as exc:
        if is_not_found(exc):
            return None
        raise


# --------------------------------------------------------------------------- invoke and verify

Invoker = Callable[[bytes], Any]


class LambdaInvoker:
    """Calls the deployed function the way the RFT services do: a JSON list in, a JSON list out."""

    def __init__(self, client: Any, function: str):
        self.client = client
        self.function = function

    def __call__(self, payload: bytes) -> Any:
        response = client_invoke(self.client, self.function, payload)
        body = response["Payload"].read()
        if response.get("FunctionError"):
            raise RuntimeError(f"Lambda {self.function} raised ({response['FunctionError']}): "
                               f"{body.decode('utf-8', 'replace')[:2000]}")
        return unwrap_response(json.loads(body), f"Lambda {self.function}")


def client_invoke(client: Any, function: str, payload: bytes) -> dict[str, Any]:
    request = {"FunctionName": function, "InvocationType": "RequestResponse", "Payload": payload}
    validate_request("lambda", "Invoke", request)
    return client.invoke(**request)


class InProcessInvoker:
    """Runs a reward here (rftflow.rewards.runner.load_reward), through the same JSON round trip as Lambda."""

    def __init__(self, reward: str):
        from rftflow.rewards.runner import load_reward

        self.reward = load_reward(reward)

    def __call__(self, payload: bytes) -> Any:
        return self.reward.invoke(payload.decode("utf-8"))


def invoke_reward(invoker: Invoker, samples: list[dict[str, Any]], batch_size: int = 128) -> list[Any]:
    """RewardResults for samples, sent in batches as the services do; the output contract is checked."""
    from rftflow.rewards.contract import validate_output

    results: list[Any] = []
    for start in range(0, len(samples), batch_size):
        batch = samples[start:start + batch_size]
        raw = invoker(json.dumps(batch).encode("utf-8"))
        results.extend(validate_output(batch, raw))
    return results


def verification_samples(records: Sequence[Any], n: int = 8) -> list[dict[str, Any]]:
    """Two rollouts per record: the reference answer stated plainly, and a non-answer."""
    from rftflow.rewards.contract import sample_for

    samples = []
    for record in records[:n]:
        ref = record.reference_answer
        value = ref.get("answer", json.dumps(ref)) if isinstance(ref, dict) else ref
        good = record.answer_text() if hasattr(record, "answer_text") and record.answer_text() else \
            f"The answer is {value}. #### {value}"
        samples.append(sample_for(record, good, sample_id=f"{record.id}#reference"))
        samples.append(sample_for(record, "I do not know.", sample_id=f"{record.id}#nonanswer"))
    return samples


@dataclass
class VerifyReport:
    rows: list[dict[str, Any]]
    mean_reference: float
    mean_nonanswer: float
    warnings: list[str]

    def table(self) -> str:
        lines = [f"{'sample':<40} {'score':>7}  metrics"]
        for row in self.rows:
            metrics = ", ".join(f"{k}={v:g}" for k, v in row["metrics"].items())
            lines.append(f"{row['id'][:40]:<40} {row['score']:>7.3f}  {metrics}")
        lines.append(f"mean score: reference {self.mean_reference:.3f}, non-answer {self.mean_nonanswer:.3f}")
        lines.extend(f"warning: {w}" for w in self.warnings)
        return "\n".join(lines)


def verify(invoker: Invoker, records: Sequence[Any], n: int = 8, *,
           configuration: dict[str, Any] | None = None) -> VerifyReport:
    """Invoke the reward with sample rollouts and check the output contract; raises when it is broken."""
    samples = verification_samples(records, n)
    if not samples:
        raise ValueError("verify needs at least one record with a prompt")
    results = invoke_reward(invoker, samples)
    rows = [{"id": str(r.id), "score": float(r.aggregate_reward_score),
             "metrics": {m.name: float(m.value) for m in r.metrics_list}} for r in results]
    ref = [r["score"] for r in rows if r["id"].endswith("#reference")]
    non = [r["score"] for r in rows if r["id"].endswith("#nonanswer")]
    mean_ref, mean_non = sum(ref) / len(ref), sum(non) / len(non)
    warnings = []
    if mean_ref <= mean_non:
        warnings.append("the reference answers do not score above non-answers: is the reward wired to "
                        "reference_answer, and does it parse this dataset's answer format?")
    if configuration is not None:
        timeout = configuration.get("Timeout", 0)
        if timeout < MIN_TIMEOUT_S:
            warnings.append(f"function timeout is {timeout} s; RFT batches need at least {MIN_TIMEOUT_S} s")
        if not str(configuration.get("FunctionName", LAMBDA_NAME_PREFIX)).startswith(LAMBDA_NAME_PREFIX):
            warnings.append(f"function name does not start with {LAMBDA_NAME_PREFIX!r}")
    return VerifyReport(rows, mean_ref, mean_non, warnings)
