"""HTTP admin interface under /_admin (JSON), mirroring the Python API of `Emulator`.

Never faulted, never delayed, never counted in stats. Loopback only, no auth.

  GET    /_admin/health                     {"ok": true, "url": ..}
  GET    /_admin/queues                     {"queues": {name: state}}
  POST   /_admin/queues                     {"name" | "message_type", "visibility_timeout"?}
  GET    /_admin/queues/<name>              state
  PUT    /_admin/queues/<name>              {"visibility_timeout"} -> state
  POST   /_admin/queues/<name>/messages     {"body" | "bodies" | "receipt" | "receipts"} -> {"message_ids"}
  POST   /_admin/queues/<name>/malformed-receives  {"field", "mode"?, "count"?}
  POST   /_admin/queues/<name>/failing-deletes     {"handles", "times"?}
  DELETE /_admin/queues/<name>/faults       drop pending malformed receives and failing deletes
  GET    /_admin/queues/<name>/redeliveries {message_id: times received} (received more than once)
  GET    /_admin/stats                      stats
  DELETE /_admin/stats                      reset (also POST /_admin/stats/reset)
  GET|PUT /_admin/latency                   {"seconds", "jitter"}
  GET|PUT|DELETE /_admin/faults             set_faults(**body) (kinds incl. hang; throttle_code,
                                            throttle_status); DELETE clears
  GET    /_admin/faults/hung                {"hung_requests": n} held unanswered right now
  POST   /_admin/tokens/expire              expire every issued token now
  POST   /_admin/tokens/expire-on           {"action", "times"?}: those MNS requests find tokens expired
  PUT|DELETE /_admin/tokens/refusals/<type> {"code", "message"?, "status"?}: refuse that type's tokens
  GET    /_admin/tokens/requests            {"requests": [{message_type, queue_name, owner_id, answer, time}]}
  PUT    /_admin/tokens/lifetime            {"seconds"}
  PUT    /_admin/clock                      {"skew_seconds"}: server clock ahead (+) / behind (-)
  POST   /_admin/keys                       {"keys": {ak: secret}} or {"ak", "secret"}
  POST   /_admin/role-credentials           {"lifetime"?} -> {access_key_id, access_key_secret, security_token}
  POST   /_admin/role-credentials/expire    expire every role credential now
  PUT|DELETE /_admin/rpc-refusal            {"code", "message"?, "actions"?}
  POST   /_admin/send-records               {"records": [add_send_record kwargs, ...]} or one record
  PUT|DELETE /_admin/send-details-error     {"code", "phones"?, "message"?}
  GET    /_admin/functions/<name>/invocations   {"payloads_b64": [...]}
"""
from __future__ import annotations

import base64
import json
from urllib.parse import unquote

from . import responses as r
from .exceptions import EmulatorError
from .request import Request


class AdminError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class AdminResponses:
    def __init__(self, emulator):
        self.emu = emulator

    def dispatch(self, req: Request) -> r.Response:
        parts = [unquote(p) for p in req.path.split("/")[2:] if p]
        try:
            body = json.loads(req.body.decode("utf-8")) if req.body.strip() else {}
            if not isinstance(body, dict):
                raise AdminError(400, "JSON body must be an object")
            result = self._route(req.method, parts, body)
            return r.json_response(200, result if result is not None else {"ok": True})
        except AdminError as e:
            return r.json_response(e.status, {"error": str(e)})
        except EmulatorError as e:
            return r.json_response(e.status, {"error": e.code, "message": e.message})
        except (ValueError, TypeError, KeyError) as e:
            return r.json_response(400, {"error": f"{type(e).__name__}: {e}"})
        except Exception as e:  # an admin mistake must not kill the connection
            return r.json_response(500, {"error": f"{type(e).__name__}: {e}"})

    def _route(self, method: str, parts: list[str], body: dict):
        emu = self.emu
        head = parts[0] if parts else ""
        if head == "health" and method == "GET":
            return {"ok": True, "url": emu.url}
        if head == "queues":
            return self._queues(method, parts[1:], body)
        if head == "stats":
            if method == "GET":
                return emu.stats()
            if method == "DELETE" or (method == "POST" and parts[1:] == ["reset"]):
                emu.reset_stats()
                return None
        if head == "latency":
            if method == "PUT":
                emu.set_latency(float(body.get("seconds", 0.0)), float(body.get("jitter", 0.0)))
            if method in ("GET", "PUT"):
                return {"seconds": emu.backend.faults.latency, "jitter": emu.backend.faults.jitter}
        if head == "faults" and parts[1:] == ["hung"] and method == "GET":
            return {"hung_requests": emu.hung_requests()}
        if head == "faults":
            if method == "PUT":
                emu.set_faults(**body)
            elif method == "DELETE":
                emu.set_faults()
            if method in ("GET", "PUT", "DELETE"):
                return emu.backend.faults.config.as_dict()
        if head == "tokens":
            if parts[1:] == ["expire"] and method == "POST":
                emu.expire_tokens()
                return None
            if parts[1:] == ["lifetime"] and method == "PUT":
                emu.set_token_lifetime(float(body["seconds"]))
                return None
            if parts[1:] == ["expire-on"] and method == "POST":
                emu.expire_tokens_on(body["action"], int(body.get("times", 1)))
                return None
            if len(parts) == 3 and parts[1] == "refusals" and method in ("PUT", "DELETE"):
                if method == "DELETE":
                    emu.refuse_tokens(parts[2], None)
                else:
                    emu.refuse_tokens(parts[2], body["code"], body.get("message"), int(body.get("status", 403)))
                return None
            if parts[1:] == ["requests"] and method == "GET":
                return {"requests": emu.token_requests()}
        if head == "clock" and method == "PUT":
            emu.set_clock_skew(float(body["skew_seconds"]))
            return {"skew_seconds": emu.backend.clock_skew}
        if head == "keys" and method == "POST":
            keys = body.get("keys") or {body["ak"]: body["secret"]}
            emu.add_customer_keys(keys)
            return {"added": sorted(keys)}
        if head == "role-credentials" and method == "POST":
            if parts[1:] == ["expire"]:
                emu.expire_role_credentials()
                return None
            if not parts[1:]:
                return emu.issue_role_credentials(float(body.get("lifetime", 3600.0)))
        if head == "rpc-refusal" and method in ("PUT", "DELETE"):
            if method == "DELETE":
                emu.set_rpc_refusal(None)
            else:
                emu.set_rpc_refusal(body["code"], body.get("message"), body.get("actions"))
            return None
        if head == "send-records" and method == "POST":
            records = body.get("records", [body])
            for rec in records:
                emu.add_send_record(**rec)
            return {"added": len(records)}
        if head == "send-details-error" and method in ("PUT", "DELETE"):
            if method == "DELETE":
                emu.set_send_details_error(None)
            else:
                emu.set_send_details_error(body["code"], body.get("phones"), body.get("message"))
            return None
        if head == "functions" and len(parts) == 3 and parts[2] == "invocations" and method == "GET":
            return {"payloads_b64": [base64.b64encode(p).decode() for p in emu.invocations(parts[1])]}
        raise AdminError(404, f"no admin route {method} /_admin/{'/'.join(parts)}")

    def _queues(self, method: str, rest: list[str], body: dict):
        emu = self.emu
        if not rest:
            if method == "GET":
                return {"queues": {n: emu.queue_state(n) for n in emu.backend.queues.queue_names()}}
            if method == "POST":
                name = body.get("name") or emu.queue_name(body["message_type"])
                emu.create_queue(name, body.get("visibility_timeout"))
                return {"name": name}
        name = rest[0]
        if len(rest) == 1 and method == "GET":
            return emu.queue_state(name)
        if len(rest) == 1 and method == "PUT":
            emu.set_visibility_timeout(name, float(body["visibility_timeout"]))
            return emu.queue_state(name)
        if rest[1:] == ["malformed-receives"] and method == "POST":
            emu.malform_receives(name, body["field"], body.get("mode", "empty"), int(body.get("count", 1)))
            return None
        if rest[1:] == ["failing-deletes"] and method == "POST":
            emu.fail_deletes(name, int(body["handles"]), int(body.get("times", 1)))
            return None
        if rest[1:] == ["faults"] and method == "DELETE":
            emu.clear_queue_faults(name)
            return None
        if rest[1:] == ["redeliveries"] and method == "GET":
            return emu.redeliveries(name)
        if rest[1:] == ["messages"] and method == "POST":
            ids = [emu.enqueue(name, b) for b in body.get("bodies", [])]
            ids += [emu.enqueue_receipt(name, p) for p in body.get("receipts", [])]
            if "body" in body:
                ids.append(emu.enqueue(name, body["body"]))
            if "receipt" in body:
                ids.append(emu.enqueue_receipt(name, body["receipt"]))
            return {"message_ids": ids}
        raise AdminError(404, f"no admin route {method} /_admin/queues/{'/'.join(rest)}")
