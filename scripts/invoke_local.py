"""Invoke a function's handler in this process, exactly as a platform would.

    python -m scripts.invoke_local drain --platform fc --timeout 60 --event '{"max_messages": 100}'
    python -m scripts.invoke_local reconcile --platform lambda --event-file targets.json

Settings come from the environment, as in the cloud. `--platform fc` passes the event as
bytes (wrapped in a timer envelope with `--timer`) with an FC-shaped context; `lambda`
passes a dict with a Lambda-shaped context. The handler's result is printed as JSON on
the last line of stdout; the exit code is 0 when the run reports ok.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace


class LambdaContext:
    def __init__(self, name: str, timeout: float):
        self.aws_request_id = f"local-{uuid.uuid4()}"
        self.function_name = name
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:000000000000:function:{name}"
        self._end = time.monotonic() + timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._end - time.monotonic()) * 1000))


def fc_context(name: str, timeout: float, handler: str = "") -> SimpleNamespace:
    return SimpleNamespace(request_id=f"local-{uuid.uuid4()}", credentials=None,
                           function=SimpleNamespace(name=name, handler=handler, timeout=timeout))


def build_call(function: str, platform: str, timeout: float, event: dict, timer: bool, name: str = ""):
    """The event and context a platform would give function `name` (default: alicom-<function>,
    the name s.yaml deploys it under; a fan-out invokes the function by it)."""
    name = name or f"alicom-{function}"
    if platform == "fc":
        if timer:
            event = {"triggerTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "triggerName": f"{function}-timer", "payload": json.dumps(event) if event else ""}
        return json.dumps(event).encode("utf-8"), fc_context(name, timeout, f"{function}_handler.handler")
    if timer:
        event = dict(event, _trigger="schedule")
    return event, LambdaContext(name, timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Invoke functions.<name>.handler locally.")
    parser.add_argument("function", choices=["drain", "reconcile"])
    parser.add_argument("--platform", choices=["fc", "lambda"], default="fc")
    parser.add_argument("--timeout", type=float, default=60.0, help="the function's timeout in seconds")
    parser.add_argument("--event", default="{}", help="JSON event (manual invoke payload)")
    parser.add_argument("--event-file", type=Path)
    parser.add_argument("--timer", action="store_true", help="deliver the event as a timer trigger would")
    parser.add_argument("--name", default="", help="the function's name in its context (default alicom-<function>)")
    args = parser.parse_args(argv)
    event = json.loads(args.event_file.read_text() if args.event_file else args.event)
    handler = importlib.import_module(f"functions.{args.function}").handler
    payload, context = build_call(args.function, args.platform, args.timeout, event, args.timer, args.name)
    from shared.platform import RunFailed

    try:
        result = handler(payload, context)
    except RunFailed as failed:
        result = failed.summary
    sys.stdout.flush()
    print(json.dumps(result, ensure_ascii=False, default=str))
    return 0 if result.get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
