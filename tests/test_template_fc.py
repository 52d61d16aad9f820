"""s.yaml (Serverless Devs fc3) is valid: its props pass the fc3 schema, its code is where the
packager puts it, its deploy builds the package for the chosen sink first, its logs and
failures go somewhere; and the RAM policies of the FC roles (scripts/deploy/) grant each
function only its resources.

Offline: the fc3 props schema is tests/data/fc3-props.schema.json (devsapp/fc3's src/schema.json, MIT).
"""
from __future__ import annotations

import json
import sys
import warnings

import pytest

from tests.templates_tooling import (
    REPO,
    SAM_FUNCTIONS,
    as_list,
    load_s_yaml,
    load_sam,
    normalise_fc_schedule,
    resolve_s,
    s_resources,
)

FC3_SCHEMA = REPO / "tests" / "data" / "fc3-props.schema.json"
FC3_RUNTIMES = {"python3.10", "python3.12"}


# ======================================================================================
# Serverless Devs (fc3)
# ======================================================================================

def test_s_yaml_props_validate_against_fc3_schema():
    resources = s_resources()
    assert load_s_yaml()["edition"] == "3.0.0"
    assert {r["component"] for r in load_s_yaml()["resources"].values()} == {"fc3"}
    if FC3_SCHEMA.exists():
        import jsonschema

        schema = json.loads(FC3_SCHEMA.read_text())
        validator = jsonschema.Draft7Validator(schema)
        for name, props in resources.items():
            errors = sorted(validator.iter_errors(props), key=lambda e: list(e.path))
            assert not errors, f"{name}: " + "; ".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)
    else:
        message = (f"{FC3_SCHEMA} is absent: s.yaml props NOT validated against the fc3 schema; "
                   "running the structural check only")
        print(f"WARNING: {message}", file=sys.stderr)
        warnings.warn(message)  # shown in pytest's warnings summary too
    # Structural check of the fields we use (runs with or without the schema).
    for name, props in resources.items():
        for key in ("region", "functionName", "runtime", "code", "handler", "role", "timeout",
                    "memorySize", "environmentVariables", "logConfig", "triggers"):
            assert key in props, f"{name}: {key} missing"
        assert props["runtime"] in FC3_RUNTIMES
        assert 1 <= props["timeout"] <= 86400 and props["memorySize"] % 64 == 0
        assert all(isinstance(v, str) for v in props["environmentVariables"].values())
        assert {"project", "logstore"} <= set(props["logConfig"])
        assert props["role"].startswith("acs:ram::") and ":role/" in props["role"]
        assert props["concurrencyConfig"]["reservedConcurrency"] >= 1
        (trigger,) = props["triggers"]
        assert trigger["triggerType"] == "timer" and trigger["triggerName"]
        config = trigger["triggerConfig"]
        assert set(config) <= {"cronExpression", "enable", "payload"}
        assert isinstance(config["cronExpression"], str) and isinstance(config["enable"], bool)
        assert isinstance(config["payload"], str)
        normalise_fc_schedule(config["cronExpression"])


def test_fc_code_layout_matches_the_packager():
    from scripts.package import TARGETS

    for name, props in s_resources().items():
        assert props["code"] == "./build/fc", name
        deps = TARGETS["fc"].deps_subdir
        assert props["environmentVariables"]["PYTHONPATH"] == (f"/code/{deps}" if deps else "/code"), name
    # sam build: the checkout is the code, built per function by scripts/Makefile (scripts/package.py).
    template = load_sam()
    assert template["Globals"]["Function"]["CodeUri"] == "."
    for function in SAM_FUNCTIONS.values():
        assert template["Resources"][function]["Metadata"] == {"BuildMethod": "makefile", "ContextPath": "scripts"}
    assert (REPO / "scripts" / "Makefile").is_file()
    assert TARGETS["aws"].deps_subdir == ""


# ======================================================================================
# RAM policies for the FC roles (scripts/deploy/)
# ======================================================================================

def test_ram_policies_grant_each_function_only_its_resources():
    from scripts.deploy import policies

    variables = load_s_yaml()["vars"]
    values = policies.values_from_vars(variables)
    for sink in policies.SINKS:
        for function in policies.FUNCTIONS:
            document = policies.render(function, sink, values)
            assert document["Version"] == "1"
            actions = {a for s in document["Statement"] for a in as_list(s["Action"])}
            for statement in document["Statement"]:
                statement_actions = as_list(statement["Action"])
                assert statement["Effect"] == "Allow" and all("*" not in a for a in statement_actions)
                for resource in as_list(statement["Resource"]):
                    if resource == "*":
                        # Only APIs without resource-level authorisation get "*".
                        assert set(statement_actions) <= {"dybaseapi:QueryTokenForMnsQueue", "dysms:QuerySendDetails"}
                    elif resource.startswith("acs:oss:"):
                        assert resource in (f"acs:oss:*:*:{variables['bucket']}/{variables['prefix']}*",
                                            f"acs:oss:*:*:{variables['bucket']}")
                    elif resource.startswith("acs:ots:"):
                        assert resource == (f"acs:ots:{variables['region']}:*:instance/"
                                            f"{variables['tablestoreInstance']}/table/{variables['table']}")
                    else:
                        assert resource == (f"acs:log:{variables['region']}:*:project/{variables['logProject']}"
                                            f"/logstore/{variables['logStore']}")
            assert ("dybaseapi:QueryTokenForMnsQueue" in actions) == (function == "drain")
            assert ("dysms:QuerySendDetails" in actions) == (function == "reconcile")
            assert not [a for a in actions if "Delete" in a]
            if function == "drain":
                assert not {"oss:GetObject", "oss:ListObjects", "ots:GetRange", "ots:GetRow"} & actions
    trust = json.loads(policies.TRUST_POLICY.read_text())
    assert trust["Statement"][0]["Principal"] == {"Service": ["fc.aliyuncs.com"]}


def test_ram_policy_values_cannot_widen_a_resource():
    from scripts.deploy import policies

    values = policies.values_from_vars(load_s_yaml()["vars"])
    for field, bad in [("Prefix", "*"), ("Prefix", "a/*/"), ("Prefix", ""), ("Bucket", "*"), ("Table", "*"),
                       ("Region", "*"), ("FailureQueue", "*")]:
        with pytest.raises(policies.PolicyError):
            sink = "tablestore" if field == "Table" else "oss"
            policies.render("drain", sink, dict(values, **{field: bad}))


def test_fc_role_names_match_the_policy_tool():
    variables = load_s_yaml()["vars"]
    resources = s_resources()
    assert resources["alicom-drain"]["role"].endswith(f":role/{variables['drainRole']}")
    assert resources["alicom-reconcile"]["role"].endswith(f":role/{variables['reconcileRole']}")
    assert variables["drainRole"] != variables["reconcileRole"]


# ======================================================================================
# Deployment as users of Serverless Devs expect (issue 13)
# ======================================================================================

def test_fc_logs_are_one_entry_per_line_and_failures_have_a_destination():
    for name, props in s_resources().items():
        # DefaultRegex glues every line not starting with a date to the one before: JSON lines would merge.
        assert props["logConfig"]["logBeginRule"] == "None", name
        assert "destinationConfig" in props["asyncInvokeConfig"], name
    queue = "acs:mns:cn-hangzhou:123:/queues/alicom-failed/messages"
    resources = s_resources({"failureDestination": {"onFailure": {"destination": queue}}})
    for name, props in resources.items():
        assert props["asyncInvokeConfig"]["destinationConfig"] == {"onFailure": {"destination": queue}}, name


def test_s_deploy_builds_the_package_for_the_chosen_sink_first():
    doc = load_s_yaml()
    (step,) = doc["actions"]["pre-deploy"]
    command = resolve_s(step["run"], dict(doc["vars"], sink="tablestore")).split()
    assert command[:3] == ["python3", "-m", "scripts.package"] and step["path"] == "./"
    from scripts.package import TARGETS

    args = dict(zip(command[3::2], command[4::2]))
    assert args == {"--target": "fc", "--sink": "tablestore", "--workers": "1", "--out": "build/fc"}
    assert "tablestore" in dict(TARGETS["fc"].sink_sdks)
    assert all(props["code"] == "./" + args["--out"] for props in s_resources().values())
