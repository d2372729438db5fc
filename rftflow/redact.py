"""Credentials out of everything rftflow records or prints: URIs (MLflow tracking, S3 endpoints, SMTP,
webhooks), the JSON documents that hold them (cycle.json, the UI's index, manifests) and log messages.

One helper for all of them, so a new place that records a URI has one function to call: `redact`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import urllib.parse
from collections.abc import Iterator
from typing import Any

__all__ = ["MASK", "install_log_redaction", "redact", "redact_text", "redact_uri", "redacted_errors"]

MASK = "***"

# scheme://... up to whitespace, a quote or an angle bracket (how URIs end inside log lines, JSON and HTML).
_URI = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]{1,30}://[^\s'\"<>`]+")
# Query parameters that carry a secret: tokens, keys, passwords, presigned-URL signatures.
_SECRET_PARAM = re.compile(
    r"(?i)^(.*(token|secret|password|passwd|pwd|signature|credential|api[_-]?key|apikey|access[_-]?key|auth).*"
    r"|key|sig|code|x-amz-security-token)$")
# Webhook URLs whose path is the secret (anyone holding it can post).
_SECRET_PATHS = (
    (re.compile(r"(?i)^(hooks\.slack\.com)$"), re.compile(r"^(/(?:services|workflows|triggers)/).+$")),
    (re.compile(r"(?i)^((?:ptb\.|canary\.)?discord(?:app)?\.com)$"), re.compile(r"^(/api/webhooks/[^/]+/).+$")),
    (re.compile(r"(?i)\.webhook\.office\.com$|^outlook\.office\.com$"), re.compile(r"^(/webhook\w*/).+$")),
)
# Environment variables whose values are secrets wherever they turn up in text.
_SECRET_ENV = re.compile(r"(?i)(^|_)(secret|password|passwd|pass|token|api_?key|private_?key|credentials?)(_|$)")
_NOT_A_SECRET_ENV = re.compile(r"(?i)_(file|path|dir|url)$")  # where a secret is, not the secret
_MIN_SECRET_LEN = 12  # shorter values (test keys like "testing", flags) would mask ordinary words


def redact_uri(uri: str) -> str:
    """`uri` without the credentials in it: the password of user:password@ (user names are kept, they
    help tell endpoints apart; a lone token in the user part is masked), secret query parameters, and
    the secret path of Slack/Discord/Teams webhook URLs. Anything that is not a URI comes back as it is."""
    if not isinstance(uri, str) or "://" not in uri:
        return uri
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:  # e.g. an unbalanced '[' in the host part: mask everything after the scheme
        return uri.split("://", 1)[0] + "://" + MASK
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        # user:password@ keeps the user; a bare userinfo (token@host, the form of many API URLs) is a secret.
        netloc = f"{user}:{MASK}@{host}" if colon else f"{MASK}@{host}"
    path = parts.path
    hostname = (parts.hostname or "").lower()
    for host_pattern, path_pattern in _SECRET_PATHS:
        if host_pattern.search(hostname):
            path = path_pattern.sub(lambda m: m.group(1) + MASK, path)
    query = parts.query
    if query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_PARAM.match(k) for k, _ in pairs):
            query = "&".join(f"{urllib.parse.quote(k, safe='')}=" + (MASK if _SECRET_PARAM.match(k) else
                                                                      urllib.parse.quote(v, safe=''))
                             for k, v in pairs)
    if (netloc, path, query) == (parts.netloc, parts.path, parts.query):
        return uri
    return urllib.parse.urlunsplit((parts.scheme, netloc, path, query, parts.fragment))


def _env_secrets() -> list[str]:
    values = {v for k, v in os.environ.items()
              if _SECRET_ENV.search(k) and not _NOT_A_SECRET_ENV.search(k) and len(v) >= _MIN_SECRET_LEN}
    return sorted(values, key=len, reverse=True)  # longest first: one secret may contain another


def redact_text(text: str) -> str:
    """Free text (a log line, an error message, an HTML page) with every URI in it redacted, and the values
    of secret-named environment variables (AWS_SECRET_ACCESS_KEY, *_PASSWORD, *_TOKEN...) masked."""
    if not isinstance(text, str) or not text:
        return text
    if "://" in text:
        text = _URI.sub(lambda m: redact_uri(m.group(0)), text)
    for secret in _env_secrets():
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact(obj: Any) -> Any:
    """A copy of a JSON-like value (dicts, lists, strings) with `redact_text` applied to every string."""
    if isinstance(obj, str):
        return redact_text(obj)
    if isinstance(obj, dict):
        return {redact_text(k) if isinstance(k, str) else k: redact(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [redact(v) for v in obj]
    return obj


class _RedactingRecords:
    """A log record factory that redacts each record's message (after %-formatting) and exception text."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.inner(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed format string: leave it for the handler to report
            return record
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[0] is not None:
            # The traceback's last line quotes the error, which may quote a URI: keep the formatted, redacted
            # text instead (formatters use exc_text as it is when set).
            text = logging.Formatter().formatException(record.exc_info)
            clean = redact_text(text)
            if clean != text:
                record.exc_text, record.exc_info = clean, None
        return record


def install_log_redaction() -> None:
    """Redact every log record this process creates from now on (idempotent). Called where tasks and CLI
    commands start, so task logs never show a credential from a URI or a secret environment variable."""
    current = logging.getLogRecordFactory()
    if not isinstance(current, _RedactingRecords):
        logging.setLogRecordFactory(_RedactingRecords(current))


@contextlib.contextmanager
def redacted_errors() -> Iterator[None]:
    """Re-raise an error whose message holds a credential as the same kind of error with it masked (the
    runner logs the message and traceback of whatever escapes a task)."""
    try:
        yield
    except Exception as err:
        message = str(err)
        clean = redact_text(message)
        if clean == message:
            raise
        try:
            replacement = type(err)(clean)
        except Exception:  # an exception class with another constructor
            replacement = RuntimeError(f"{type(err).__name__}: {clean}")
        raise replacement from None
