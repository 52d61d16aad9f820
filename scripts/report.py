"""Delivery report over stored receipts: a terminal table, JSON, or a self-contained HTML page.

    python -m scripts.report --from 2026-11-25 --to 2026-11-26             # the sink of SINK=... (env)
    python -m scripts.report --sink file --path demo-output/receipts --html report.html
    python -m scripts.report --sink sqlite --path receipts.db --json

The figures, and what each one counts, come from shared/delivery_report.py; this tool picks
the sink (--sink/--path, or the SINK settings in the environment, as the functions do), shows
progress on cloud sinks and renders. The sink is read for the dates asked only: object sinks
list only those days' partitions, SQLite reads them through its date index.

Operator/dev tool: needs matplotlib (HTML charts) and tqdm (progress on cloud sinks),
which the function packages do not ship.
"""
from __future__ import annotations

import argparse
import base64
import html
import io
import json
import os
import re
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Union

from shared.delivery_report import PERCENTILES, as_date, report_from_sink
from shared.records import Record
from shared.sinks import Sink, SinkError, sink_names

CLOUD_SINKS = ("s3", "oss", "dynamodb", "tablestore")


# ==========================================================================================
# The sink
# ==========================================================================================

def open_sink(sink_name: Optional[str], path: Optional[str],
              environ: Optional[dict[str, str]] = None) -> tuple[Sink, str]:
    """(sink, label) from --sink/--path, or from the sink settings in the environment."""
    if sink_name == "sqlite" and path:
        from shared.sinks.sqlite import SqliteSink

        if not Path(path).is_file():
            raise FileNotFoundError(f"no SQLite database at {path}")
        return SqliteSink(path, read_only=True), f"sqlite {path}"
    if sink_name == "file" and path:
        from shared.sinks.file import FileSink

        if not Path(path).is_dir():
            raise FileNotFoundError(f"no file sink directory at {path}")
        return FileSink(path), f"file {path}"
    from shared.settings import load_settings
    from shared.sinks import make_sink

    env = dict(os.environ if environ is None else environ)
    if sink_name:
        env["SINK"] = sink_name
    if path:
        env["SINK_PATH"] = path
    # The report reads the sink only: queue names are irrelevant but the loader wants one source of them.
    if not env.get("ALICOM_UID") and not env.get("ALICOM_QUEUE_NAMES"):
        env["ALICOM_UID"] = "0"
    settings = load_settings(env)
    label = f"{settings.sink} {settings.sink_bucket or settings.sink_table or settings.sink_path}"
    return make_sink(settings), label


def progress_bar(sink: Sink) -> Callable[[Iterator[Record]], Iterable[Record]]:
    """A progress bar on stderr for a cloud sink's (slow) read; nothing for a local one."""
    if sink.name not in CLOUD_SINKS:
        return iter
    from tqdm import tqdm

    return lambda records: tqdm(records, desc=f"reading {sink.name}", unit=" records", file=sys.stderr, mininterval=0.5)


# ==========================================================================================
# Output: terminal, JSON, HTML
# ==========================================================================================

def _pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        cells_of_row = enumerate(zip(row, widths, strict=False))
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in cells_of_row))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_text(report: dict[str, Any]) -> str:
    out = [f"{report['title']}: {report['date_from']} .. {report['date_to']} (Beijing dates)"]
    if report["empty"]:
        out.append(report["note"])
        out.append(f"({report['records_read']} records read, {report['records_outside_range']} outside the range)")
        return "\n".join(out) + "\n"
    s, lat = report["sms"], report["latency_seconds"]
    out.append(f"sends {s['sends']}  delivered {s['delivered']}  failed {s['failed']}  unknown {s['unknown']}  "
               f"delivery rate {_pct(s['delivery_rate'])}  (receipts {s['from_receipts']}, "
               f"send records {s['from_send_records']}; duplicates skipped {report['duplicates_skipped']})")
    out.append(f"latency send->report: p50 {lat['p50']}s  p90 {lat['p90']}s  p99 {lat['p99']}s  "
               f"(n={lat['count']}, max {lat['max']}s)")
    out.append("\nPer day")
    out.append(_table(["date", "sends", "delivered", "failed", "unknown", "rate", "replies"],
                      [[d["date"], d["sends"], d["delivered"], d["failed"], d["unknown"], _pct(d["delivery_rate"]),
                        d["replies"]] for d in report["per_day"]]))
    out.append("\nPer sign / template")
    out.append(_table(["sign", "template", "sends", "delivered", "failed", "unknown", "rate"],
                      [[t["sign_name"], t["template_code"], t["sends"], t["delivered"], t["failed"], t["unknown"],
                        _pct(t["delivery_rate"])] for t in report["per_template"]]))
    out.append("\nPer error code")
    out.append(_table(["err_code", "sends", "delivered", "failed", "unknown", "share"],
                      [[e["err_code"], e["sends"], e["delivered"], e["failed"], e["unknown"], _pct(e["share"])]
                       for e in report["per_err_code"]]))
    if report["top_errors"]:
        out.append("\nTop error codes (failed sends)")
        out.append(_table(["err_code", "count"], [[e["err_code"], e["count"]] for e in report["top_errors"]]))
    out.append(f"\nSmsUp replies: {report['sms_up']['replies']}")
    quality = report["data_quality"]
    for title, key in (("Status unknown because", "unknown_status"), ("Latency unknown because", "unknown_latency"),
                       ("Records without a usable event_time", "unplaced_records")):
        if quality[key]:
            out.append(f"\n{title}")
            out.append(_table(["reason", "records"], [[k, v] for k, v in quality[key].items()]))
    return "\n".join(out) + "\n"


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def charts(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(title, PNG data URI) for each chart the data supports."""
    if report["empty"]:
        return []
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    out = []
    days = report["per_day"]
    labels = [d["date"][5:] for d in days]
    x = range(len(days))
    fig, ax = plt.subplots(figsize=(9, 3.6))
    delivered = [d["delivered"] for d in days]
    failed = [d["failed"] for d in days]
    unknown = [d["unknown"] for d in days]
    ax.bar(x, delivered, color="#2e7d32", label="delivered")
    ax.bar(x, failed, bottom=delivered, color="#c62828", label="failed")
    ax.bar(x, unknown, bottom=[a + b for a, b in zip(delivered, failed, strict=False)], color="#9e9e9e",
           label="unknown")
    ax.set_xlim(-0.5 - max(0, 4 - len(days)) / 2, len(days) - 0.5 + max(0, 4 - len(days)) / 2)
    ax.set_ylabel("sends")
    ax.set_xticks(list(x), labels, rotation=45 if len(days) > 10 else 0, ha="right" if len(days) > 10 else "center")
    rate_axis = ax.twinx()
    rate_axis.plot(list(x), [None if d["delivery_rate"] is None else d["delivery_rate"] * 100 for d in days],
                   color="#1565c0", marker="o", label="delivery rate")
    rate_axis.set_ylim(0, 105)
    rate_axis.set_ylabel("delivery rate %")
    handles = ax.get_legend_handles_labels()[0] + rate_axis.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], loc="upper center",
              bbox_to_anchor=(0.5, -0.14 if len(days) <= 10 else -0.24), fontsize=8, ncol=4, frameon=False)
    ax.set_title("Sends per day and delivery rate")
    out.append(("Sends per day", _png(fig)))

    lat = report["latency_seconds"]
    if lat["count"]:
        fig, ax = plt.subplots(figsize=(9, 3.2))
        values = [v for v, _ in lat["histogram"]]
        counts = [n for _, n in lat["histogram"]]
        ax.bar(values, counts, width=0.9 if len(values) < 200 else 1.0, color="#5c6bc0")
        for p, style in zip(PERCENTILES, ("--", "-.", ":"), strict=False):
            ax.axvline(lat[f"p{p}"], color="#d84315", linestyle=style, label=f"p{p} = {lat[f'p{p}']} s")
        ax.set_xlabel("seconds from send_time to report_time")
        ax.set_ylabel("receipts")
        ax.legend(fontsize=8)
        ax.set_title("Delivery latency")
        out.append(("Delivery latency", _png(fig)))

    if report["top_errors"]:
        top = list(reversed(report["top_errors"]))
        fig, ax = plt.subplots(figsize=(9, 0.5 + 0.35 * len(top)))
        ax.barh([e["err_code"] for e in top], [e["count"] for e in top], color="#c62828")
        ax.set_xlabel("failed sends")
        ax.set_title("Top error codes")
        out.append(("Top error codes", _png(fig)))

    if report["sms_up"]["replies"]:
        fig, ax = plt.subplots(figsize=(9, 2.8))
        ax.bar(list(x), [d["replies"] for d in report["sms_up"]["per_day"]], color="#00897b")
        ax.set_xlim(-0.5 - max(0, 4 - len(days)) / 2, len(days) - 0.5 + max(0, 4 - len(days)) / 2)
        ax.set_xticks(list(x), labels, rotation=45 if len(days) > 10 else 0, ha="right" if len(days) > 10 else "center")
        ax.set_ylabel("replies")
        ax.set_title("SmsUp replies per day")
        out.append(("SmsUp replies per day", _png(fig)))
    return out


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Liberation Sans",sans-serif;margin:24px auto;
max-width:1080px;color:#212121;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#616161;font-size:13px}.cards{display:flex;flex-wrap:wrap;gap:10px;margin:16px 0}
.card{border:1px solid #e0e0e0;border-radius:6px;padding:10px 14px;min-width:110px}
.card b{display:block;font-size:20px}.card span{font-size:12px;color:#616161}
.empty{background:#fff8e1;border:1px solid #ffe082;padding:14px;border-radius:6px;font-size:15px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{padding:4px 10px;border-bottom:1px solid #eee;text-align:left}
th.n,td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#fafafa}
img{max-width:100%;display:block;margin:10px 0}.ok{color:#2e7d32}.bad{color:#c62828}
"""

# Marks the page once every chart image has decoded (the rendering test reads it back).
_SCRIPT = """
window.addEventListener("load", function () {
  var images = document.images, decoded = 0;
  for (var i = 0; i < images.length; i++) { if (images[i].complete && images[i].naturalWidth > 0) decoded++; }
  document.body.setAttribute("data-charts", decoded + "/" + images.length);
});
"""


def _numeric(value: Any) -> bool:
    return value is None or isinstance(value, (int, float)) or bool(re.fullmatch(r"-?[\d.]+%?|-", str(value)))


def _html_table(headers: list[str], rows: list[list[Any]]) -> str:
    """Numbers right-aligned, text left-aligned (a column follows its first row)."""
    numeric = [all(_numeric(row[i]) for row in rows) and bool(rows) for i in range(len(headers))]
    cls = [" class=n" if n else "" for n in numeric]
    head = "".join(f"<th{c}>{html.escape(h)}</th>" for h, c in zip(headers, cls, strict=False))
    body = "".join("<tr>" + "".join(f"<td{c}>{html.escape('-' if v is None else str(v))}</td>"
                                    for v, c in zip(row, cls, strict=False))
                   + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: dict[str, Any]) -> str:
    esc = html.escape
    parts = [f"<h1>{esc(report['title'])}</h1>",
             f"<div class=sub>{esc(report['date_from'])} to {esc(report['date_to'])} (Beijing dates) · "
             f"generated {esc(report['generated_at'])} · {report['records_read']} records read, "
             f"{report['records_in_range']} in range, {report['duplicates_skipped']} duplicates skipped</div>"]
    if report["empty"]:
        parts.append(f"<p class=empty id=empty>{esc(report['note'])}</p>")
    else:
        s, lat = report["sms"], report["latency_seconds"]
        cards = [("sends", s["sends"]), ("delivered", s["delivered"]), ("failed", s["failed"]),
                 ("unknown", s["unknown"]), ("delivery rate", _pct(s["delivery_rate"])),
                 ("latency p50", "-" if lat["p50"] is None else f"{lat['p50']} s"),
                 ("latency p90", "-" if lat["p90"] is None else f"{lat['p90']} s"),
                 ("latency p99", "-" if lat["p99"] is None else f"{lat['p99']} s"),
                 ("SmsUp replies", report["sms_up"]["replies"])]
        parts.append("<div class=cards id=summary>" + "".join(
            f"<div class=card><b>{esc(str(v))}</b><span>{esc(k)}</span></div>" for k, v in cards) + "</div>")
        parts.append(f"<div class=sub>{s['from_receipts']} from receipts, {s['from_send_records']} from reconciled "
                     f"send records. Latency: {esc(lat['method'])}, n={lat['count']}.</div>")
        for title, uri in charts(report):
            parts.append(f"<h2>{esc(title)}</h2><img alt=\"{esc(title)}\" src=\"{uri}\">")
        parts.append("<h2>Per day</h2>" + _html_table(
            ["date", "sends", "delivered", "failed", "unknown", "delivery rate", "SmsUp replies"],
            [[d["date"], d["sends"], d["delivered"], d["failed"], d["unknown"], _pct(d["delivery_rate"]), d["replies"]]
             for d in report["per_day"]]))
        parts.append("<h2>Per sign / template</h2>" + _html_table(
            ["sign", "template", "sends", "delivered", "failed", "unknown", "delivery rate"],
            [[t["sign_name"], t["template_code"], t["sends"], t["delivered"], t["failed"], t["unknown"],
              _pct(t["delivery_rate"])] for t in report["per_template"]]))
        parts.append("<h2>Per carrier error code</h2>" + _html_table(
            ["err_code", "sends", "delivered", "failed", "unknown", "share of sends"],
            [[e["err_code"], e["sends"], e["delivered"], e["failed"], e["unknown"], _pct(e["share"])]
             for e in report["per_err_code"]]))
        if report["top_errors"]:
            parts.append("<h2>Top error codes</h2>" + _html_table(
                ["err_code", "failed sends"], [[e["err_code"], e["count"]] for e in report["top_errors"]]))
        if report["other_types"]:
            parts.append("<h2>Other message types in range</h2>" + _html_table(
                ["type", "records"], [[k, v] for k, v in report["other_types"].items()]))
    quality = report["data_quality"]
    rows = [[what, reason, n] for what, key in (("status", "unknown_status"), ("latency", "unknown_latency"),
                                                ("event_time", "unplaced_records"))
            for reason, n in quality[key].items()]
    parts.append("<h2>Data quality</h2>" + (_html_table(["unknown", "because", "records"], rows) if rows
                                            else "<p class=ok>Every record had the fields the report needs.</p>"))
    return ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content=\"width=device-width,initial-scale=1\"><title>{esc(report['title'])} "
            f"{esc(report['date_from'])}..{esc(report['date_to'])}</title><style>{_CSS}</style></head>"
            f"<body>{''.join(parts)}<script>{_SCRIPT}</script></body></html>")


def write_html(report: dict[str, Any], path: Union[str, os.PathLike]) -> Path:
    """Write the self-contained page (charts embedded as data URIs); returns its path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_html(report), encoding="utf-8")
    return target


# ==========================================================================================
# Command line
# ==========================================================================================

def main(argv: Optional[list[str]] = None) -> int:
    from shared.send_records import beijing_today

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="date_from", help="first Beijing date, YYYY-MM-DD (default: 6 days before --to)")
    parser.add_argument("--to", dest="date_to", help="last Beijing date, YYYY-MM-DD (default: today in Beijing)")
    parser.add_argument("--sink", choices=list(sink_names()),
                        help="read this sink (default: SINK from the environment, as the functions do)")
    parser.add_argument("--path", help="file sink directory or SQLite file (with --sink file|sqlite)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of tables")
    parser.add_argument("--html", type=Path, help="also write a self-contained HTML page with charts here")
    args = parser.parse_args(argv)
    try:
        date_to = as_date(args.date_to) if args.date_to else beijing_today()
        date_from = as_date(args.date_from) if args.date_from else date_to - timedelta(days=6)
        if date_to < date_from:
            raise ValueError(f"--to {date_to} is before --from {date_from}")
        sink, label = open_sink(args.sink, args.path)
        with sink:
            report = report_from_sink(sink, date_from, date_to, progress=progress_bar(sink))
    except (ValueError, FileNotFoundError) as exc:  # SettingsError is a ValueError
        print(f"report: {exc}", file=sys.stderr)
        return 2
    except SinkError as exc:  # the store refused or failed the read (its reason, never a secret)
        print(f"report: {exc}", file=sys.stderr)
        return 1
    report["source"] = label
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        sys.stdout.write(format_text(report))
    sys.stdout.flush()
    if args.html:
        print(f"HTML report: {write_html(report, args.html)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
