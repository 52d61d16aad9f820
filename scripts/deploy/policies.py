"""Render the FC functions' RAM policies from the JSON documents beside this file.

    python -m scripts.deploy.policies --out build/ram        # values from s.yaml's vars
    python -m scripts.deploy.policies --sink tablestore --table t --out build/ram
    python -m scripts.deploy.policies --failure-queue alicom-drain-failed --out build/ram
    python -m scripts.deploy.policies --workers 4 --out build/ram   # the drain may start its own workers

Each document (`ram-<function>-<sink>.json`) grants one function exactly what it uses:
its sink's bucket+prefix or table, the Alicom API it calls, and its logstore. Values come
from s.yaml `vars` (one place to edit) and may be overridden by flags; each is checked
against a strict pattern first, so a `*` can never widen a resource and the prefix is never
empty (which would grant the whole bucket). Every action is one the code calls
(tests/test_least_privilege.py holds them to what the stand-ins see). `--failure-queue`
adds `mns:SendMessage` on that MNS queue, for s.yaml's `failureDestination`. With more than one
worker (s.yaml's `drainMaxWorkers`), the drain's role gets `fc:InvokeFunction` on the drain
function itself and nothing else, for its fan-out. Prints the aliyun CLI commands that create the
roles and attach the policies.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from string import Template
from typing import Any, Optional, Sequence

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
FUNCTIONS = ("drain", "reconcile")
SINKS = ("oss", "tablestore")
TRUST_POLICY = HERE / "fc-trust-policy.json"

# value name -> (s.yaml var, pattern). Patterns exclude '*' and '/'-tricks on purpose.
FIELDS = {
    "Region": ("region", r"[a-z]{2,}-[a-z0-9-]+"),
    "Bucket": ("bucket", r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]"),
    "Prefix": ("prefix", r"([A-Za-z0-9!_.'()=-]+/)+"),  # never empty: "" would grant bucket/*
    "Instance": ("tablestoreInstance", r"[A-Za-z][A-Za-z0-9-]{2,15}"),
    "Table": ("table", r"[A-Za-z_][A-Za-z0-9_]{0,254}"),
    "LogProject": ("logProject", r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]"),
    "LogStore": ("logStore", r"[a-z0-9][a-z0-9_-]{1,61}[a-z0-9]"),
    "FailureQueue": ("failureQueue", r"[A-Za-z0-9][A-Za-z0-9-]{0,255}"),  # optional
    "DrainFunction": ("drainFunctionName", r"[A-Za-z_][A-Za-z0-9_-]{0,63}"),  # with workers
}
DRAIN_FUNCTION = "alicom-drain"  # s.yaml's functionName for the drain
NEEDS = {
    "oss": ("Region", "Bucket", "Prefix", "LogProject", "LogStore"),
    "tablestore": ("Region", "Instance", "Table", "LogProject", "LogStore"),
}


class PolicyError(ValueError):
    pass


def document_path(function: str, sink: str) -> Path:
    return HERE / f"ram-{function}-{sink}.json"


def load_s_yaml_vars(path: Path) -> dict[str, Any]:
    import yaml  # dev dependency; only this operator tool needs it

    data = yaml.safe_load(path.read_text()) or {}
    return dict(data.get("vars") or {})


def values_from_vars(variables: dict[str, Any]) -> dict[str, str]:
    return {name: str(variables[var]) for name, (var, _) in FIELDS.items() if variables.get(var) is not None}


def render(function: str, sink: str, values: dict[str, str]) -> dict[str, Any]:
    """The policy document for one function and sink, with every placeholder checked and filled."""
    if function not in FUNCTIONS or sink not in SINKS:
        raise PolicyError(f"unknown function/sink {function}/{sink}; expected {FUNCTIONS} x {SINKS}")
    checked = {}
    for name in NEEDS[sink]:
        value = values.get(name)
        if value is None:
            raise PolicyError(f"{name} is required for sink {sink} (s.yaml var {FIELDS[name][0]})")
        if not re.fullmatch(FIELDS[name][1], value):
            raise PolicyError(f"{name}={value!r} does not match {FIELDS[name][1]}")
        checked[name] = value
    text = document_path(function, sink).read_text()
    try:
        rendered = Template(text).substitute(checked)
    except KeyError as exc:
        raise PolicyError(f"{document_path(function, sink).name} uses {exc}, "
                          f"which sink {sink} does not provide") from None
    document = json.loads(rendered)
    queue = values.get("FailureQueue")
    if queue:
        if not re.fullmatch(FIELDS["FailureQueue"][1], queue):
            raise PolicyError(f"FailureQueue={queue!r} does not match {FIELDS['FailureQueue'][1]}")
        # FC's on-failure destination sends the failed event there with the function's role.
        document["Statement"].append({"Effect": "Allow", "Action": "mns:SendMessage",
                                      "Resource": f"acs:mns:{checked['Region']}:*:/queues/{queue}/messages"})
    if function == "drain" and int(values.get("Workers") or 1) > 1:
        name = values.get("DrainFunction") or DRAIN_FUNCTION
        if not re.fullmatch(FIELDS["DrainFunction"][1], name):
            raise PolicyError(f"DrainFunction={name!r} does not match {FIELDS['DrainFunction'][1]}")
        # The fan-out invokes this function, and only this one (FC 3.0's function resource).
        document["Statement"].append({"Effect": "Allow", "Action": "fc:InvokeFunction",
                                      "Resource": f"acs:fc:{checked['Region']}:*:functions/{name}"})
    return document


def commands(roles: dict[str, str], out: Path) -> list[str]:
    lines = []
    for function, role in roles.items():
        lines += [
            f"aliyun ram CreateRole --RoleName {role} "
            f"--AssumeRolePolicyDocument \"$(cat {TRUST_POLICY.relative_to(REPO_ROOT)})\"",
            f"aliyun ram CreatePolicy --PolicyName {role} --PolicyDocument \"$(cat {out / (function + '.json')})\"",
            f"aliyun ram AttachPolicyToRole --PolicyType Custom --PolicyName {role} --RoleName {role}",
        ]
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.deploy.policies", description=__doc__.split("\n\n")[0])
    parser.add_argument("--s-yaml", type=Path, default=REPO_ROOT / "s.yaml", help="read defaults from this file's vars")
    parser.add_argument("--sink", choices=SINKS)
    parser.add_argument("--out", type=Path, default=Path("build/ram"))
    for name, (var, _) in FIELDS.items():
        parser.add_argument("--" + re.sub(r"(?<!^)([A-Z])", r"-\1", name).lower(), dest=name,
                            help=f"overrides vars.{var}")
    parser.add_argument("--workers", type=int, help="overrides vars.drainMaxWorkers (above 1: the drain may "
                                                     "invoke itself)")
    args = parser.parse_args(argv)
    variables = load_s_yaml_vars(args.s_yaml) if args.s_yaml.exists() else {}
    values = values_from_vars(variables)
    values["Workers"] = str(args.workers if args.workers is not None else variables.get("drainMaxWorkers", 1))
    values.update({k: v for k, v in vars(args).items() if k in FIELDS and v is not None})
    sink = args.sink or variables.get("sink")
    if sink not in SINKS:
        print(f"policies: error: sink must be one of {SINKS} on Function Compute, got {sink!r}", file=sys.stderr)
        return 2
    try:
        documents = {f: render(f, sink, values) for f in FUNCTIONS}
    except PolicyError as exc:
        print(f"policies: error: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for function, document in documents.items():
        (args.out / f"{function}.json").write_text(json.dumps(document, indent=2) + "\n")
    roles = {"drain": variables.get("drainRole", "alicom-drain-fc"),
             "reconcile": variables.get("reconcileRole", "alicom-reconcile-fc")}
    print(f"# wrote {args.out}/drain.json and {args.out}/reconcile.json (sink {sink}); create the roles with:")
    print("\n".join(commands(roles, args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
