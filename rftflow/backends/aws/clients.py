"""boto3 clients for the AWS backends, built lazily through the Airflow amazon provider's hooks.

Inside Airflow the hook reads the `aws_conn_id` connection (credentials, region, endpoint); with no such
connection, or with Airflow absent, it falls back to the ordinary boto3 chain (env vars, profile, role).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger(__name__)

# Service name -> the provider hook that wraps it (anything else goes through AwsBaseHook).
_HOOKS = {
    "sagemaker": ("airflow.providers.amazon.aws.hooks.sagemaker", "SageMakerHook"),
    "bedrock": ("airflow.providers.amazon.aws.hooks.bedrock", "BedrockHook"),
    "bedrock-runtime": ("airflow.providers.amazon.aws.hooks.bedrock", "BedrockRuntimeHook"),
    "logs": ("airflow.providers.amazon.aws.hooks.logs", "AwsLogsHook"),
    "s3": ("airflow.providers.amazon.aws.hooks.s3", "S3Hook"),
}


class AwsClients:
    """One place that hands out (and caches) boto3 clients and provider hooks for a backend.

    `aws_conn_id=None` skips the Airflow connection lookup; `region_name` overrides the connection's.
    """

    def __init__(self, aws_conn_id: str | None = "aws_default", region_name: str | None = None,
                 botocore_config: dict[str, Any] | None = None):
        self.aws_conn_id = aws_conn_id
        self._region_name = region_name
        self.botocore_config = botocore_config
        self._lock = threading.Lock()
        self._hooks: dict[str, Any] = {}
        self._clients: dict[str, Any] = {}

    def hook(self, service: str) -> Any:
        """The provider hook for `service` (SageMakerHook, BedrockHook, AwsLogsHook, ... or AwsBaseHook)."""
        with self._lock:
            if service not in self._hooks:
                self._hooks[service] = self._make_hook(service)
            return self._hooks[service]

    def client(self, service: str) -> Any:
        """A boto3 client for `service` with the connection's credentials, region and endpoint."""
        with self._lock:
            cached = self._clients.get(service)
        if cached is not None:
            return cached
        hook = self.hook(service)
        client = hook.conn if hook is not None else self._plain_client(service)
        with self._lock:
            return self._clients.setdefault(service, client)

    @property
    def region_name(self) -> str:
        """The region requests go to (explicit option, else the connection's, else the boto3 default)."""
        if self._region_name:
            return self._region_name
        region = self.client("sts").meta.region_name
        if not region:
            raise ValueError("no AWS region configured: set region_name on the backend, the Airflow "
                             "connection's extra {\"region_name\": ...}, or AWS_DEFAULT_REGION")
        return region

    def _make_hook(self, service: str) -> Any:
        try:
            import importlib

            if service in _HOOKS:
                module, name = _HOOKS[service]
                cls = getattr(importlib.import_module(module), name)
                kwargs: dict[str, Any] = {}
            else:
                from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook as cls

                kwargs = {"client_type": service}
        except ImportError:  # Airflow or the amazon provider not installed: plain boto3
            return None
        if self.botocore_config:
            kwargs["config"] = self.botocore_config
        return cls(aws_conn_id=self.aws_conn_id, region_name=self._region_name, **kwargs)

    def _plain_client(self, service: str) -> Any:
        import boto3
        from botocore.config import Config

        config = Config(**self.botocore_config) if self.botocore_config else None
        return boto3.session.Session(region_name=self._region_name).client(service, config=config)


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError ('' for anything else)."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def error_message(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Message", "")) or str(exc)


def is_not_found(exc: BaseException) -> bool:
    """True for 'no such job/function' answers (SageMaker says ValidationException, others ResourceNotFound)."""
    code = error_code(exc)
    if code in ("ResourceNotFoundException", "ResourceNotFound", "NoSuchEntity", "NotFoundException"):
        return True
    if code == "ValidationException":
        text = error_message(exc).lower()
        return "not found" in text or "could not find" in text or "does not exist" in text
    return False
