"""Render scripts/deploy/sls-alerts.yml as Log Service Alert 2.0 `CreateAlert` bodies.

    python -m scripts.deploy.sls_alerts --out build/sls      # project/logstore/region from s.yaml vars

One JSON file per alert, for `aliyun sls CreateAlert --project <project> --body "$(cat FILE)"`
or the console's JSON editor. Notification (the action policy) is the account's own: pass
`--action-policy` with its id, or set it in the console after creating the alert.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from scripts.deploy.policies import REPO_ROOT, load_s_yaml_vars

ALERTS = Path(__file__).resolve().parent / "sls-alerts.yml"
SEVERITY = {"critical": 10, "high": 8, "medium": 6, "low": 4, "report": 2}


def load_alerts(path: Path = ALERTS) -> list[dict[str, Any]]:
    import yaml  # dev dependency; only operator tools and tests read this file

    return yaml.safe_load(path.read_text())["alerts"]


def render(alert: dict[str, Any], project: str, logstore: str, region: str, action_policy: str = "") -> dict[str, Any]:
    """One Alert 2.0 definition: the query over the window, the condition, the schedule."""
    return {
        "name": alert["name"],
        "displayName": alert["title"],
        "description": alert["description"],
        "schedule": {"type": "FixedRate", "interval": alert["interval"]},
        "configuration": {
            "version": "2.0",
            "type": "default",
            "dashboard": "internal-alert-analysis",
            "queryList": [{"storeType": "log", "region": region, "project": project, "store": logstore,
                           "query": alert["query"], "timeSpanType": "Relative",
                           "start": f"-{alert['window']}", "end": "now", "powerSqlMode": "auto"}],
            "groupConfiguration": {"type": "no_group"},
            "conditionConfiguration": {"condition": alert["condition"], "countCondition": ""},
            "severityConfigurations": [{"severity": SEVERITY[alert["severity"]],
                                        "evalCondition": {"condition": alert["condition"], "countCondition": ""}}],
            "noDataFire": bool(alert["no_data_fire"]),
            "noDataSeverity": SEVERITY[alert["severity"]],
            "sendResolved": True,
            "threshold": 1,
            "policyConfiguration": {"alertPolicyId": "sls.builtin.dynamic", "actionPolicyId": action_policy,
                                    "repeatInterval": "1h"},
        },
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.deploy.sls_alerts", description=__doc__.split("\n\n")[0])
    parser.add_argument("--s-yaml", type=Path, default=REPO_ROOT / "s.yaml")
    parser.add_argument("--out", type=Path, default=Path("build/sls"))
    parser.add_argument("--action-policy", default="", help="the SLS action policy id that notifies you")
    args = parser.parse_args(argv)
    variables = load_s_yaml_vars(args.s_yaml)
    args.out.mkdir(parents=True, exist_ok=True)
    for alert in load_alerts():
        body = render(alert, variables["logProject"], variables["logStore"], variables["region"], args.action_policy)
        (args.out / f"{alert['name']}.json").write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n")
        print(f"aliyun sls CreateAlert --project {variables['logProject']} "
              f"--body \"$(cat {args.out / alert['name']}.json)\"")
    return 0


if __name__ == "__main__":
    sys.exit(main())
