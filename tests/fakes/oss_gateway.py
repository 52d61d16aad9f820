"""An OSS front for moto's S3: checks oss2's signatures, answers ListObjects, records headers.

oss2 can put, get, head and delete against moto's S3 (path style on an IP endpoint), but
moto's ListBucketResult carries the S3 XML namespace and oss2's parser finds nothing in
it, and moto checks no signature. This gateway closes both gaps honestly:

- every request must carry a valid OSS V1 signature
  (`Authorization: OSS <ak>:base64(hmac-sha1(secret, VERB\\nContent-MD5\\nContent-Type\\nDate\\n
  <x-oss-* headers><resource>))`), and the STS token when one is configured; a wrong secret
  gets 403 SignatureDoesNotMatch in OSS's XML error format;
- `GET /<bucket>/?prefix=&delimiter=&marker=&max-keys=` (ListObjects V1) is answered in OSS's
  XML, from moto's contents of that bucket, with paging; with a delimiter, the keys that hold it
  after the prefix are rolled up into CommonPrefixes, as the service does;
- everything else is forwarded to moto unchanged, except that OSS's SSE headers are mapped
  to S3's (AES256 -> AES256, KMS -> aws:kms + key id) so moto stores them, and mapped back
  on the way out; SM4 has no S3 counterpart and is only recorded;
- `gateway.requests` records (method, path, headers) of every request, so a test can see
  which headers reached the service; `gateway.deny(bucket)` answers AccessDenied;
  `gateway.hang.on()` accepts requests and never answers them (tests/fakes/hang.py).
"""
from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import http.client
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional
from urllib.parse import parse_qsl, quote, unquote, urlsplit
from xml.sax.saxutils import escape

import pytest

from scripts.stand_ins.hang import Hang

# Query parameters that are part of the signed resource (oss2's list, trimmed to what exists).
SUBRESOURCES = {
    "acl", "uploadId", "uploads", "partNumber", "delete", "append", "position", "security-token",
    "tagging", "versionId", "versioning", "versions", "encryption", "symlink", "restore", "x-oss-process",
    "response-content-type", "response-content-language", "response-cache-control",
    "response-content-encoding", "response-expires", "response-content-disposition",
}
SSE_TO_S3 = {"AES256": "AES256", "KMS": "aws:kms"}
SSE_FROM_S3 = {"AES256": "AES256", "aws:kms": "KMS"}


def string_to_sign(method: str, path: str, query: list[tuple[str, str]], headers: dict[str, str]) -> str:
    resource = unquote(path)
    sub = sorted((k, v) for k, v in query if k in SUBRESOURCES)
    if sub:
        resource += "?" + "&".join(f"{k}={v}" if v else k for k, v in sub)
    oss_headers = "".join(f"{k}:{v}\n" for k, v in sorted(headers.items()) if k.startswith("x-oss-"))
    date = headers.get("x-oss-date") or headers.get("date", "")
    return "\n".join([method, headers.get("content-md5", ""), headers.get("content-type", ""), date, oss_headers + resource])


def sign(secret: str, text: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), text.encode("utf-8"), hashlib.sha1).digest()).decode()


def error_xml(code: str, message: str, request_id: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{escape(message)}</Message>'
            f"<RequestId>{request_id}</RequestId><HostId>127.0.0.1</HostId></Error>").encode()


class OssGateway:
    def __init__(self, upstream: str, access_key_id: str = "oss-ak", access_key_secret: str = "oss-secret",
                 security_token: Optional[str] = None, page_size: int = 1000):
        self.upstream = upstream.split("://", 1)[1]
        self.credentials = {access_key_id: (access_key_secret, security_token)}
        self.page_size = page_size
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.denied: set[str] = set()
        self.hang = Hang()
        self._httpd: Optional[ThreadingHTTPServer] = None

    def deny(self, bucket: str) -> None:
        self.denied.add(bucket)

    @property
    def endpoint(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    # -- checks and answers ---------------------------------------------------------
    def authenticate(self, method: str, path: str, query: list, headers: dict[str, str]) -> Optional[tuple[int, str, str]]:
        """None if the request is signed right, else (status, code, message)."""
        auth = headers.get("authorization", "")
        if not auth.startswith("OSS ") or ":" not in auth:
            return 403, "AccessDenied", "You have no right to access this object because of bucket acl."
        access_key_id, signature = auth[4:].rsplit(":", 1)
        known = self.credentials.get(access_key_id)
        if known is None:
            return 403, "InvalidAccessKeyId", "The OSS Access Key Id you provided does not exist in our records."
        secret, token = known
        if token is not None and headers.get("x-oss-security-token") != token:
            return 403, "InvalidAccessKeyId", "The security token you provided is invalid."
        try:
            sent = email.utils.parsedate_to_datetime(headers.get("date", "")).timestamp()
        except (TypeError, ValueError):
            return 403, "AccessDenied", "Invalid Date header."
        if abs(time.time() - sent) > 15 * 60:
            return 403, "RequestTimeTooSkewed", "The difference between the request time and the current time is too large."
        if not hmac.compare_digest(signature, sign(secret, string_to_sign(method, path, query, headers))):
            return 403, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided."
        return None

    def list_objects(self, bucket: str, query: dict[str, str]) -> tuple[int, bytes]:
        """ListObjects (V1) in OSS's XML, from moto's contents of the bucket."""
        import xml.etree.ElementTree as ET

        ns = {"s3": "http://s3.amazonaws.com/doc/2006-03-01/"}
        entries, token = [], ""
        while True:  # moto pages at 1000 keys like S3
            path = f"/{quote(bucket)}?list-type=2&prefix={quote(query.get('prefix', ''), safe='')}"
            status, _, body = self.forward("GET", path + (f"&continuation-token={quote(token, safe='')}" if token else ""), {}, b"")
            if status != 200:
                return status, body
            root = ET.fromstring(body)
            entries += [(c.findtext("s3:Key", namespaces=ns), c.findtext("s3:Size", namespaces=ns),
                         c.findtext("s3:ETag", namespaces=ns), c.findtext("s3:LastModified", namespaces=ns))
                        for c in root.findall("s3:Contents", ns)]
            token = root.findtext("s3:NextContinuationToken", namespaces=ns) or ""
            if root.findtext("s3:IsTruncated", namespaces=ns) != "true" or not token:
                break
        entries.sort()
        prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
        if delimiter:  # a common prefix stands for all its keys, once, in key order (size None marks it)
            rolled = {}
            for entry in entries:
                rest = entry[0][len(prefix):]
                cut = rest.find(delimiter)
                name = prefix + rest[:cut + len(delimiter)] if cut >= 0 else entry[0]
                rolled.setdefault(name, entry if cut < 0 else (name, None, None, None))
            entries = sorted(rolled.values())
        marker, limit = query.get("marker", ""), int(query.get("max-keys") or 100)
        entries = [e for e in entries if e[0] > marker]
        page, truncated = entries[: min(limit, self.page_size)], len(entries) > min(limit, self.page_size)
        url = query.get("encoding-type") == "url"
        enc = (lambda s: quote(s, safe="")) if url else escape  # noqa: E731
        parts = [f'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult><Name>{bucket}</Name>',
                 f"<Prefix>{enc(query.get('prefix', ''))}</Prefix><Marker>{enc(marker)}</Marker>",
                 f"<MaxKeys>{limit}</MaxKeys><Delimiter>{enc(delimiter)}</Delimiter>",
                 "<EncodingType>url</EncodingType>" if url else "",
                 f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"]
        if truncated:
            parts.append(f"<NextMarker>{enc(page[-1][0])}</NextMarker>")
        for key, size, etag, modified in page:
            if size is None:
                parts.append(f"<CommonPrefixes><Prefix>{enc(key)}</Prefix></CommonPrefixes>")
                continue
            parts.append(f"<Contents><Key>{enc(key)}</Key><LastModified>{modified}</LastModified><ETag>{escape(etag)}</ETag>"
                         f"<Type>Normal</Type><Size>{size}</Size><StorageClass>Standard</StorageClass></Contents>")
        parts.append("</ListBucketResult>")
        return 200, "".join(parts).encode()

    def forward(self, method: str, path: str, headers: dict[str, str], body: bytes):
        out = {k: v for k, v in headers.items() if k not in ("content-length", "connection", "authorization")}
        # moto routes a request by the service in a SigV4 credential scope; an OSS signature
        # is no such thing (and a "/" in its base64 can make moto misroute it), so the
        # already-checked request reaches moto as an S3 one. moto checks no signatures.
        out["authorization"] = ("AWS4-HMAC-SHA256 Credential=oss-gateway/20260101/us-east-1/s3/aws4_request, "
                                "SignedHeaders=host, Signature=0")
        sse = out.pop("x-oss-server-side-encryption", None)
        key_id = out.pop("x-oss-server-side-encryption-key-id", None)
        if sse in SSE_TO_S3:
            out["x-amz-server-side-encryption"] = SSE_TO_S3[sse]
            if key_id:
                out["x-amz-server-side-encryption-aws-kms-key-id"] = key_id
        conn = http.client.HTTPConnection(self.upstream, timeout=30)
        try:
            conn.request(method, path, body=body, headers=out)
            response = conn.getresponse()
            data = response.read()
            back = {}
            for k, v in response.getheaders():
                k = k.lower()
                if k == "x-amz-server-side-encryption":
                    back["x-oss-server-side-encryption"] = SSE_FROM_S3.get(v, v)
                elif k == "x-amz-server-side-encryption-aws-kms-key-id":
                    back["x-oss-server-side-encryption-key-id"] = v
                elif k not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                    back[k] = v
            if method == "HEAD":
                back["content-length"] = response.getheader("Content-Length") or "0"
            return response.status, back, data
        finally:
            conn.close()

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> "OssGateway":
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                split = urlsplit(self.path)
                query = parse_qsl(split.query, keep_blank_values=True)
                gateway.requests.append((self.command, self.path, headers))
                if gateway.hang.hold(self, self.command, self.path, headers):
                    return
                request_id = uuid.uuid4().hex.upper()
                bucket, _, key = unquote(split.path).lstrip("/").partition("/")
                problem = gateway.authenticate(self.command, split.path, query, headers)
                if problem is None and bucket in gateway.denied:
                    problem = (403, "AccessDenied", "You have no right to access this object because of bucket acl.")
                if problem:
                    status, code, message = problem
                    return self._reply(status, {"content-type": "application/xml"}, error_xml(code, message, request_id), request_id)
                if self.command == "GET" and not key and not any(k in SUBRESOURCES for k, _ in query):
                    status, data = gateway.list_objects(bucket, dict(query))
                    return self._reply(status, {"content-type": "application/xml"}, data, request_id)
                status, out, data = gateway.forward(self.command, self.path, headers, body)
                self._reply(status, out, data, request_id)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

            def _reply(self, status, headers, body, request_id):
                headers = dict(headers)
                headers.setdefault("content-length", str(len(body)))
                headers["x-oss-request-id"] = request_id
                headers["date"] = email.utils.formatdate(usegmt=True)
                lines = [f"HTTP/1.1 {status} {self.responses.get(status, ('Error',))[0]}"]
                lines += [f"{k}: {v}" for k, v in headers.items()]
                payload = b"" if self.command == "HEAD" else body
                # One write: status, headers and body together.
                self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, name="oss-gateway", daemon=True).start()
        return self

    def stop(self) -> None:
        self.hang.off()
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()


@pytest.fixture
def oss_gateway(moto):
    """An OSS gateway in front of the (reset) moto server; credentials oss-ak / oss-secret."""
    gateway = OssGateway(moto.endpoint).start()
    yield gateway
    gateway.stop()
