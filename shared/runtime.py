"""Wiring: settings -> credentials -> token cache -> sink -> Drain, kept for the warm container.

Function containers are reused between invocations: the token cache (one token per
message type) and the sink's connections survive, so a warm run makes no token call
until the token nears expiry.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Callable, Generic, Mapping, Optional, Protocol, TypeVar

import msgspec

from shared.clock import SYSTEM_CLOCK, Clock
from shared.credentials import load_credentials
from shared.drain import Drain, DrainOptions
from shared.settings import Settings, load_settings
from shared.sinks import Sink, make_sink
from shared.tokens import Credentials, DybaseapiTokenSource, MnsToken, TokenCache

if TYPE_CHECKING:
    from shared.fan_out import FanOut
    from shared.platform import Invocation
    from shared.reconcile import Reconciler
    from shared.send_records import SendRecordClient


class _HasSink(Protocol):
    sink: Sink


R = TypeVar("R", bound=_HasSink)


class DrainRuntime(msgspec.Struct):
    settings: Settings
    credentials: Credentials
    tokens: TokenCache
    sink: Sink

    def open_queue(self, message_type: str, token: MnsToken):
        from shared.mns_queue import MnsQueue  # the MNS SDK, only where a queue is opened

        queue_name = self.settings.queue_name(message_type)
        if queue_name is None:  # the handler refuses such a type before the run begins
            raise ValueError(f"no queue name configured for {message_type}")
        return MnsQueue(self.settings.mns_endpoint, queue_name, token, timeout=self.settings.mns_timeout_seconds)

    def fan_out(self, invocation: "Invocation", logger=None) -> Optional["FanOut"]:
        """The fan-out a scheduled run may use (None with DRAIN_MAX_WORKERS=1, the default)."""
        if self.settings.max_workers <= 1:
            return None
        from shared.fan_out import INVOKE_TIMEOUT, FanOut
        from shared.invokers import make_invoker

        # Bounded like a sink write, by half the safety margin before the deadline: the run waits for
        # its invoke calls, and must still log its summary in time whatever they or the SDK import take.
        deadline = invocation.deadline.earlier(self.settings.safety_margin_seconds / 2)

        def invoker():
            timeout = max(0.2, min(INVOKE_TIMEOUT, deadline.remaining() / 2))
            return make_invoker(invocation, self.settings, self.credentials, timeout)

        return FanOut(invoker, self.settings.max_workers - 1, deadline, invocation.request_id, logger)

    def drain(self, clock: Clock = SYSTEM_CLOCK, logger=None, wait_seconds: Optional[int] = None) -> Drain:
        s = self.settings
        options = DrainOptions(
            max_messages=s.max_messages,
            wait_seconds=s.wait_seconds if wait_seconds is None else wait_seconds,
            safety_margin=s.safety_margin_seconds,
            concurrency=s.concurrency,
            mns_timeout=s.mns_timeout_seconds,
            coalesce_seconds=s.coalesce_seconds,
            backlog_seconds=s.backlog_seconds,
            runs_at_once=s.max_workers,
        )
        return Drain(self.tokens, self.open_queue, self.sink, options, clock=clock, logger=logger)


class _PerSettingsCache(Generic[R]):
    """One runtime per container, rebuilt (closing the old one's sink) when the settings change."""

    def __init__(self) -> None:
        self._entry: Optional[tuple[tuple, R]] = None

    def get(self, settings: Settings, build: Callable[[Settings], R]) -> R:
        fingerprint = tuple((k, repr(v)) for k, v in sorted(settings.as_dict().items(), key=lambda kv: kv[0]))
        with _lock:
            if self._entry is not None and self._entry[0] == fingerprint:
                return self._entry[1]
            self.reset()
            runtime = build(settings)
            self._entry = (fingerprint, runtime)
            return runtime

    def reset(self) -> None:
        with _lock:
            if self._entry is not None:
                self._entry[1].sink.close()
            self._entry = None


_lock = threading.RLock()
_drain_cache: _PerSettingsCache[DrainRuntime] = _PerSettingsCache()


def drain_runtime(environ: Optional[Mapping[str, str]] = None, clock: Clock = SYSTEM_CLOCK) -> DrainRuntime:
    """The runtime for the current environment, built once per container (rebuilt if settings change)."""

    def build(settings: Settings) -> DrainRuntime:
        credentials = load_credentials(settings)
        source = DybaseapiTokenSource(credentials, settings.token_endpoint, settings.region,
                                      settings.mns_timeout_seconds, owner_id=settings.owner_id)
        return DrainRuntime(
            settings=settings,
            credentials=credentials,
            tokens=TokenCache(source, clock, settings.token_refresh_buffer_seconds),
            sink=make_sink(settings, credentials),
        )

    return _drain_cache.get(load_settings(environ), build)


def reset_runtime() -> None:
    """Forget the cached runtime (tests, and the local demo between runs)."""
    _drain_cache.reset()


# --- reconcile ------------------------------------------------------------------------------


class ReconcileRuntime(msgspec.Struct):
    settings: Settings
    credentials: Credentials
    sink: Sink
    client: "SendRecordClient"

    def reconciler(self, clock: Clock = SYSTEM_CLOCK, logger=None) -> "Reconciler":
        from shared.reconcile import ReconcileOptions, Reconciler

        s = self.settings
        options = ReconcileOptions(
            grace_seconds=s.reconcile_grace_seconds,
            lookback_days=s.reconcile_lookback_days,
            concurrency=s.reconcile_concurrency,
            max_targets=s.reconcile_max_targets,
            safety_margin=s.reconcile_safety_margin_seconds,
        )
        return Reconciler(self.client, self.sink, options, clock=clock, logger=logger)


_reconcile_cache: _PerSettingsCache[ReconcileRuntime] = _PerSettingsCache()


def reconcile_runtime(environ: Optional[Mapping[str, str]] = None, clock: Clock = SYSTEM_CLOCK) -> ReconcileRuntime:
    """The reconcile function's runtime, built once per container like `drain_runtime`.

    The send-record client (and its rate limiter) lives as long as the container, so
    back-to-back invocations share one QPS budget. Its modules are imported here only:
    the drain never loads them.
    """
    from shared.send_records import SendRecordClient

    def build(s: Settings) -> ReconcileRuntime:
        credentials = load_credentials(s)
        client = SendRecordClient(
            credentials, s.sms_endpoint, s.region, timeout=s.reconcile_timeout_seconds, qps=s.reconcile_qps,
            max_attempts=s.reconcile_max_attempts, backoff=s.reconcile_backoff_seconds,
            backoff_max=s.reconcile_backoff_max_seconds, margin=s.reconcile_safety_margin_seconds, clock=clock,
        )
        return ReconcileRuntime(settings=s, credentials=credentials, sink=make_sink(s, credentials), client=client)

    return _reconcile_cache.get(load_settings(environ), build)


def reset_reconcile_runtime() -> None:
    """Forget the cached reconcile runtime (tests, and the local demo between runs)."""
    _reconcile_cache.reset()
