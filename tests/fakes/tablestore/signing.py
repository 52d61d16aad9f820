"""The signatures: the V2 request signature the server checks (a wrong secret gets
OTSAuthFailed 403 as from the real service) and the response signature the SDK verifies
(`authorization: OTS ak:sig`, HMAC-SHA1 over the sorted `x-ots-*` response headers and the
URI)."""
from __future__ import annotations

import base64
import hashlib
import hmac


def _hmac_sha1_b64(secret: str, text: str) -> str:
    digest = hmac.new(secret.encode("utf-8"), text.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _ots_headers_string(headers: dict[str, str], skip: tuple[str, ...] = ()) -> str:
    items = sorted(f"{k}:{v.strip()}" for k, v in headers.items() if k.startswith("x-ots-") and k not in skip)
    return "\n".join(items)


def request_signature(secret: str, uri: str, headers: dict[str, str]) -> str:
    """V2 request signature: URI, verb, (empty) sorted query, sorted x-ots-* headers."""
    text = f"{uri}\nPOST\n\n{_ots_headers_string(headers, skip=('x-ots-signature',))}\n"
    return _hmac_sha1_b64(secret, text)


def response_signature(secret: str, uri: str, headers: dict[str, str]) -> str:
    return _hmac_sha1_b64(secret, f"{_ots_headers_string(headers)}\n{uri}")
