"""Fixtures for the unit tests: nothing here needs PostgreSQL, the stand-in or a network."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.client
import botocore.endpoint
import pytest

#: Profiles in the offline AWS config (the fuzz tests use them as good ``aws_profile`` values).
PROFILES = ("rs-iam-a", "rs-iam-b", "rs-iam-etl")


@pytest.fixture
def offline_aws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """boto3 reads only temporary config/credentials files (fake keys, region us-east-1), and any AWS API
    call fails the test. Yields the operations attempted, which must stay empty.

    ``create_engine(..., plugin=rs_iam)`` builds a boto3 session (file reads, no network), so with this
    fixture it either raises ``ConfigurationError`` or returns an engine, without PostgreSQL or HTTP.
    """
    for name in list(os.environ):
        if name.startswith("AWS_"):  # no real credentials, profile or endpoint may leak in
            monkeypatch.delenv(name)
    config = tmp_path / "aws_config"
    credentials = tmp_path / "aws_credentials"
    config.write_text(
        "[default]\nregion = us-east-1\n" + "".join(f"[profile {p}]\nregion = us-east-1\n" for p in PROFILES)
    )
    credentials.write_text(
        "".join(
            f"[{p}]\naws_access_key_id = AKIAOFFLINEEXAMPLE00\naws_secret_access_key = offline-not-a-secret\n"
            for p in ("default", *PROFILES)
        )
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    attempted: list[str] = []

    def api_call(self: Any, operation_name: str, api_params: Any) -> Any:
        attempted.append(operation_name)
        raise AssertionError(f"AWS call {operation_name} while only configuring")

    def request(self: Any, operation_model: Any, request_dict: Any) -> Any:
        attempted.append(operation_model.name)
        raise AssertionError(f"AWS request {operation_model.name} while only configuring")

    # Both layers: _make_api_call for clients, make_request for anything (e.g. STS fetchers) below them.
    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", api_call)
    monkeypatch.setattr(botocore.endpoint.Endpoint, "make_request", request)
    yield attempted
    assert attempted == []
