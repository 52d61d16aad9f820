"""The parsed HTTP request every handler receives, and query-string helpers."""
from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote


@dataclass
class Request:
    method: str
    target: str                  # request target exactly as received (MNS signs this)
    path: str                    # still %-escaped
    query: str                   # raw query string, '' if none
    headers: dict                # lower-case names -> values
    body: bytes = b""
    host_id: str = ""            # "http://127.0.0.1:PORT", for error bodies
    _raw_params: dict | None = field(default=None, repr=False)
    _form_params: dict | None = field(default=None, repr=False)

    @classmethod
    def from_target(cls, method: str, target: str, headers: dict, body: bytes, host_id: str) -> "Request":
        if target.startswith(("http://", "https://")):
            # Some clients send absolute-URL request lines; keep only path + query.
            rest = target.split("://", 1)[1]
            target = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
        path, _, query = target.partition("?")
        return cls(method, target, path, query, headers, body, host_id)

    def raw_params(self) -> dict:
        """Query parameters decoded WITHOUT turning '+' into a space.

        MNS receipt handles may contain '+' and '/', and the MNS SDK puts them in
        the query string unescaped.
        """
        if self._raw_params is None:
            out = {}
            for pair in self.query.split("&") if self.query else ():
                k, _, v = pair.partition("=")
                out.setdefault(unquote(k), unquote(v))
            self._raw_params = out
        return self._raw_params

    def param_ci(self, name: str) -> str | None:
        """Case-insensitive query lookup (the SDK sends ReceiptHandle, docs say receiptHandle)."""
        params = self.raw_params()
        if name in params:
            return params[name]
        low = name.lower()
        for k, v in params.items():
            if k.lower() == low:
                return v
        return None

    def form_params(self) -> dict:
        """POP RPC parameters: query string plus a form-encoded body (form semantics)."""
        if self._form_params is None:
            params = dict(parse_qsl(self.query, keep_blank_values=True))
            ctype = self.headers.get("content-type", "")
            if self.body and "application/x-www-form-urlencoded" in ctype:
                params.update(parse_qsl(self.body.decode("utf-8", "replace"), keep_blank_values=True))
            self._form_params = params
        return self._form_params
