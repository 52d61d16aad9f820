"""The Log Service queries we ship (scripts/deploy/sls-alerts.yml, README's dashboard) against
the exact lines the functions print on Function Compute.

A real drain runs as FC runs it (bytes event, FC context) against the emulator: one run that
stores receipts and dead-letters the bad ones, then one whose sink refuses. Its stdout is
what FC sends to the logstore, one entry per line (s.yaml: logBeginRule None). Each query is
then evaluated over those entries by a small evaluator of the SLS subset the queries use
(full-text terms before `|`; SELECT of count/sum/max/min/avg over json_extract_scalar of
`message`, WHERE equalities, GROUP BY), and its result is checked against the run's known
counts, written literally.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from functions.drain import handler
from scripts.deploy.sls_alerts import load_alerts, render
from scripts.receipts import BAD_BODIES, make_receipts
from shared.platform import RunFailed
from tests.contexts import fc_context

README = Path(__file__).resolve().parents[1] / "README.md"
# SLS's default token delimiters: `_` is not one, so alicom_drain_run and alicom_drain_run_total differ.
DELIMITERS = re.compile(r"[\s,'\";=()\[\]{}?@&<>/:]+")
FIELD = r"json_extract_scalar\(message, '\$\.([a-z_]+)'\)"


def tokens(message: str) -> set[str]:
    return {t for t in DELIMITERS.split(message) if t}


def sls_query(query: str, entries: list[str]) -> list[dict[str, Any]]:
    """Evaluate one query of the shapes we ship; anything else is an error, not a guess."""
    search, _, sql = query.partition("|")
    terms = [t.strip() for t in re.split(r"\band\b", search.strip())]
    terms = [re.sub(r"^message:\s*", "", t) for t in terms if t and t != "*"]
    rows = [e for e in entries if all(t in tokens(e) for t in terms)]
    sql = " ".join(sql.split())
    match = re.fullmatch(r"SELECT (.+?)(?: WHERE (.+?))?(?: GROUP BY (.+?))?(?: ORDER BY .+?)?(?: LIMIT \d+)?", sql)
    assert match, f"query shape not understood: {sql}"
    select, where, group = match.groups()
    for condition in (where or "").split(" AND ") if where else []:
        field, value = re.fullmatch(FIELD + r" = '([^']*)'", condition.strip()).groups()
        rows = [e for e in rows if str(json.loads(e).get(field)) == value]
    columns = [c.strip() for c in re.split(r",\s*(?![^()]*\))", select)]
    keys = [g.strip() for g in group.split(",")] if group else []
    groups: dict[tuple, list[dict]] = {}
    for entry in rows:
        data = json.loads(entry)
        key = []
        for name in keys:
            expr = next(c for c in columns if c.endswith(f" AS {name}"))
            field = re.search(FIELD, expr)
            key.append("minute" if "__time__" in expr else data.get(field.group(1)) if field else None)
        groups.setdefault(tuple(key), []).append(data)
    if not keys:
        groups.setdefault((), [])  # an aggregate over nothing is one row (count 0, sum null)
    out = []
    for grouped in groups.values():
        row = {}
        for column in columns:
            expr, name = re.fullmatch(r"(.+) AS ([a-z_]+)", column).groups()
            if expr == "count(*)":
                row[name] = len(grouped)
            elif agg := re.fullmatch(r"(sum|max|min|avg)\(cast\(" + FIELD + r" AS (bigint|double)\)\)", expr):
                fn, field, kind = agg.groups()
                values = [(int if kind == "bigint" else float)(d[field]) for d in grouped if d.get(field) is not None]
                row[name] = None if not values else {"sum": sum, "max": max, "min": min,
                                                     "avg": lambda v: sum(v) / len(v)}[fn](values)
            elif "__time__" in expr or re.fullmatch(FIELD, expr):
                continue  # a group key
            else:
                raise AssertionError(f"column not understood: {column}")
        out.append(row)
    return out


def fires(condition: str, row: dict[str, Any]) -> bool:
    name, op, limit = re.fullmatch(r"([a-z_]+) ([<>]=?) ([0-9.]+)", condition).groups()
    value = row.get(name)
    value = 0 if value is None else value
    return {"<": value < float(limit), ">": value > float(limit), "<=": value <= float(limit),
            ">=": value >= float(limit)}[op]


@pytest.fixture
def fc_lines(emulator, drain_env, tmp_path, capsys, monkeypatch):
    """What a good run and a failed run print on FC, one logstore entry per line."""
    drain_env(ALICOM_MESSAGE_TYPES="SmsReport,SmsUp", POWERTOOLS_LOG_LEVEL="INFO")
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    for mtype in ("SmsReport", "SmsUp"):
        for body in make_receipts(mtype, 20, seed=3):
            emulator.enqueue_receipt(emulator.queue_name(mtype), body)
    for raw in BAD_BODIES:
        emulator.enqueue(emulator.queue_name("SmsReport"), raw)
    timer = json.dumps({"triggerTime": "2026-11-25T02:00:00Z", "triggerName": "drain-timer", "payload": "{}"}).encode()
    capsys.readouterr()
    handler(timer, fc_context(timeout=30))
    good = capsys.readouterr().out
    blocked = tmp_path / "blocked"  # each type's partition is a file: every write fails
    blocked.mkdir()
    for mtype in ("SmsReport", "SmsUp"):
        (blocked / f"type={mtype}").write_text("not a directory")
    drain_env(SINK_PATH=str(blocked))
    emulator.enqueue_receipt(emulator.queue_name("SmsUp"), make_receipts("SmsUp", 1, seed=9)[0])
    with pytest.raises(RunFailed):
        handler(timer, fc_context(timeout=30))
    failed = capsys.readouterr().out
    return good.splitlines(), failed.splitlines()


def test_every_line_is_one_whole_json_entry(fc_lines):
    lines = fc_lines[0] + fc_lines[1]
    assert len(lines) >= 6
    for line in lines:
        assert line.startswith("{") and isinstance(json.loads(line), dict), line[:200]
    # Why logBeginRule must be None: DefaultRegex starts an entry only at a line beginning with a
    # date, so every one of these lines would be glued into the first (not JSON any more).
    assert not any(re.match(r"\d{4}-\d{2}-\d{2}", line) for line in lines)


def test_alert_queries_count_what_the_runs_did(fc_lines):
    good, failed = fc_lines
    alerts = {a["name"]: a for a in load_alerts()}
    assert set(alerts) == {"alicom-drain-heartbeat", "alicom-drain-failed-runs", "alicom-drain-dead-letters",
                           "alicom-drain-queue-lag"}

    def run(name: str, entries: list[str]) -> dict:
        (row,) = sls_query(alerts[name]["query"], entries)
        return row

    heartbeat = alerts["alicom-drain-heartbeat"]
    assert run("alicom-drain-heartbeat", good + failed) == {"ok_runs": 1}
    assert not fires(heartbeat["condition"], run("alicom-drain-heartbeat", good + failed))
    assert fires(heartbeat["condition"], run("alicom-drain-heartbeat", failed))  # only failures: no heartbeat
    assert fires(heartbeat["condition"], run("alicom-drain-heartbeat", [])) and heartbeat["no_data_fire"]
    assert run("alicom-drain-failed-runs", good + failed) == {"failed": 1}
    assert run("alicom-drain-failed-runs", good) == {"failed": 0}
    assert run("alicom-drain-dead-letters", good) == {"dead": len(BAD_BODIES)} and len(BAD_BODIES) == 5
    lag = run("alicom-drain-queue-lag", good)["lag"]
    assert isinstance(lag, float) and 0 <= lag < 60 and not fires(alerts["alicom-drain-queue-lag"]["condition"], {"lag": lag})
    assert fires(alerts["alicom-drain-queue-lag"]["condition"], {"lag": 601.0})
    for alert in alerts.values():
        body = render(alert, "p", "s", "cn-hangzhou")
        assert body["configuration"]["queryList"][0]["query"] == alert["query"]
        assert body["configuration"]["noDataFire"] is alert["no_data_fire"]


def readme_dashboard_queries() -> list[str]:
    text = README.read_text()
    section = text[text.index("#### Log Service dashboard queries (FC)"):text.index("### Alarms")]
    return re.findall(r"```sql\n(.+?)```", section, re.S)


def test_readme_dashboard_queries_chart_what_the_runs_did(fc_lines):
    good, failed = fc_lines
    per_minute, lag, runs = readme_dashboard_queries()
    assert sls_query(per_minute, good + failed) == [{"received": 46, "stored": 40, "dead_lettered": 5,  # 45 + 1 refused
                                                     "delete_failures": 0}]
    by_type = sls_query(lag, good)
    # SmsReport and SmsUp, one row each (a list: the two lags may be equal to the millisecond).
    assert len(by_type) == 2 and all(set(r) == {"lag_seconds"} for r in by_type), by_type
    (row,) = sls_query(runs, good + failed)
    assert row["runs"] == 2 and row["failed_runs"] == 1 and row["avg_seconds"] > 0 and row["min_time_left"] > 0
