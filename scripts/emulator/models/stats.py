"""Request counts per API action, faulted or not."""
from __future__ import annotations

import threading
from collections import Counter

MNS_ACTIONS = ("BatchReceiveMessage", "ReceiveMessage", "BatchDeleteMessage", "DeleteMessage",
               "ChangeMessageVisibility", "PeekMessage", "BatchPeekMessage")
RPC_ACTIONS = ("QueryTokenForMnsQueue", "QuerySendDetails")
FUNCTION_ACTIONS = ("FcInvokeFunction", "Fc3InvokeFunction", "LambdaInvoke")


class RequestStats:
    """Counts every non-admin request by action, faulted or not."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: Counter = Counter()

    def count(self, action: str, service: str) -> None:
        with self._lock:
            self._counts[action] += 1
            self._counts[f"{service}_total"] += 1
            self._counts["total"] += 1

    def count_fault(self, kind: str) -> None:
        with self._lock:
            self._counts[f"fault_{kind}"] += 1

    def snapshot(self) -> dict:
        base = {k: 0 for k in MNS_ACTIONS + RPC_ACTIONS + FUNCTION_ACTIONS}
        base.update({"mns_total": 0, "rpc_total": 0, "fc_total": 0, "lambda_total": 0, "total": 0})
        with self._lock:
            base.update(self._counts)
        return base

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()

