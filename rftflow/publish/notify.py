"""Gate decisions and task failures sent through Airflow notifiers (SNS, Slack, email); off by default.

Targets are strings: 'sns:<topic arn>', 'slack:<conn_id>[#channel]', 'email:<address>', taken from the
run's `notify` param plus the Airflow Variable `rftflow_notify` (comma separated, read at run time).
"""

from __future__ import annotations

import html
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from airflow.sdk import BaseNotifier

log = logging.getLogger(__name__)

VARIABLE = "rftflow_notify"
SNS_SUBJECT_MAX = 100  # SNS refuses longer subjects


class NotifyTargetError(ValueError):
    """A notification target that cannot be used; the message names the target and what was expected."""


@dataclass(frozen=True)
class Message:
    subject: str
    text: str  # plain text: SNS, Slack, file
    html: str  # email body


NotifierFactory = Callable[[str, Message], BaseNotifier]
_SCHEMES: dict[str, NotifierFactory] = {}
_ARN_SNS = re.compile(r"^arn:aws[\w-]*:sns:([a-z0-9-]+):\d{12}:[\w.-]+$")
_EMAIL = re.compile(r"^[^@\s,]+@[^@\s,]+\.[^@\s,]+$")
_CONN_ID = re.compile(r"^[\w.-]+$")


def register_scheme(scheme: str, factory: NotifierFactory) -> None:
    """Add a target scheme: `factory(value, message)` returns the Airflow notifier for 'scheme:value'."""
    _SCHEMES[scheme] = factory


def schemes() -> list[str]:
    return sorted(_SCHEMES)


# --------------------------------------------------------------------------- built-in schemes


def _sns(value: str, message: Message) -> BaseNotifier:
    from airflow.providers.amazon.aws.notifications.sns import SnsNotifier

    match = _ARN_SNS.match(value)
    if not match:
        raise NotifyTargetError(f"expected an SNS topic ARN (arn:aws:sns:<region>:<account>:<topic>); got {value!r}")
    subject = message.subject.encode("ascii", "replace").decode()[:SNS_SUBJECT_MAX]
    return SnsNotifier(target_arn=value, message=message.text, subject=subject, region_name=match.group(1),
                       aws_conn_id=os.environ.get("RFTFLOW_NOTIFY_AWS_CONN_ID", "aws_default"))


def _slack(value: str, message: Message) -> BaseNotifier:
    conn_id, _, channel = value.partition("#")
    if not _CONN_ID.match(conn_id):
        raise NotifyTargetError(f"expected slack:<connection id>[#channel]; got slack:{value!r}")
    try:
        from airflow.providers.slack.notifications.slack import SlackNotifier
    except ImportError:
        raise NotifyTargetError(
            f"slack:{value} needs the Slack provider: pip install apache-airflow-providers-slack "
            "(and a Slack API connection with that id)") from None
    kwargs: dict[str, Any] = {"slack_conn_id": conn_id, "text": message.text}
    if channel:
        kwargs["channel"] = "#" + channel
    return SlackNotifier(**kwargs)


def _email(value: str, message: Message) -> BaseNotifier:
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    if not _EMAIL.match(value):
        raise NotifyTargetError(f"expected email:<address>; got email:{value!r}")
    return SmtpNotifier(to=value, subject=message.subject, html_content=message.html,
                        from_email=os.environ.get("RFTFLOW_NOTIFY_FROM") or None)


register_scheme("sns", _sns)
register_scheme("slack", _slack)
register_scheme("email", _email)


# --------------------------------------------------------------------------- targets


def parse_target(target: str) -> tuple[str, str]:
    """'scheme:value' -> (scheme, value); raises NotifyTargetError naming the target."""
    if not isinstance(target, str) or ":" not in target:
        raise NotifyTargetError(f"{target!r}: expected 'scheme:value' with scheme one of {', '.join(schemes())}")
    scheme, value = target.strip().split(":", 1)
    if scheme not in _SCHEMES:
        raise NotifyTargetError(f"{target!r}: unknown scheme {scheme!r}; expected one of {', '.join(schemes())}")
    if not value.strip():
        raise NotifyTargetError(f"{target!r}: nothing after '{scheme}:'")
    return scheme, value.strip()


def validate_targets(targets: Iterable[str], where: str = "notify") -> list[str]:
    """Check every target now (scheme, value, provider installed), so a bad one fails the run early.

    Raises NotifyTargetError listing every bad target as `notify[i]: ...`; returns the cleaned list.
    """
    probe = Message("probe", "probe", "probe")
    problems, cleaned = [], []
    for i, target in enumerate(targets or []):
        try:
            scheme, value = parse_target(target)
            _SCHEMES[scheme](value, probe)
            cleaned.append(f"{scheme}:{value}")
        except NotifyTargetError as err:
            problems.append(f"{where}[{i}]: {err}")
    if problems:
        raise NotifyTargetError("bad notification target(s):\n  " + "\n  ".join(problems))
    return cleaned


def variable_targets() -> list[str]:
    """Targets from the Airflow Variable `rftflow_notify` (comma separated); read at run time only."""
    try:
        from airflow.sdk import Variable

        raw = Variable.get(VARIABLE, default=None)
    except Exception as err:  # outside a task, or no metadata DB: the param targets still apply
        log.debug("Variable %s not readable here: %s", VARIABLE, err)
        return []
    if not raw:
        return []
    if isinstance(raw, list):
        return [str(t).strip() for t in raw if str(t).strip()]
    return [t.strip() for t in str(raw).split(",") if t.strip()]


def configured_targets(param_targets: Sequence[str] | None) -> list[str]:
    """The run's `notify` targets plus the Variable's, without duplicates, in that order."""
    out: list[str] = []
    for target in [*(param_targets or []), *variable_targets()]:
        if target not in out:
            out.append(target)
    return out


def build_notifiers(targets: Iterable[str], message: Message) -> list[BaseNotifier]:
    """One Airflow notifier per target; raises NotifyTargetError for the first bad one."""
    out = []
    for target in targets:
        scheme, value = parse_target(target)
        try:
            out.append(_SCHEMES[scheme](value, message))
        except NotifyTargetError as err:
            raise NotifyTargetError(f"{target!r}: {err}") from None
    return out


def send(targets: Iterable[str], message: Message, context: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Send `message` to every target; one result per target, and a failed target never raises.

    The text is final, so each notifier's `notify` is called directly (no Jinja rendering of it).
    """
    results = []
    for target in targets:
        try:
            (notifier,) = build_notifiers([target], message)
            notifier.notify(dict(context or {}))
            results.append({"target": target, "sent": True})
        except Exception as err:
            from rftflow.redact import redact_text

            log.warning("notification to %s failed: %s", target, redact_text(str(err)))
            results.append({"target": target, "sent": False,
                            "error": redact_text(f"{type(err).__name__}: {err}")})
    return results


# --------------------------------------------------------------------------- messages


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _fmt(value: Any, digits: int = 3) -> str:
    v = _num(value)
    return "-" if v is None else f"{v:.{digits}f}"


def _fractions(metrics: dict[str, Any]) -> dict[str, float]:
    from rftflow.publish.tracking import diversity_fractions

    return diversity_fractions(metrics)


def _airflow_base_url() -> str:
    """[api] base_url, when set: where people open this Airflow (for the cycle history link)."""
    try:
        from airflow.sdk.configuration import conf

        return (conf.get("api", "base_url", fallback="") or "").rstrip("/")
    except Exception:
        return ""


def gate_message(summary: dict[str, Any]) -> Message:
    """Gate decision and reasons, baseline vs candidate (and champion), diversity, report and MLflow links."""
    s = summary or {}
    outcome = str(s.get("outcome") or "unknown").upper()
    gate = s.get("gate") if isinstance(s.get("gate"), dict) else {}
    metric = gate.get("metric") or "pass_at_1"
    base, cand = (s.get("baseline") or {}).get(metric), (s.get("candidate") or {}).get(metric)
    headline = f"{metric} {_fmt(cand)} vs baseline {_fmt(base)}" if cand is not None else "no candidate"
    subject = (f"[rftflow] {s.get('model_family', '?')} cycle {s.get('cycle', '?')}/{s.get('max_cycles', '?')}: "
               f"{outcome} - {headline}")
    lines = [
        f"{s.get('dag_id', '?')} run {s.get('run_id', '?')}, cycle {s.get('cycle', '?')} of "
        f"{s.get('max_cycles', '?')} ({s.get('backend', '?')} backend, model family {s.get('model_family', '?')})",
        f"Outcome: {outcome} - {s.get('outcome_reason') or 'no reason recorded'}",
    ]
    if gate:
        lines.append(f"Gate: {str(gate.get('decision', '-')).upper()} - {gate.get('reason', '')}")
        lines += [f"Warning: {w}" for w in gate.get("warnings") or []]
        if gate.get("split"):
            lines.append(f"Eval set: {gate['split']}")
    models = [(name, s.get(name)) for name in ("baseline", "sft_checkpoint", "candidate", "champion")
              if isinstance(s.get(name), dict)]
    if models:
        lines += ["", f"{'':22}" + "".join(f"{name:>12}" for name, _ in models)]
        for key, label in (("pass_at_1", "pass@1"), ("mean_reward", "mean reward"),
                           ("mean_response_tokens", "response tokens"), ("n", "prompts")):
            digits = 0 if key == "n" else 3 if key != "mean_response_tokens" else 1
            lines.append(f"{label:22}" + "".join(f"{_fmt(m.get(key), digits):>12}" for _, m in models))
    if gate.get("reasons"):
        lines += ["", "Checks:"]
        for r in gate["reasons"]:
            verdict = ("missing" if r.get("missing") else "skip") if r.get("skipped") else \
                ("warn" if r.get("warning") else "pass") if r.get("passed") else "FAIL"
            facts = ([f"observed {_fmt(r['observed'], 4)}"] if r.get("observed") is not None else []) + \
                ([f"required {r['required']}"] if r.get("required") else [])
            lines.append(f"  [{verdict}] {r.get('check')}" + (": " + ", ".join(facts) if facts else "")
                         + (f" - {r['detail']}" if r.get("detail") else ""))
    for d in s.get("diversity") or []:
        f = _fractions(d.get("metrics") or {})
        decision = (d.get("decision") or {}).get("decision", "-") if isinstance(d.get("decision"), dict) else "-"
        pct = {k: ("-" if k not in f else f"{100 * f[k]:.0f}%") for k in ("all_fail", "mixed", "all_pass")}
        lines.append(f"Diversity ({d.get('stage')}): all-fail {pct['all_fail']}, mixed {pct['mixed']}, "
                     f"all-pass {pct['all_pass']} -> {decision}")
    links = []
    if s.get("report_html_uri") or s.get("report_md_uri"):
        links.append(f"Report: {s.get('report_html_uri') or s.get('report_md_uri')}")
    ui = _airflow_base_url()
    if ui:
        links.append(f"Cycle history: {ui.rstrip('/')}/rftflow/?family={s.get('model_family', '')}")
    mlflow = s.get("mlflow") if isinstance(s.get("mlflow"), dict) else {}
    if mlflow.get("mlflow_url") or mlflow.get("mlflow_run_id"):
        links.append(f"MLflow: {mlflow.get('mlflow_url') or 'run ' + str(mlflow['mlflow_run_id'])}")
    if links:
        lines += ["", *links]
    text = "\n".join(lines)
    body = f"<pre style=\"font-family: monospace\">{html.escape(text)}</pre>"
    return Message(subject=subject, text=text, html=body)


def failure_message(context: dict[str, Any]) -> Message:
    """Which run and task (and try) failed, the error, and where the log is.

    Works for task callbacks (context has `ti` and `exception`) and DAG callbacks (`dag_run`, `reason`).
    """
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    dag_id = getattr(context.get("dag"), "dag_id", None) or getattr(ti, "dag_id", None) or \
        getattr(dag_run, "dag_id", "?")
    run_id = context.get("run_id") or getattr(ti, "run_id", None) or getattr(dag_run, "run_id", "?")
    params = context.get("params") or {}
    family = params.get("model_family", "?")
    error = context.get("exception") or context.get("reason") or "no error recorded"
    where = f"{dag_id}.{ti.task_id}" if ti is not None else dag_id
    subject = f"[rftflow] {family}: {where} failed ({run_id})"
    what = f"task {ti.task_id} failed (try {getattr(ti, 'try_number', '?')})" if ti is not None else "the run failed"
    lines = [f"{dag_id} run {run_id}: {what}.",
             f"Model family {family}, cycle {params.get('cycle', '?')}, backend {params.get('backend', '?')}.",
             f"Error: {error}"]
    try:
        if ti is not None:
            lines.append(f"Log: {ti.log_url}")
    except Exception:  # log_url needs the API base URL; the rest of the message still helps
        pass
    from rftflow.redact import redact_text

    text = redact_text("\n".join(str(line) for line in lines))  # the error may quote a URI with credentials
    return Message(subject=subject, text=text, html=f"<pre>{html.escape(text)}</pre>")


# --------------------------------------------------------------------------- the DAG's entry points


def notify_gate(targets: Sequence[str] | None, summary: dict[str, Any],
                context: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Send the cycle's gate decision to the run's targets and the Variable's; [] when there are none."""
    resolved = configured_targets(targets)
    if not resolved:
        return []
    results = send(resolved, gate_message(summary), context)
    log.info("gate notification: %s", json.dumps(results))
    return results


class CycleFailureNotifier(BaseNotifier):
    """on_failure_callback: tells the run's `notify` targets (and the Variable's) which task failed."""

    def notify(self, context: Any) -> None:
        params = context.get("params") or {}
        targets = configured_targets(list(params.get("notify") or []))
        if targets:
            send(targets, failure_message(context), context)
