"""Backfill by hand: run the deployed reconcile function over a date range and a phone list.

    # Function Compute (credentials: ALIBABA_CLOUD_ACCESS_KEY_ID / _SECRET [/ _SECURITY_TOKEN])
    python -m scripts.backfill fc --account-id 1234567890 --region cn-hangzhou \\
        --service alicom-drain --function alicom-reconcile \\
        --date-from 2026-11-01 --date-to 2026-11-20 --phones-file phones.txt --resume-file nov.resume.jsonl

    # AWS Lambda (credentials: the boto3 chain; region: --region or AWS_REGION)
    python -m scripts.backfill lambda --function alicom-drain-ReconcileFunction-abc123 \\
        --dates 2026-11-03,2026-11-04 --phones 13800000000,+85212345678 --async

    # In this process, against whatever the environment points at (the local demo)
    python -m scripts.backfill local --date-from 2026-11-18 --date-to 2026-11-20 --phones 13800000000

The range is split into one invocation per day and chunk of phone numbers (`--chunk-size`),
each a manual reconcile event (`{"dates": [day], "phones": [...], "biz_id"?}`), validated here
with the function's own model before anything is invoked. Invocations run one after another,
synchronously by default (each result is read; a result that lists `unreached` targets — the
function ran out of time — is queued again as its own invocation, up to `--max-requeue` times)
or asynchronously with `--async` (accepted = done; the function's results go to its logs).

Resume: every invocation has an id derived from its day, chunk and phones. After each success
one JSON line `{"id", "at", "result", "requeued"}` is added to the resume file (rewritten to a
temporary file, fsynced and renamed: a kill never leaves it half-written). A rerun with the
same arguments and resume file skips every id already there and runs the re-queued follow-ups
that did not finish, so an interrupted backfill never invokes a completed day again.
Failed invocations are not recorded; the summary lists them and the exit code is 1.

Function Compute 2.0 and 3.0: `aliyun-fc2` speaks the FC 2.0 API, which names a function
through its service (`POST /2016-08-15/services/<service>/functions/<function>/invocations`).
Alibaba Cloud's "Comparison and compatibility between Function Compute 3.0 and Function
Compute 2.0" (help/en/functioncompute/fc-3-0/product-overview/feature-updates-in-function-compute-3)
says FC 3.0 drops services (functions are first-level entities; role, logs and VPC move to
the function) and that original services and functions keep working and can still be
invoked; the 3.0 API sees both generations (ListFunctions takes `fcVersion=v2|v3`, FC
2023-03-30 reference). We found no statement that the 2.0 API reaches a function created
through FC 3.0 — which has no service to put in that path — and our s.yaml deploys with the
fc3 component. So: `--fc-api 2` (the default, tested against the emulator) is for functions
that live in an FC 2.0 service; for functions deployed by s.yaml use `--fc-api 3`, which calls
`POST /2023-03-30/functions/<function>/invocations` through `alibabacloud-fc20230330`
(install it separately: it is not in requirements, and that path is not covered by tests).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Optional

RESULT_FIELDS = ("queried", "delivered", "failed", "waiting", "not_found")


class InvokeError(Exception):
    """An invocation failed (transport, platform refusal or the function raised)."""


class UsageError(Exception):
    """The arguments do not describe a backfill; exit code 2."""


# --- the plan ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Invocation:
    id: str
    day: str  # YYYY-MM-DD (a follow-up keeps its parent's day for the summary)
    payload: dict = field(compare=False)
    phones: int = 0

    @property
    def depth(self) -> int:
        return self.id.count("/r")


def split_dates(date_from: Optional[str], date_to: Optional[str], dates: Optional[str]) -> list[str]:
    if dates:
        if date_from or date_to:
            raise UsageError("give --dates or --date-from/--date-to, not both")
        days = [d.strip() for d in dates.split(",") if d.strip()]
    elif date_from and date_to:
        try:
            first = datetime.strptime(date_from, "%Y-%m-%d").date()
            last = datetime.strptime(date_to, "%Y-%m-%d").date()
        except ValueError:
            raise UsageError("--date-from/--date-to: expected YYYY-MM-DD") from None
        if last < first:
            raise UsageError(f"--date-to {date_to} is before --date-from {date_from}")
        days = [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
    else:
        raise UsageError("give --dates, or --date-from and --date-to")
    return sorted(set(days))


def plan(days: list[str], phones: list[str], chunk_size: int, biz_id: Optional[str] = None) -> list[Invocation]:
    """One invocation per day and chunk of phones; ids stable for the same arguments."""
    if chunk_size < 1:
        raise UsageError("--chunk-size must be >= 1")
    out = []
    for day in days:
        for n, start in enumerate(range(0, len(phones), chunk_size)):
            chunk = phones[start:start + chunk_size]
            digest = hashlib.sha256("\n".join(chunk + [biz_id or ""]).encode()).hexdigest()[:10]
            payload: dict[str, Any] = {"dates": [day], "phones": chunk}
            if biz_id:
                payload["biz_id"] = biz_id
            out.append(Invocation(f"{day}#{n:04d}-{digest}", day, payload, len(chunk)))
    return out


def validate(invocations: list[Invocation]) -> None:
    """Check every event with the function's own model before invoking anything."""
    from shared.platform import EventError
    from shared.reconcile import parse_reconcile_event

    for inv in invocations:
        try:
            parse_reconcile_event(inv.payload)
        except EventError as exc:
            raise UsageError(f"day {inv.day}: {exc}") from None


def event_phone(normalized: str) -> str:
    """The form a reconcile event accepts for a normalised number: a mainland number as its 11
    digits, any other as '+' and its digits (normalising gives `85212345678` for
    `+85212345678`, which the event would refuse without its '+')."""
    from shared.send_records import PhoneError, normalize_phone

    try:
        return normalized if normalize_phone(normalized) == normalized else "+" + normalized
    except PhoneError:
        return "+" + normalized


def load_phones(phones: Optional[str], phones_file: Optional[Path]) -> list[str]:
    """The numbers, deduplicated, each in the form the reconcile event accepts."""
    from shared.platform import EventError
    from shared.reconcile import parse_phone_list
    from shared.send_records import PhoneError, normalize_phone

    if bool(phones) == bool(phones_file):
        raise UsageError("give --phones or --phones-file (one of them)")
    if phones_file:
        try:
            return [event_phone(p) for p in parse_phone_list(phones_file.read_bytes(), str(phones_file))]
        except OSError as exc:
            raise UsageError(f"--phones-file: cannot read {phones_file} ({exc.strerror or exc})") from None
        except EventError as exc:
            raise UsageError(str(exc).replace("invalid event: phones_file", "--phones-file")) from None
    out = []
    for i, value in enumerate(p.strip() for p in phones.split(",") if p.strip()):
        try:
            out.append(normalize_phone(value))
        except PhoneError as exc:
            raise UsageError(f"--phones: item {i}: {exc}") from None
    if not out:
        raise UsageError("--phones: no phone number given")
    return [event_phone(p) for p in dict.fromkeys(out)]


# --- the resume file ------------------------------------------------------------------------

class ResumeFile:
    """JSON lines of completed invocations, rewritten atomically after each success."""

    def __init__(self, path: Optional[Path]):
        self.path = path
        self.lines: list[dict[str, Any]] = []
        if path is not None and path.exists():
            for raw in path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(raw)
                except ValueError:
                    continue  # not ours, or from a tool that does not write atomically
                if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                    self.lines.append(entry)

    @property
    def done(self) -> set[str]:
        return {e["id"] for e in self.lines}

    def open_follow_ups(self) -> list[Invocation]:
        """Re-queued follow-ups recorded with their parent but not completed themselves."""
        done = self.done
        out = []
        for entry in self.lines:
            child = entry.get("requeued")
            if isinstance(child, dict) and child.get("id") not in done:
                out.append(Invocation(child["id"], child.get("day", ""), child["payload"],
                                      int(child.get("phones") or 0)))
        return out

    def record(self, inv: Invocation, result: Optional[dict], child: Optional[Invocation]) -> None:
        entry: dict[str, Any] = {"id": inv.id, "day": inv.day, "at": int(time.time()),
                                 "result": _counts(result) if result is not None else None, "requeued": None}
        if child is not None:
            entry["requeued"] = {"id": child.id, "day": child.day, "payload": child.payload, "phones": child.phones}
        self.lines.append(entry)
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.writelines(json.dumps(e, ensure_ascii=False, sort_keys=True) + "\n" for e in self.lines)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


def _counts(result: dict) -> dict[str, Any]:
    out = {k: int(result.get(k) or 0) for k in RESULT_FIELDS}
    out["errors"] = len(result.get("errors") or [])
    out["error_codes"] = result.get("error_codes") or {}
    out["unreached"] = int(result.get("unreached_count") or 0)
    out["ok"] = bool(result.get("ok", True))
    return out


# --- invokers ---------------------------------------------------------------------------------

class FcInvoker:
    """Function Compute 2.0 API through aliyun-fc2."""

    def __init__(self, endpoint: str, service: str, function: str, qualifier: Optional[str], timeout: float):
        import fc2

        ak, secret, token = _alibaba_credentials()
        self.client = fc2.Client(endpoint=endpoint, accessKeyID=ak, accessKeySecret=secret, securityToken=token or "",
                                 Timeout=timeout)
        self.service, self.function, self.qualifier = service, function, qualifier

    def invoke(self, payload: bytes, run_async: bool) -> Optional[dict]:
        import fc2

        headers = {"x-fc-invocation-type": "Async" if run_async else "Sync"}
        try:
            response = self.client.invoke_function(self.service, self.function, payload=payload, headers=headers,
                                                   qualifier=self.qualifier)
        except fc2.fc_exceptions.FcError as exc:
            raise InvokeError(f"FC {exc.status_code or ''} {exc.err_code or ''}: {exc.message}".strip()) from None
        except Exception as exc:  # requests' connection errors and timeouts
            raise InvokeError(f"FC request failed: {type(exc).__name__}: {exc}") from None
        return None if run_async else _json_result(response.data)


class Fc3Invoker:
    """Function Compute 3.0 API (2023-03-30) through alibabacloud-fc20230330 (optional, untested here)."""

    def __init__(self, endpoint: Optional[str], region: str, function: str, qualifier: Optional[str], timeout: float):
        try:
            from alibabacloud_fc20230330.client import Client
        except ImportError:
            raise UsageError("--fc-api 3 needs the FC 3.0 SDK: pip install alibabacloud-fc20230330") from None
        try:
            from alibabacloud_tea_openapi.utils_models import Config
        except ImportError:  # older tea-openapi
            from alibabacloud_tea_openapi.models import Config
        ak, secret, token = _alibaba_credentials()
        config = Config(access_key_id=ak, access_key_secret=secret, security_token=token, region_id=region,
                        read_timeout=int(timeout * 1000), connect_timeout=5000)
        if endpoint:
            config.endpoint = endpoint.split("://", 1)[-1]
            config.protocol = "http" if endpoint.startswith("http://") else "https"
        self.client = Client(config)
        self.function, self.qualifier = function, qualifier

    def invoke(self, payload: bytes, run_async: bool) -> Optional[dict]:
        import io

        from alibabacloud_fc20230330 import models

        request = models.InvokeFunctionRequest(body=io.BytesIO(payload), qualifier=self.qualifier)
        headers = models.InvokeFunctionHeaders(x_fc_invocation_type="Async" if run_async else "Sync")
        try:
            from darabonba.runtime import RuntimeOptions
        except ImportError:
            from alibabacloud_tea_util.models import RuntimeOptions
        try:
            response = self.client.invoke_function_with_options(self.function, request, headers, RuntimeOptions())
        except Exception as exc:  # the SDK's TeaException / network errors
            raise InvokeError(f"FC 3.0 invoke failed: {type(exc).__name__}: {exc}") from None
        body = response.body.read() if response.body is not None else b""
        error_type = {k.lower(): v for k, v in (response.headers or {}).items()}.get("x-fc-error-type")
        if error_type:
            raise InvokeError(f"FC 3.0 function error ({error_type}): {body[:300]!r}")
        return None if run_async else _json_result(body)


class LambdaInvoker:
    def __init__(self, function: str, region: Optional[str], endpoint: Optional[str], qualifier: Optional[str],
                 timeout: float):
        import boto3
        from botocore.config import Config

        region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if not region:
            raise UsageError("lambda: give --region (or set AWS_REGION)")
        # No SDK retries: a failed invocation is reported and a rerun retries it from the resume file.
        config = Config(retries={"max_attempts": 1, "mode": "standard"}, read_timeout=timeout, connect_timeout=10)
        # A session of its own: boto3's default session keeps the first credentials it resolved
        # for the life of the process, whatever the environment says later.
        self.client = boto3.session.Session().client("lambda", region_name=region, endpoint_url=endpoint,
                                                     config=config)
        self.function, self.qualifier = function, qualifier

    def invoke(self, payload: bytes, run_async: bool) -> Optional[dict]:
        from botocore.exceptions import BotoCoreError, ClientError

        args: dict[str, Any] = {"FunctionName": self.function, "Payload": payload,
                                "InvocationType": "Event" if run_async else "RequestResponse"}
        if self.qualifier:
            args["Qualifier"] = self.qualifier
        try:
            response = self.client.invoke(**args)
        except ClientError as exc:
            error = exc.response.get("Error") or {}
            raise InvokeError(f"Lambda {error.get('Code')}: {error.get('Message')}") from None
        except BotoCoreError as exc:
            raise InvokeError(f"Lambda request failed: {exc}") from None
        body = response["Payload"].read() if "Payload" in response else b""
        if response.get("FunctionError"):
            raise InvokeError(f"Lambda function error ({response['FunctionError']}): {body[:300]!r}")
        return None if run_async else _json_result(body)


class LocalInvoker:
    """functions.reconcile.handler in this process (settings from the environment)."""

    def __init__(self, timeout: float):
        self.timeout = timeout

    def invoke(self, payload: bytes, run_async: bool) -> Optional[dict]:
        from functions.reconcile import handler
        from scripts.invoke_local import LambdaContext
        from shared.platform import RunFailed

        try:
            return handler(json.loads(payload), LambdaContext("reconcile", self.timeout))
        except RunFailed as failed:  # a failed run's report says what failed, as the platforms' would not
            return failed.summary
        except Exception as exc:  # what the platform would report as the function's error
            raise InvokeError(f"local handler failed: {type(exc).__name__}: {exc}") from None


def _alibaba_credentials() -> tuple[str, str, Optional[str]]:
    ak = os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_ID")
    secret = os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
    if not ak or not secret:
        raise UsageError("fc: set ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET "
                         "(and ALIBABA_CLOUD_SECURITY_TOKEN for STS credentials)")
    from shared.logs import register_secret

    token = os.environ.get("ALIBABA_CLOUD_SECURITY_TOKEN") or None
    register_secret(ak, secret, token)
    return ak, secret, token


def _json_result(data: bytes) -> dict:
    try:
        result = json.loads(data or b"null")
    except ValueError:
        raise InvokeError(f"the function answered something that is not JSON: {data[:200]!r}") from None
    if not isinstance(result, dict):
        raise InvokeError(f"the function answered {type(result).__name__}, not a reconcile report")
    return result


# --- the run ---------------------------------------------------------------------------------

@dataclass
class DayRow:
    invocations: int = 0
    phones: int = 0
    failed_invocations: int = 0
    counts: dict = field(default_factory=lambda: {k: 0 for k in RESULT_FIELDS + ("errors", "unreached")})
    skipped: int = 0


class Backfill:
    def __init__(self, invoker, resume: ResumeFile, run_async: bool, max_requeue: int, progress: bool, out=None):
        self.invoker = invoker
        self.resume = resume
        self.run_async = run_async
        self.max_requeue = max_requeue
        self.progress = progress
        self.out = out or sys.stdout
        self.rows: dict[str, DayRow] = {}
        self.failures: list[tuple[Invocation, str]] = []
        self.left_unreached: list[Invocation] = []

    def run(self, invocations: list[Invocation]) -> int:
        from tqdm import tqdm

        done = self.resume.done
        queue = deque(inv for inv in invocations if inv.id not in done)
        for inv in invocations:
            if inv.id in done:
                self._row(inv.day).skipped += 1
        queue.extend(self.resume.open_follow_ups())
        bar = tqdm(total=len(queue), unit="inv", disable=not self.progress, file=sys.stderr, dynamic_ncols=True)
        try:
            while queue:
                inv = queue.popleft()
                bar.set_postfix_str(inv.day)
                child = self._one(inv)
                if child is not None:
                    queue.append(child)
                    bar.total += 1
                    bar.refresh()
                bar.update(1)
        finally:
            bar.close()
        self.print_summary()
        return 0 if not self.failures and not self.left_unreached and self._errors() == 0 else 1

    def _one(self, inv: Invocation) -> Optional[Invocation]:
        row = self._row(inv.day)
        row.invocations += 1
        row.phones += inv.phones if inv.depth == 0 else 0
        try:
            result = self.invoker.invoke(json.dumps(inv.payload, ensure_ascii=False).encode("utf-8"), self.run_async)
        except InvokeError as exc:
            from shared.logs import redact

            row.failed_invocations += 1
            self.failures.append((inv, redact(str(exc))))
            return None
        child = None
        if result is not None:
            for k in RESULT_FIELDS:
                row.counts[k] += int(result.get(k) or 0)
            row.counts["errors"] += len(result.get("errors") or [])
            unreached = result.get("unreached")
            if unreached:
                child = Invocation(f"{inv.id}/r{inv.depth + 1}", inv.day, unreached,
                                   int(result.get("unreached_count") or 0))
                if inv.depth >= self.max_requeue:
                    row.counts["unreached"] += child.phones
                    self.left_unreached.append(child)
                    child = None
        self.resume.record(inv, result, child)
        return child

    def _row(self, day: str) -> DayRow:
        return self.rows.setdefault(day, DayRow())

    def _errors(self) -> int:
        return sum(r.counts["errors"] for r in self.rows.values())

    def print_summary(self) -> None:
        cols = ("day", "invocations", "skipped", "failed_inv", "phones") + RESULT_FIELDS + ("errors", "unreached")
        table = []
        for day in sorted(self.rows):
            r = self.rows[day]
            counts = ["-"] * (len(RESULT_FIELDS) + 2) if self.run_async else \
                [r.counts[k] for k in RESULT_FIELDS + ("errors", "unreached")]
            table.append([day, r.invocations, r.skipped, r.failed_invocations, r.phones] + counts)
        if table:
            total = ["total"] + [sum(row[i] for row in table) if all(isinstance(row[i], int) for row in table) else "-"
                                 for i in range(1, len(cols))]
            table.append(total)
        widths = [max(len(str(c)), *(len(str(row[i])) for row in table)) if table else len(c)
                  for i, c in enumerate(cols)]
        print(" ".join(str(c).rjust(w) for c, w in zip(cols, widths, strict=False)), file=self.out)
        for row in table:
            print(" ".join(str(c).rjust(w) for c, w in zip(row, widths, strict=False)), file=self.out)
        for inv, message in self.failures:
            print(f"FAILED {inv.id}: {message[:300]}", file=self.out)
        for inv in self.left_unreached:
            from shared.logs import redact

            print(f"UNREACHED after {self.max_requeue} re-queues: {inv.id} ({inv.phones} phone-days); event "
                  f"(phone numbers masked): {redact(json.dumps(inv.payload))[:300]}", file=self.out)
        if self.run_async:
            print("async: invocations were accepted; their results are in the function's logs", file=self.out)
        if self.resume.path is not None:
            print(f"resume file: {self.resume.path} ({len(self.resume.lines)} completed)", file=self.out)


def build_invoker(args: argparse.Namespace):
    if args.target == "local":
        return LocalInvoker(args.timeout)
    if args.target == "lambda":
        return LambdaInvoker(args.function, args.region, args.endpoint, args.qualifier, args.timeout + 30)
    if args.fc_api == "3":
        return Fc3Invoker(args.endpoint, args.region or "cn-hangzhou", args.function, args.qualifier, args.timeout + 30)
    if not args.service:
        raise UsageError("fc: the FC 2.0 API needs --service (or use --fc-api 3 for a function deployed by s.yaml)")
    endpoint = args.endpoint
    if not endpoint:
        account = args.account_id or os.environ.get("ALIBABA_CLOUD_ACCOUNT_ID")
        if not account:
            raise UsageError("fc: give --endpoint, or --account-id (or ALIBABA_CLOUD_ACCOUNT_ID) and --region")
        endpoint = f"https://{account}.{args.region or 'cn-hangzhou'}.fc.aliyuncs.com"
    return FcInvoker(endpoint, args.service, args.function, args.qualifier, args.timeout + 30)


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scripts.backfill",
                                     description="Run the reconcile function over a date range and phone list.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n")[1])
    parser.add_argument("target", nargs="?", choices=["fc", "lambda", "local"],
                        help="where the reconcile function runs")
    parser.add_argument("--local", action="store_true",
                        help="same as the target 'local': run functions.reconcile.handler in this process")
    parser.add_argument("--function", default="alicom-reconcile", help="function name (Lambda: name or ARN)")
    parser.add_argument("--service", help="FC 2.0 service name (--fc-api 2)")
    parser.add_argument("--qualifier", help="version or alias")
    parser.add_argument("--fc-api", choices=["2", "3"], default="2", help="FC API generation (see the module doc)")
    parser.add_argument("--region", help="region (FC default cn-hangzhou; Lambda default AWS_REGION)")
    parser.add_argument("--account-id", help="Alibaba Cloud account id, for the FC endpoint")
    parser.add_argument("--endpoint", help="override the invoke endpoint (tests, private endpoints)")
    dates = parser.add_argument_group("what to reconcile")
    dates.add_argument("--date-from", help="first day, YYYY-MM-DD (Beijing)")
    dates.add_argument("--date-to", help="last day, YYYY-MM-DD")
    dates.add_argument("--dates", help="comma-separated days instead of a range")
    dates.add_argument("--phones", help="comma-separated phone numbers")
    dates.add_argument("--phones-file", type=Path, help="one phone number per line (# comments), or a JSON list")
    dates.add_argument("--biz-id", help="narrow every query to one BizId")
    dates.add_argument("--chunk-size", type=int, default=200, help="phone numbers per invocation (default 200)")
    run = parser.add_argument_group("how")
    run.add_argument("--async", dest="run_async", action="store_true", help="invoke asynchronously (no results)")
    run.add_argument("--resume-file", type=Path, help="JSON lines of completed invocations (read and appended)")
    run.add_argument("--max-requeue", type=int, default=3, help="re-queue unreached targets at most this often")
    run.add_argument("--timeout", type=float, default=300.0,
                     help="the function's timeout in seconds (local: its deadline; remote: read timeout + 30)")
    run.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    args = parser.parse_args(argv)
    if args.local and args.target not in (None, "local"):
        parser.error(f"--local and the target {args.target!r} contradict each other")
    args.target = "local" if args.local else args.target
    if args.target is None:
        parser.error("name the target: fc, lambda or local (--local)")
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    try:
        days = split_dates(args.date_from, args.date_to, args.dates)
        phones = load_phones(args.phones, args.phones_file)
        invocations = plan(days, phones, args.chunk_size, args.biz_id)
        validate(invocations)
        if args.run_async and args.target == "local":
            raise UsageError("--async has no meaning for a local run")
        invoker = build_invoker(args)
    except UsageError as exc:
        print(f"backfill: {exc}", file=sys.stderr)
        return 2
    resume = ResumeFile(args.resume_file)
    runner = Backfill(invoker, resume, args.run_async, args.max_requeue, args.progress)
    try:
        return runner.run(invocations)
    except KeyboardInterrupt:
        runner.print_summary()
        print("interrupted: run the same command again to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
