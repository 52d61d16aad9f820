"""Signature checks, each matching what the real SDK computes.

- POP RPC signature 1.0 (aliyunsdkcore `rpc_signature_composer`).
- MNS `Authorization: MNS ak:sig` (mns `mns_client.get_signature`).
- Function Compute 2.0 `Authorization: FC ak:sig` (fc2 `auth.Auth.sign_request`).
- Alibaba Cloud V3 `Authorization: ACS3-HMAC-SHA256 Credential=..,SignedHeaders=..,Signature=..`
  (the Function Compute 3.0 API, alibabacloud-fc20230330 through tea-openapi).
- AWS SigV4 (recomputed with botocore's own `SigV4Auth`).

Every check refuses with the service's own error code; none logs anything.
"""
from __future__ import annotations

import base64
import calendar
import email.utils
import hashlib
import hmac
import time
from typing import Mapping
from urllib.parse import quote, unquote

from .exceptions import FcError, LambdaError, MnsError, RpcError

MAX_SKEW_SECONDS = 15 * 60


def _b64_hmac(key: str, msg: str, digest=hashlib.sha1) -> str:
    return base64.b64encode(hmac.new(key.encode("utf-8"), msg.encode("utf-8"), digest).digest()).decode()


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


# --- POP RPC -----------------------------------------------------------------------

def _pop_encode(s: str) -> str:
    return quote(s, safe="~")


def rpc_string_to_sign(method: str, params: Mapping[str, str]) -> str:
    pairs = sorted((k, v) for k, v in params.items() if k != "Signature")
    canonical = "&".join(f"{_pop_encode(k)}={_pop_encode(v)}" for k, v in pairs)
    return f"{method.upper()}&%2F&{_pop_encode(canonical)}"


def rpc_sign(method: str, params: Mapping[str, str], secret: str) -> str:
    digest = hashlib.sha256 if params.get("SignatureMethod") == "HMAC-SHA256" else hashlib.sha1
    return _b64_hmac(secret + "&", rpc_string_to_sign(method, params), digest)


def verify_rpc(method: str, params: Mapping[str, str], customer_keys: Mapping[str, str],
               now: float) -> str:
    """Check a POP RPC request; return the caller's AccessKeyId."""
    for name in ("AccessKeyId", "Signature", "SignatureNonce", "Timestamp"):
        if not params.get(name):
            raise RpcError(f"Missing{name}", f"{name} is mandatory for this action.", 400)
    if params.get("SignatureMethod", "HMAC-SHA1") not in ("HMAC-SHA1", "HMAC-SHA256"):
        raise RpcError("InvalidSignatureMethod.Malformed",
                       "Specified signature method is not valid.", 400)
    ts = params["Timestamp"]
    try:
        sent = calendar.timegm(time.strptime(ts, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        raise RpcError("InvalidTimeStamp.Format", "Specified time stamp or date value is not well formatted.",
                       400) from None
    ak = params["AccessKeyId"]
    secret = customer_keys.get(ak)
    if secret is None:
        raise RpcError("InvalidAccessKeyId.NotFound", "Specified access key is not found.", 404)
    if abs(now - sent) > MAX_SKEW_SECONDS:
        raise RpcError("InvalidTimeStamp.Expired",
                       f"Specified time stamp or date value is expired. Timestamp {ts} is more than 15 minutes off.",
                       400)
    if not _same(rpc_sign(method, params, secret), params["Signature"]):
        # The real message ends with ':' + the server's string to sign; the core SDK
        # compares that with its own and, when equal, reports InvalidAccessKeySecret.
        raise RpcError("SignatureDoesNotMatch",
                       "Specified signature is not matched with our calculation. server string to sign is:"
                       + rpc_string_to_sign(method, params), 400)
    return ak


# --- MNS -----------------------------------------------------------------------------

def mns_string_to_sign(method: str, headers: Mapping[str, str], resource: str) -> str:
    """`headers` has lower-case names; `resource` is the request target as sent."""
    mns_headers = "".join(f"{k}:{headers[k]}\n" for k in sorted(headers) if k.startswith("x-mns-"))
    return "%s\n%s\n%s\n%s\n%s%s" % (
        method, headers.get("content-md5", ""), headers.get("content-type", ""),
        headers.get("date", ""), mns_headers, resource)


def parse_mns_authorization(headers: Mapping[str, str]) -> tuple[str, str]:
    auth = headers.get("authorization")
    if not auth:
        raise MnsError("MissingAuthorizationHeader", "Authorization header is required.", 400)
    scheme, _, rest = auth.partition(" ")
    ak, sep, sig = rest.partition(":")
    if scheme != "MNS" or not sep or not ak or not sig:
        raise MnsError("InvalidAuthorizationHeader", "The Authorization header format is invalid.", 400)
    return ak, sig


def check_http_date(headers: Mapping[str, str], now: float, error) -> None:
    """Refuse a missing, garbled or more than 15 minutes off `Date` header."""
    raw = headers.get("date")
    if not raw:
        raise error("MissingDateHeader", "Date header is required.", 400)
    try:
        sent = email.utils.parsedate_to_datetime(raw).timestamp()
    except (TypeError, ValueError, IndexError):
        raise error("InvalidDateHeader", "The Date header format is invalid.", 400) from None
    if abs(now - sent) > MAX_SKEW_SECONDS:
        raise error("TimeExpired", "The http request you sent is expired.", 408)


def verify_mns_signature(method: str, headers: Mapping[str, str], resource: str,
                         signature: str, secret: str) -> None:
    expected = _b64_hmac(secret, mns_string_to_sign(method, headers, resource))
    if not _same(expected, signature):
        raise MnsError("SignatureDoesNotMatch",
                       "The request signature we calculated does not match the signature you provided.", 403)


# --- Function Compute 2.0 --------------------------------------------------------------

def fc_string_to_sign(method: str, headers: Mapping[str, str], path: str, query: str) -> str:
    """`path` is the unescaped path; `query` the raw query string (may be empty)."""
    fc_headers = sorted((k, v) for k, v in headers.items() if k.startswith("x-fc-"))
    canonical_headers = "".join(f"{k}:{v}\n" for k, v in fc_headers)
    resource = path
    if query:
        params = []
        for pair in query.split("&"):
            k, sep, v = pair.partition("=")
            params.append(f"{unquote(k)}={unquote(v)}" if sep else unquote(k))
        resource = path + "\n" + "\n".join(sorted(params))
    return "\n".join([method.upper(), headers.get("content-md5", ""), headers.get("content-type", ""),
                      headers.get("date", ""), canonical_headers + resource])


def verify_fc(method: str, headers: Mapping[str, str], path: str, query: str,
              customer_keys: Mapping[str, str], now: float) -> str:
    auth = headers.get("authorization", "")
    scheme, _, rest = auth.partition(" ")
    ak, sep, sig = rest.partition(":")
    if scheme != "FC" or not sep:
        raise FcError("InvalidArgument", "Authorization header is missing or malformed.", 400)
    check_http_date(headers, now, _fc_date_error)
    secret = customer_keys.get(ak)
    if secret is None:
        raise FcError("InvalidAccessKeyID", f"invalid access key ID '{ak}'", 403)
    expected = _b64_hmac(secret, fc_string_to_sign(method, headers, unquote(path), query), hashlib.sha256)
    if not _same(expected, sig):
        raise FcError("SignatureNotMatch",
                      "The request signature we calculated does not match the signature you provided.", 403)
    return ak


def _fc_date_error(code: str, message: str, status: int) -> FcError:
    if code == "TimeExpired":
        return FcError("RequestTimeTooSkewed",
                       "the difference between the request time and the server's time is too large", 403)
    return FcError("InvalidArgument", message, 400)


# --- Alibaba Cloud V3 (ACS3-HMAC-SHA256), the FC 3.0 API ---------------------------------

def _acs3_encode(s: str) -> str:
    return quote(s, safe="-_.~")


def acs3_canonical_request(method: str, path: str, query: str, headers: Mapping[str, str],
                           signed: list[str], payload_hash: str) -> str:
    """Method, URI, sorted query, the signed headers as name:value lines, their names, the body's hash."""
    pairs = sorted((_acs3_encode(unquote(k)), _acs3_encode(unquote(v)))
                   for k, _, v in (p.partition("=") for p in query.split("&") if p))
    canonical_query = "&".join(f"{k}={v}" for k, v in pairs)
    canonical_uri = quote(unquote(path) or "/", safe="/-_.~")
    canonical_headers = "".join(f"{name}:{headers.get(name, '').strip()}\n" for name in signed)
    return "\n".join([method, canonical_uri, canonical_query, canonical_headers, ";".join(signed), payload_hash])


def verify_acs3(method: str, path: str, query: str, headers: Mapping[str, str], body: bytes,
                customer_keys: Mapping[str, str], now: float) -> str:
    """Check a V3-signed request (header names lower-cased); return the AccessKeyId."""
    auth = headers.get("authorization", "")
    algo, _, rest = auth.partition(" ")
    try:
        fields = dict(part.strip().split("=", 1) for part in rest.split(","))
        ak, signed, signature = fields["Credential"], fields["SignedHeaders"].split(";"), fields["Signature"]
    except (KeyError, ValueError):
        raise FcError("InvalidArgument", "Authorization header is missing or malformed.", 400) from None
    if algo != "ACS3-HMAC-SHA256" or signed != sorted(signed) or "host" not in signed:
        raise FcError("InvalidArgument", "Authorization header is missing or malformed.", 400)
    try:
        sent = calendar.timegm(time.strptime(headers.get("x-acs-date", ""), "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        raise FcError("InvalidArgument", "x-acs-date is missing or malformed.", 400) from None
    if abs(now - sent) > MAX_SKEW_SECONDS:
        raise FcError("RequestTimeTooSkewed", "the difference between the request time and the server's time "
                                              "is too large", 403)
    payload_hash = hashlib.sha256(body).hexdigest()
    if headers.get("x-acs-content-sha256") != payload_hash:
        raise FcError("InvalidArgument", "x-acs-content-sha256 does not match the body.", 400)
    secret = customer_keys.get(ak)
    if secret is None:
        raise FcError("InvalidAccessKeyId.NotFound", f"Specified access key is not found: {ak}", 403)
    canonical = acs3_canonical_request(method, path, query, headers, signed, payload_hash)
    to_sign = f"ACS3-HMAC-SHA256\n{hashlib.sha256(canonical.encode('utf-8')).hexdigest()}"
    expected = hmac.new(secret.encode("utf-8"), to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    if not _same(expected, signature):
        raise FcError("SignatureDoesNotMatch", "The request signature does not conform to Aliyun standards.", 403)
    return ak


# --- AWS SigV4 -------------------------------------------------------------------------

def verify_sigv4(method: str, raw_target: str, headers: Mapping[str, str], body: bytes,
                 customer_keys: Mapping[str, str], now: float) -> str:
    """Recompute the SigV4 signature with botocore and compare; return the AccessKeyId."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    auth = headers.get("authorization", "")
    try:
        algo, _, rest = auth.partition(" ")
        fields = dict(part.strip().split("=", 1) for part in rest.split(","))
        ak, date, region, service, _term = fields["Credential"].split("/")
        signed = fields["SignedHeaders"].split(";")
        signature = fields["Signature"]
        if algo != "AWS4-HMAC-SHA256":
            raise ValueError(algo)
    except (KeyError, ValueError):
        raise LambdaError("IncompleteSignatureException",
                          "Authorization header requires Credential, SignedHeaders and Signature.", 403) from None
    amz_date = headers.get("x-amz-date", "")
    try:
        sent = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
    except ValueError:
        raise LambdaError("IncompleteSignatureException", "X-Amz-Date is missing or malformed.", 403) from None
    secret = customer_keys.get(ak)
    if secret is None:
        raise LambdaError("UnrecognizedClientException",
                          "The security token included in the request is invalid.", 403)
    if abs(now - sent) > MAX_SKEW_SECONDS:
        raise LambdaError("InvalidSignatureException", "Signature expired: the request time is too skewed.", 403)
    host = headers.get("host", "localhost")
    request = AWSRequest(method=method, url=f"http://{host}{raw_target}",
                         headers={h: headers.get(h, "") for h in signed}, data=body)
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(ak, secret, headers.get("x-amz-security-token")), service, region)
    string_to_sign = signer.string_to_sign(request, signer.canonical_request(request))
    if not _same(signer.signature(string_to_sign, request), signature):
        raise LambdaError("InvalidSignatureException",
                          "The request signature we calculated does not match the signature you provided.", 403)
    return ak
