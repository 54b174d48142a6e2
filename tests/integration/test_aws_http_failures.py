"""AWS endpoints that answer with something other than AWS: every failure is one of this package's errors,
naming the endpoint and region, with the cause chained -- from engines and from ``rs-iam`` (exit 4, not 1).

A tiny HTTP server on 127.0.0.1 plays a proxy that answers 502 with an HTML page, and a plain-HTTP server
stands where ``aws_endpoint_url`` says ``https://``. botocore signs, sends and parses for real.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import sqlalchemy as sa
from helpers import current_user
from sqlalchemy.pool import NullPool

from sqlalchemy_rs_iam import cli, errors
from sqlalchemy_rs_iam.testing.standin import RedshiftStandIn

pytestmark = pytest.mark.integration

PAGE = (
    b"<!doctype html>\n<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway"
    b"</h1></center><hr><center>nginx</center>" + b"<!-- padding -->" * 300 + b"</body></html>\n"
)


@pytest.fixture
def proxy_502() -> Iterator[str]:
    """An endpoint answering every request with 502 and an HTML page, as a proxy in front of AWS does."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(502)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(PAGE)))
            self.end_headers()
            self.wfile.write(PAGE)

        do_GET = do_POST

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _engine_error(rs: RedshiftStandIn, endpoint: str, **target: str) -> errors.AwsError:
    engine = sa.create_engine(
        rs.url(aws_endpoint_url=endpoint, aws_max_attempts="2", **target), poolclass=NullPool
    )
    with pytest.raises(errors.AwsError) as info:
        current_user(engine)
    return info.value


def _assert_clean(exc: errors.AwsError, endpoint: str, region: str) -> str:
    text = str(exc)
    assert endpoint in text and exc.endpoint == endpoint
    assert region in text and exc.region == region
    assert exc.__cause__ is not None
    assert text.endswith(".") and ".." not in text and "\n" not in text
    assert "<" not in text and len(text) < 500  # no HTML page in the message
    return text


@pytest.mark.parametrize(
    "target",
    [{}, {"cluster": "etl-cluster"}],
    ids=["serverless-json", "provisioned-xml"],
)
def test_proxy_html_5xx_is_a_service_unavailable_error_naming_endpoint(
    rs: RedshiftStandIn, proxy_502: str, target: dict[str, str]
) -> None:
    exc = _engine_error(rs, proxy_502, **target)
    assert isinstance(exc, errors.ServiceUnavailableError), repr(exc)
    text = _assert_clean(exc, proxy_502, rs.region)
    assert "502" in text


def test_https_endpoint_answering_plain_http_is_a_tls_error_naming_endpoint(
    rs: RedshiftStandIn, proxy_502: str
) -> None:
    endpoint = proxy_502.replace("http://", "https://")
    exc = _engine_error(rs, endpoint)
    assert isinstance(exc, errors.ServiceUnavailableError), repr(exc)
    text = _assert_clean(exc, endpoint, rs.region)
    assert "TLS" in text


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_rs_iam_reports_them_as_aws_unavailable_not_unexpected(
    rs: RedshiftStandIn, proxy_502: str, scheme: str
) -> None:
    endpoint = proxy_502.replace("http://", f"{scheme}://")
    out, err = io.StringIO(), io.StringIO()
    code = cli.run(
        ["credentials", "--workgroup", rs.workgroup, "--database", rs.database, "--region", rs.region,
         "--aws-endpoint-url", endpoint, "--aws-max-attempts", "1"],
        out=out, err=err,
    )  # fmt: skip
    assert code == cli.EXIT_AWS_UNAVAILABLE, err.getvalue()
    assert "unexpected" not in err.getvalue() and endpoint in err.getvalue()
