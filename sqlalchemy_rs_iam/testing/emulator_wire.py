"""Wire-level helpers of the AWS emulator: SigV4 verification and the two AWS protocols it speaks.

``redshift-serverless`` uses JSON 1.1 (``X-Amz-Target``, ``{"__type": ..., "message": ...}`` errors);
``redshift`` and ``sts`` use the query protocol (form-encoded ``Action=...``, XML answers wrapped in
``<OpResponse><OpResult>`` with ``ResponseMetadata/RequestId``, errors as ``<ErrorResponse>``).

Nothing here knows about credentials or resources; :mod:`sqlalchemy_rs_iam.testing.emulator` composes it.

Example::

    auth = parse_authorization(headers["Authorization"])   # -> SigV4Auth(access_key_id, region, service, ...)
    ok = signature_matches(auth, secret, "POST", "/", headers, body)
    status, hdrs, payload = render_error("query", "redshift", AwsError("ClusterNotFound", "...", 404), rid)
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple
from urllib.parse import parse_qsl, quote, unquote, urlsplit

Protocol = Literal["json", "query"]

#: service name in the SigV4 scope -> wire protocol
SERVICE_PROTOCOLS: dict[str, Protocol] = {"redshift-serverless": "json", "redshift": "query", "sts": "query"}
#: query-protocol XML namespaces (from the botocore service models)
XML_NAMESPACES = {
    "redshift": "http://redshift.amazonaws.com/doc/2012-12-01/",
    "sts": "https://sts.amazonaws.com/doc/2011-06-15/",
}
JSON_TARGET_PREFIX = {"redshift-serverless": "RedshiftServerless"}

# Parameter names that could carry a secret; kept out of the call log.
_SECRETISH = re.compile(r"password|secret|token", re.IGNORECASE)


class AwsError(Exception):
    """An AWS error answer: ``code`` as the SDK reports it in ``Error.Code``, with its HTTP status.

    Messages must never contain a secret (they are sent to the client and may be logged).
    """

    def __init__(self, code: str, message: str, status: int = 400, *, extra: Mapping[str, str] | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.extra = dict(extra or {})


# --- cross-cutting errors, spelled per protocol -------------------------------------------------------------
# awsJson services (Coral) answer auth failures with 400; query services (redshift, sts) with 403.
_COMMON: dict[str, dict[Protocol, tuple[str, int]]] = {
    "throttle": {"json": ("ThrottlingException", 400), "query": ("Throttling", 400)},
    "internal": {"json": ("InternalServerException", 500), "query": ("InternalFailure", 500)},
    "unknown_key": {"json": ("UnrecognizedClientException", 400), "query": ("InvalidClientTokenId", 403)},
    "bad_signature": {"json": ("InvalidSignatureException", 400), "query": ("SignatureDoesNotMatch", 403)},
    # AWS reports a request time outside its window with the signature error code and a "Signature expired"
    # / "Signature not yet current" message.
    "signature_time": {"json": ("InvalidSignatureException", 400), "query": ("SignatureDoesNotMatch", 403)},
    "expired_token": {"json": ("ExpiredTokenException", 400), "query": ("ExpiredToken", 400)},
    "missing_auth": {
        "json": ("MissingAuthenticationTokenException", 400),
        "query": ("MissingAuthenticationToken", 403),
    },
    "denied": {"json": ("AccessDeniedException", 400), "query": ("AccessDenied", 403)},
    "unknown_operation": {"json": ("UnknownOperationException", 400), "query": ("InvalidAction", 400)},
    "malformed": {"json": ("SerializationException", 400), "query": ("MalformedQueryString", 400)},
}
_COMMON_MESSAGES = {
    "throttle": "Rate exceeded",
    "internal": "The request processing has failed because of an unknown error, exception or failure.",
    "unknown_key": "The security token included in the request is invalid.",
    "bad_signature": (
        "The request signature we calculated does not match the signature you provided. Check your AWS "
        "Secret Access Key and signing method. Consult the service documentation for details."
    ),
    "expired_token": "The security token included in the request is expired",
    "missing_auth": "Request is missing Authentication Token",
    "unknown_operation": "The action or operation requested is invalid. Verify that the action is typed correctly.",
    "malformed": "The request could not be parsed.",
}


def common_error(kind: str, protocol: Protocol, message: str | None = None) -> AwsError:
    """A cross-cutting error (throttling, auth, internal...) with the code and status of ``protocol``."""
    code, status = _COMMON[kind][protocol]
    return AwsError(code, message if message is not None else _COMMON_MESSAGES.get(kind, code), status)


# --- SigV4 ---------------------------------------------------------------------------------------------------
_AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<akid>[^/,\s]+)/(?P<date>\d{8})/(?P<region>[^/,\s]+)/"
    r"(?P<service>[^/,\s]+)/aws4_request\s*,\s*SignedHeaders=(?P<signed>[^,\s]+)\s*,\s*"
    r"Signature=(?P<sig>[0-9a-fA-F]+)\s*$"
)


@dataclass(frozen=True)
class SigV4Auth:
    """The parsed ``Authorization`` header of a SigV4-signed request."""

    access_key_id: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str = ""

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


def parse_authorization(value: str | None) -> SigV4Auth | None:
    """Parse a SigV4 ``Authorization`` header; ``None`` if absent or not SigV4."""
    if not value:
        return None
    m = _AUTH_RE.match(value.strip())
    if m is None:
        return None
    return SigV4Auth(
        access_key_id=m["akid"],
        date=m["date"],
        region=m["region"],
        service=m["service"],
        signed_headers=tuple(m["signed"].lower().split(";")),
        signature=m["sig"].lower(),
    )


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def _canonical_query(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    encoded = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


def canonical_request(
    auth: SigV4Auth, method: str, raw_path: str, headers: Mapping[str, str], body: bytes
) -> str:
    """The SigV4 canonical request for what was received (header names in ``headers`` are lower-case)."""
    split = urlsplit(raw_path)
    path = quote(unquote(split.path or "/"), safe="/~")
    lines = []
    for name in auth.signed_headers:
        lines.append(f"{name}:{' '.join(headers.get(name, '').split())}")
    # The hash of the bytes that arrived, never a hash the client claims in x-amz-content-sha256: a body
    # changed in transit must break the signature even if the header was left as signed.
    payload_hash = hashlib.sha256(body).hexdigest()
    return "\n".join(
        [
            method.upper(),
            path,
            _canonical_query(split.query),
            "\n".join(lines) + "\n",
            ";".join(auth.signed_headers),
            payload_hash,
        ]
    )


def expected_signature(
    auth: SigV4Auth, secret: str, method: str, raw_path: str, headers: Mapping[str, str], body: bytes
) -> str:
    """Recompute the request signature with ``secret`` (the caller's secret access key)."""
    amz_date = headers.get("x-amz-date", "")
    creq = canonical_request(auth, method, raw_path, headers, body)
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, auth.scope, hashlib.sha256(creq.encode("utf-8")).hexdigest()]
    )
    key = _hmac(("AWS4" + secret).encode("utf-8"), auth.date)
    for part in (auth.region, auth.service, "aws4_request"):
        key = _hmac(key, part)
    return hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def signature_matches(
    auth: SigV4Auth, secret: str, method: str, raw_path: str, headers: Mapping[str, str], body: bytes
) -> bool:
    """True if the request was signed with ``secret`` (constant-time compare; ``host`` must be signed)."""
    if "host" not in auth.signed_headers or not headers.get("x-amz-date", "").startswith(auth.date):
        return False
    expected = expected_signature(auth, secret, method, raw_path, headers, body)
    return hmac.compare_digest(expected, auth.signature)


#: How far X-Amz-Date may be from the server's clock, either way (AWS: 15 minutes).
SIGNATURE_WINDOW = 15 * 60
_AMZ_DATE = "%Y%m%dT%H%M%SZ"


def check_request_time(amz_date: str, now: float, protocol: Protocol) -> None:
    """Raise AWS's error if ``amz_date`` (``X-Amz-Date``) is more than 15 minutes off ``now``.

    >>> check_request_time("20240101T000000Z", 1704067200.0 + 901, "query")  # doctest: +SKIP
    AwsError: SignatureDoesNotMatch: Signature expired: 20240101T000000Z is now earlier than ...
    """
    try:
        signed = _dt.datetime.strptime(amz_date, _AMZ_DATE).replace(tzinfo=_dt.timezone.utc).timestamp()
    except ValueError:
        raise AwsError(
            "IncompleteSignature",
            f"Date must be in ISO-8601 'basic format'. Got '{amz_date}'. See "
            "http://en.wikipedia.org/wiki/ISO_8601",
            400 if protocol == "json" else 403,
        ) from None

    def fmt(epoch: float) -> str:
        return _dt.datetime.fromtimestamp(epoch, tz=_dt.timezone.utc).strftime(_AMZ_DATE)

    if signed < now - SIGNATURE_WINDOW:
        raise common_error(
            "signature_time",
            protocol,
            f"Signature expired: {amz_date} is now earlier than {fmt(now - SIGNATURE_WINDOW)} "
            f"({fmt(now)} - 15 min.)",
        )
    if signed > now + SIGNATURE_WINDOW:
        raise common_error(
            "signature_time",
            protocol,
            f"Signature not yet current: {amz_date} is still later than {fmt(now + SIGNATURE_WINDOW)} "
            f"({fmt(now)} + 15 min.)",
        )


# --- request parsing -----------------------------------------------------------------------------------------
_LIST_KEY = re.compile(r"^(?P<name>[A-Za-z0-9]+)\.(?:member|[A-Z][A-Za-z0-9]*)\.(?P<index>\d+)$")


def parse_query_params(body: bytes, query: str = "") -> dict[str, object]:
    """Decode a query-protocol request into ``{name: str | list[str]}`` (``X.member.N`` / ``X.Item.N`` lists)."""
    text = body.decode("utf-8")
    pairs = parse_qsl(query, keep_blank_values=True) + parse_qsl(text, keep_blank_values=True)
    out: dict[str, object] = {}
    lists: dict[str, dict[int, str]] = {}
    for key, value in pairs:
        m = _LIST_KEY.match(key)
        if m is not None:
            lists.setdefault(m["name"], {})[int(m["index"])] = value
        else:
            out[key] = value
    for name, items in lists.items():
        out[name] = [items[i] for i in sorted(items)]
    return out


def loggable_params(params: Mapping[str, object]) -> dict[str, object]:
    """Request parameters fit for the call log: anything that looks like a secret is dropped."""
    return {k: v for k, v in params.items() if not _SECRETISH.search(k) and k not in ("Action", "Version")}


# --- rendering -----------------------------------------------------------------------------------------------
def iso8601(epoch: float) -> str:
    """``2019-12-10T17:25:05.770Z`` — the query protocol's timestamp form."""
    moment = _dt.datetime.fromtimestamp(epoch, tz=_dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class Members(NamedTuple):
    """An XML list: each item becomes a ``<tag>`` child."""

    tag: str
    items: Sequence[object]


def _xml_fill(parent: ET.Element, value: object) -> None:
    if isinstance(value, Members):
        for item in value.items:
            _xml_fill(ET.SubElement(parent, value.tag), item)
    elif isinstance(value, Mapping):
        for key, child in value.items():
            if child is None:
                continue
            _xml_fill(ET.SubElement(parent, str(key)), child)
    elif isinstance(value, bool):
        parent.text = "true" if value else "false"
    else:
        parent.text = str(value)


Rendered = tuple[int, dict[str, str], bytes]


def render_success(
    protocol: Protocol, service: str, operation: str, result: Mapping[str, object], request_id: str
) -> Rendered:
    """A 200 answer for ``operation`` carrying ``result`` (timestamps already formatted for the protocol)."""
    if protocol == "json":
        payload = json.dumps(result, separators=(",", ":")).encode("utf-8")
        return 200, {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": request_id}, payload
    root = ET.Element(f"{operation}Response", xmlns=XML_NAMESPACES[service])
    _xml_fill(ET.SubElement(root, f"{operation}Result"), result)
    meta = ET.SubElement(root, "ResponseMetadata")
    ET.SubElement(meta, "RequestId").text = request_id
    payload = ET.tostring(root, encoding="utf-8", xml_declaration=False)
    return 200, {"Content-Type": "text/xml", "x-amzn-RequestId": request_id}, payload


def render_error(protocol: Protocol, service: str, error: AwsError, request_id: str) -> Rendered:
    """An error answer in the shape botocore's parser for ``protocol`` expects."""
    if protocol == "json":
        body: dict[str, str] = {"__type": error.code, "message": error.message, **error.extra}
        payload = json.dumps(body, separators=(",", ":")).encode("utf-8")
        headers = {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": request_id}
        return error.status, headers, payload
    root = ET.Element("ErrorResponse", xmlns=XML_NAMESPACES.get(service, XML_NAMESPACES["sts"]))
    err = ET.SubElement(root, "Error")
    ET.SubElement(err, "Type").text = "Receiver" if error.status >= 500 else "Sender"
    ET.SubElement(err, "Code").text = error.code
    ET.SubElement(err, "Message").text = error.message
    ET.SubElement(root, "RequestId").text = request_id
    payload = ET.tostring(root, encoding="utf-8", xml_declaration=False)
    return error.status, {"Content-Type": "text/xml", "x-amzn-RequestId": request_id}, payload
