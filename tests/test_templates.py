"""template.yml (SAM) and s.yaml (Serverless Devs fc3) are valid, least-privilege, and agree
with each other and with the code: the same handlers, schedules and settings variables.

Offline: cfn-lint and samtranslator run locally (a fake managed-policy loader, no AWS
calls); the fc3 props schema is tests/data/fc3-props.schema.json (devsapp/fc3's src/schema.json, MIT).
"""
from __future__ import annotations

import json
import re
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "template.yml"
S_YAML = REPO / "s.yaml"
FC3_SCHEMA = REPO / "tests" / "data" / "fc3-props.schema.json"

HANDLERS = {"drain": "functions.drain.handler", "reconcile": "functions.reconcile.handler"}
SAM_FUNCTIONS = {"drain": "DrainFunction", "reconcile": "ReconcileFunction"}
FC_FUNCTIONS = {"drain": "alicom-drain", "reconcile": "alicom-reconcile"}
# The product's schedules (issue: drain every minute; reconcile daily 02:00 Beijing time).
EXPECTED_SCHEDULES = {
    "drain": ("every", 60),
    "reconcile": ("cron", ("0", "0", "2", "*", "*", "*", "Asia/Shanghai")),
}
PLATFORM_VARIABLES = {"PYTHONPATH", "LD_LIBRARY_PATH", "PATH", "TZ"}
POWERTOOLS_VARIABLES = {"POWERTOOLS_LOG_LEVEL", "POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE"}
README = REPO / "README.md"
# Settings of README's configuration table that a template does not set, and why.
NOT_IN_TEMPLATES = {
    "ALIBABA_CLOUD_ACCESS_KEY_ID": "FC: the function role's STS credentials arrive here; AWS: the secret",
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "as ALIBABA_CLOUD_ACCESS_KEY_ID",
    "ALIBABA_CLOUD_SECURITY_TOKEN": "as ALIBABA_CLOUD_ACCESS_KEY_ID",
    "SINK_PATH": "file and sqlite sinks are local only",
    "DRAIN_INVOKE_ENDPOINT": "the platforms' own invoke API is the default; set only for local runs and tests",
}
ONE_CLOUD_ONLY = {
    "ALICOM_CREDENTIALS_SECRET": "aws",  # FC uses the role
    "ALICOM_CREDENTIALS_PARAMETER": None,  # an alternative to the secret, for hand-made deployments
    "TABLESTORE_INSTANCE": "fc",
}
FC3_RUNTIMES = {"python3.10", "python3.12"}
DATA_SERVICES = ("s3", "dynamodb", "secretsmanager", "ssm", "kms", "sqs")
SAMPLE_UID = "1234567890123456"


# -- loading -----------------------------------------------------------------------------

def load_sam() -> dict[str, Any]:
    from samtranslator.yaml_helper import yaml_parse  # long-form intrinsics from !Ref/!If tags

    return yaml_parse(TEMPLATE.read_text())


def load_s_yaml() -> dict[str, Any]:
    return yaml.safe_load(S_YAML.read_text())


_EXPR = re.compile(r"\$\{([^}]+)\}")


def resolve_s(value: Any, variables: dict[str, Any], env: dict[str, str] | None = None) -> Any:
    """Serverless Devs' ${vars.x}, ${config('AccountID')} and ${env(X)} with sample values.

    A value that is one `${vars.x}` and nothing else takes the variable's own value and type
    (a map, a boolean), as Serverless Devs does (`service: ${vars.service}` in its docs)."""
    if isinstance(value, dict):
        return {k: resolve_s(v, variables, env) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_s(v, variables, env) for v in value]
    if not isinstance(value, str):
        return value
    whole = re.fullmatch(r"\$\{\s*vars\.([A-Za-z0-9_]+)\s*\}", value)
    if whole:
        return variables[whole.group(1)]

    def one(match: re.Match) -> str:
        expr = match.group(1).strip()
        if expr.startswith("vars."):
            return str(variables[expr[5:]])
        if re.fullmatch(r"config\(['\"]AccountID['\"]\)", expr):
            return SAMPLE_UID
        env_ref = re.fullmatch(r"env\(['\"]?([A-Za-z_][A-Za-z0-9_]*)['\"]?\)", expr)
        if env_ref:
            return (env or {}).get(env_ref.group(1), f"from-env-{env_ref.group(1)}")
        raise AssertionError(f"s.yaml uses ${{{expr}}}, which this test cannot resolve")

    return _EXPR.sub(one, value)


def s_resources(variables_override: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    doc = load_s_yaml()
    variables = dict(doc.get("vars") or {}, **(variables_override or {}))
    return {name: resolve_s(res["props"], variables) for name, res in doc["resources"].items()}


# -- a small CloudFormation evaluator (parameters, conditions, Ref, If, Sub) ----------------

class Cfn:
    def __init__(self, template: dict[str, Any], parameters: dict[str, Any] | None = None):
        self.t = template
        self.params = {k: str(v.get("Default", "")) for k, v in template.get("Parameters", {}).items()}
        self.params.update({k: str(v) for k, v in (parameters or {}).items()})
        self.pseudo = {"AWS::Region": "ap-southeast-1", "AWS::AccountId": "123456789012",
                       "AWS::StackName": "alicom", "AWS::Partition": "aws", "AWS::NoValue": None}

    def condition(self, name: str) -> bool:
        return bool(self.eval(self.t["Conditions"][name]))

    def ref(self, name: str) -> Any:
        if name in self.params:
            return self.params[name]
        if name in self.pseudo:
            return self.pseudo[name]
        resource = self.t["Resources"][name]
        if "Condition" in resource:
            assert self.condition(resource["Condition"]), f"Ref to {name}, which this configuration does not create"
        kind = resource["Type"]
        if kind == "AWS::SecretsManager::Secret":
            return "arn:aws:secretsmanager:ap-southeast-1:123456789012:secret:AlicomCredentialsSecret-AbCdEf"
        return f"alicom-{name.lower()}-1a2b3c"

    def eval(self, node: Any) -> Any:
        if isinstance(node, list):
            return [self.eval(n) for n in node]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, arg), = node.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Condition":
                return self.condition(arg)
            if key == "Fn::If":
                return self.eval(arg[1] if self.condition(arg[0]) else arg[2])
            if key == "Fn::Equals":
                return str(self.eval(arg[0])) == str(self.eval(arg[1]))
            if key == "Fn::Not":
                return not self.eval(arg[0])
            if key == "Fn::And":
                return all(self.eval(a) for a in arg)
            if key == "Fn::Or":
                return any(self.eval(a) for a in arg)
            if key == "Fn::Sub":
                text, mapping = (arg, {}) if isinstance(arg, str) else (arg[0], self.eval(arg[1]))
                return re.sub(r"\$\{([^}!]+)\}", lambda m: str(mapping[m.group(1)] if m.group(1) in mapping
                                                                 else self.ref(m.group(1))), text)
            if key == "Fn::GetAtt":
                return f"arn:aws:fake:::{arg[0] if isinstance(arg, list) else arg}"
        return {k: self.eval(v) for k, v in node.items()}


def sam_environment(function: str, parameters: dict[str, Any] | None = None) -> dict[str, str]:
    template = load_sam()
    cfn = Cfn(template, parameters)
    env = dict(template["Globals"]["Function"]["Environment"]["Variables"])
    env.update(template["Resources"][SAM_FUNCTIONS[function]]["Properties"].get("Environment", {}).get("Variables", {}))
    return {k: str(v) for k, v in cfn.eval(env).items()}


def sam_env_names() -> dict[str, set[str]]:
    template = load_sam()
    common = set(template["Globals"]["Function"]["Environment"]["Variables"])
    return {f: common | set(template["Resources"][r]["Properties"].get("Environment", {}).get("Variables", {}))
            for f, r in SAM_FUNCTIONS.items()}


def sam_handlers() -> dict[str, str]:
    resources = load_sam()["Resources"]
    return {f: resources[r]["Properties"]["Handler"] for f, r in SAM_FUNCTIONS.items()}


def fc_handlers() -> dict[str, str]:
    resources = s_resources()
    return {f: resources[r]["handler"] for f, r in FC_FUNCTIONS.items()}


# -- schedules -----------------------------------------------------------------------------

def normalise_sam_schedule(expression: str, timezone: str) -> tuple:
    rate = re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)", expression)
    if rate:
        unit = {"minute": 60, "hour": 3600, "day": 86400}[rate.group(2).rstrip("s")]
        return ("every", int(rate.group(1)) * unit)
    cron = re.fullmatch(r"cron\((\S+) (\S+) (\S+) (\S+) (\S+) (\S+)\)", expression)
    assert cron, f"not a rate() or cron() expression: {expression}"
    minute, hour, dom, month, dow, year = (f.replace("?", "*") for f in cron.groups())
    assert year == "*", "a schedule pinned to a year stops running"
    return ("cron", ("0", minute, hour, dom, month, dow, timezone))


def normalise_fc_schedule(expression: str) -> tuple:
    every = re.fullmatch(r"@every ((?:\d+[hms])+)", expression)
    if every:
        seconds = sum(int(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in re.findall(r"(\d+)([hms])", every.group(1)))
        return ("every", seconds)
    cron = re.fullmatch(r"(?:CRON_TZ=(\S+) )?(\S+) (\S+) (\S+) (\S+) (\S+) (\S+)", expression)
    assert cron, f"not an @every or 6-field cron expression: {expression}"
    tz, *fields = cron.groups()
    return ("cron", tuple(f.replace("?", "*") for f in fields) + (tz or "UTC",))


# -- parameter constraints, as CloudFormation applies them ------------------------------------

def constraint_violations(parameter: dict[str, Any], value: Any) -> list[str]:
    text = str(value)
    problems = []
    if "AllowedValues" in parameter and text not in [str(v) for v in parameter["AllowedValues"]]:
        problems.append("AllowedValues")
    if "AllowedPattern" in parameter and not re.fullmatch(parameter["AllowedPattern"], text):
        problems.append("AllowedPattern")
    if parameter.get("Type") == "Number":
        try:
            number = float(text)
        except ValueError:
            return problems + ["Number"]
        if "MinValue" in parameter and number < float(parameter["MinValue"]):
            problems.append("MinValue")
        if "MaxValue" in parameter and number > float(parameter["MaxValue"]):
            problems.append("MaxValue")
    if "MinLength" in parameter and len(text) < int(parameter["MinLength"]):
        problems.append("MinLength")
    if "MaxLength" in parameter and len(text) > int(parameter["MaxLength"]):
        problems.append("MaxLength")
    return problems


# -- IAM walking -----------------------------------------------------------------------------

def branches(node: Any) -> Iterator[Any]:
    """Every value a node can take: both sides of each Fn::If (NoValue dropped)."""
    if isinstance(node, dict) and set(node) == {"Fn::If"}:
        for side in node["Fn::If"][1:]:
            yield from branches(side)
    elif isinstance(node, dict) and node == {"Ref": "AWS::NoValue"}:
        return
    else:
        yield node


def role_statements(transformed: dict[str, Any], role: str) -> list[dict[str, Any]]:
    statements = []
    for policy in transformed["Resources"][role]["Properties"].get("Policies", []):
        for concrete in branches(policy):
            for statement in concrete["PolicyDocument"]["Statement"]:
                statements.append(statement)
    return statements


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@pytest.fixture(scope="module")
def transformed() -> dict[str, Any]:
    from samtranslator.translator.transform import transform
    from samtranslator.translator.managed_policy_translator import ManagedPolicyLoader

    class OfflineLoader(ManagedPolicyLoader):
        """SAM asks for AWS managed policy ARNs by name; answer from a fixed map, no IAM call."""

        def __init__(self):
            pass

        def load(self) -> dict[str, str]:
            return {"AWSLambdaBasicExecutionRole": "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"}

    template = load_sam()
    # What `sam package` does: the code is uploaded and CodeUri becomes an S3 URI.
    template["Globals"]["Function"]["CodeUri"] = "s3://deployment-bucket/alicom-drain.zip"
    with pytest.MonkeyPatch.context() as mp:
        # samtranslator reads the region for pseudo parameters from a boto3 session (no call is made).
        mp.setenv("AWS_DEFAULT_REGION", "ap-southeast-1")
        return transform(template, {}, OfflineLoader())


# ======================================================================================
# AWS SAM
# ======================================================================================

def test_cfn_lint_reports_nothing():
    from cfnlint.api import ManualArgs, lint

    matches = lint(TEMPLATE.read_text(), config=ManualArgs(regions=["us-east-1", "ap-southeast-1", "cn-north-1"]))
    assert not matches, "cfn-lint:\n" + "\n".join(f"{m.rule.id} line {m.linenumber}: {m.message}" for m in matches)


def test_sam_transform_produces_both_functions_schedules_and_roles(transformed):
    types = {name: r["Type"] for name, r in transformed["Resources"].items()}
    for function in SAM_FUNCTIONS.values():
        assert types[function] == "AWS::Lambda::Function"
        assert types[f"{function}Role"] == "AWS::IAM::Role"
        assert types[f"{function}Schedule"] == "AWS::Scheduler::Schedule"
        assert transformed["Resources"][function]["Properties"]["Runtime"] == "python3.12"
    assert not any(t.startswith("AWS::Serverless::") for t in types.values())


def test_no_data_action_on_a_wildcard_resource(transformed):
    roles = [n for n, r in transformed["Resources"].items() if r["Type"] == "AWS::IAM::Role"]
    assert not [n for n, r in transformed["Resources"].items() if r["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy")]
    checked = 0
    for role in roles:
        for statement in role_statements(transformed, role):
            actions = as_list(statement["Action"])
            for action in actions:
                assert "*" not in action, f"{role}: wildcard action {action}"
            if statement.get("Effect") != "Allow" or not any(a.split(":")[0] in DATA_SERVICES for a in actions):
                continue
            for resource in as_list(statement["Resource"]):
                for concrete in branches(resource):
                    checked += 1
                    assert concrete != "*", f"{role}: {actions} on '*'"
                    if isinstance(concrete, str):
                        assert not re.fullmatch(r"arn:[^:]*:[^:]*:[^:]*:[^:]*:\*", concrete), f"{role}: {actions} on {concrete}"
        managed = transformed["Resources"][role]["Properties"].get("ManagedPolicyArns", [])
        assert set(managed) <= {"arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"}, managed
    assert checked >= 10


def test_drain_writes_only_and_reconcile_reads_and_writes(transformed):
    def actions(role):
        return {a for s in role_statements(transformed, role) for a in as_list(s["Action"])}

    drain, reconcile = actions("DrainFunctionRole"), actions("ReconcileFunctionRole")
    assert "s3:PutObject" in drain and "dynamodb:BatchWriteItem" in drain
    assert not {"s3:GetObject", "s3:ListBucket", "dynamodb:Scan", "dynamodb:GetItem"} & drain
    assert {"s3:GetObject", "s3:PutObject", "dynamodb:Scan", "dynamodb:GetItem", "dynamodb:PutItem"} <= reconcile
    assert not [a for a in drain | reconcile if "Delete" in a]
    for role in ("DrainFunctionRole", "ReconcileFunctionRole"):
        secret = [s for s in role_statements(transformed, role) if "secretsmanager:GetSecretValue" in as_list(s["Action"])]
        assert len(secret) == 1 and secret[0]["Resource"] == {
            "Fn::If": ["CreateSecret", {"Ref": "AlicomCredentialsSecret"}, {"Ref": "AlicomCredentialsSecretArn"}]}


@pytest.mark.parametrize("sink,bucket,table", [("s3", "", ""), ("s3", "existing-bucket", ""),
                                                ("dynamodb", "", ""), ("dynamodb", "", "existing_table")])
def test_policies_name_exactly_the_configured_bucket_prefix_or_table(sink, bucket, table):
    template = load_sam()
    cfn = Cfn(template, {"Sink": sink, "ExistingBucketName": bucket, "ExistingTableName": table, "SinkPrefix": "rx/"})
    for function in SAM_FUNCTIONS.values():
        documents = [p for p in cfn.eval(template["Resources"][function]["Properties"]["Policies"]) if p]
        resources = [r for d in documents for s in d["Statement"] for r in as_list(s["Resource"])
                     if any(a.startswith(("s3:", "dynamodb:")) for a in as_list(s["Action"]))]
        assert resources
        for resource in resources:
            if sink == "s3":
                name = bucket or "alicom-sinkbucket-1a2b3c"
                assert resource in (f"arn:aws:s3:::{name}/rx/*", f"arn:aws:s3:::{name}")
            else:
                name = table or "alicom-sinktable-1a2b3c"
                assert resource.startswith(f"arn:aws:dynamodb:ap-southeast-1:123456789012:table/{name}")
    created = {n for n, r in template["Resources"].items() if "Condition" not in r or cfn.condition(r["Condition"])}
    assert ("SinkBucket" in created) == (sink == "s3" and not bucket)
    assert ("SinkTable" in created) == (sink == "dynamodb" and not table)


def test_schedules_concurrency_retries_and_log_retention():
    template = load_sam()
    resources = template["Resources"]
    for function in SAM_FUNCTIONS.values():
        props = resources[function]["Properties"]
        event = props["Events"]["Schedule"]
        assert event["Type"] == "ScheduleV2"
        schedule = event["Properties"]
        assert schedule["FlexibleTimeWindow"] == {"Mode": "OFF"}
        assert schedule["OmitName"] is True
        assert 0 <= schedule["RetryPolicy"]["MaximumRetryAttempts"] <= 5
        assert 60 <= schedule["RetryPolicy"]["MaximumEventAgeInSeconds"] <= 3600
        assert "ReservedConcurrentExecutions" in props
        log_group = resources[props["LoggingConfig"]["LogGroup"]["Ref"]]
        assert log_group["Type"] == "AWS::Logs::LogGroup" and log_group["Properties"]["RetentionInDays"]
    cfn = Cfn(template)
    assert cfn.eval(resources["DrainFunction"]["Properties"]["ReservedConcurrentExecutions"]) == "1"
    drain_async = resources["DrainEventInvokeConfig"]["Properties"]
    assert drain_async["MaximumRetryAttempts"] == 0 and drain_async["MaximumEventAgeInSeconds"] <= 120
    # No reservation at all when asked (accounts that cannot reserve): NoValue, never 0.
    assert Cfn(template, {"DrainReserveConcurrency": "false"}).eval(
        resources["DrainFunction"]["Properties"]["ReservedConcurrentExecutions"]) is None
    # Fanning out to K runs reserves K: "at most K runs at once".
    assert Cfn(template, {"DrainMaxWorkers": 4}).eval(
        resources["DrainFunction"]["Properties"]["ReservedConcurrentExecutions"]) == "4"
    assert Cfn(template, {"AsyncFailureDestination": "sqs"}).eval(drain_async["DestinationConfig"]) == {
        "OnFailure": {"Destination": "arn:aws:fake:::FailureQueue"}}


IMPOSSIBLE = [
    ("DrainTimeout", 901, "MaxValue"),
    ("ReconcileTimeout", 901, "MaxValue"),
    ("DrainTimeout", 5, "MinValue"),
    ("Sink", "ftp", "AllowedValues"),
    ("Sink", "oss", "AllowedValues"),
    ("DrainScheduleExpression", "every 5 minutes", "AllowedPattern"),
    ("DrainScheduleExpression", "rate(5 minutes", "AllowedPattern"),
    ("DrainScheduleExpression", "rate(1 minutes)", "AllowedPattern"),
    ("ReconcileScheduleExpression", "cron(0 2 * * ?)", "AllowedPattern"),
    ("ReconcileScheduleTimezone", "Beijing time", "AllowedPattern"),
    ("DrainMemorySize", 64, "MinValue"),
    ("DrainMemorySize", 10241, "MaxValue"),
    ("DrainWaitSeconds", 31, "MaxValue"),
    ("DrainMaxWorkers", 0, "MinValue"),
    ("DrainMaxWorkers", 42, "MaxValue"),  # MNS: at most 4,000 undeleted across runs at concurrency 3
    ("LogRetentionDays", 2, "AllowedValues"),
    ("AlicomMessageTypes", "SmsReport,Foo", "AllowedPattern"),
    ("AlicomUid", "12ab", "AllowedPattern"),
    ("AlicomCredentialsSecretArn", "my-secret", "AllowedPattern"),
    ("AlicomMnsEndpoint", "http://1943695596114318.mns.cn-hangzhou.aliyuncs.com/", "AllowedPattern"),
    ("SinkPrefix", "alicom/*", "AllowedPattern"),
    ("SinkPrefix", "", "AllowedPattern"),  # would grant the whole bucket
    ("Architecture", "i386", "AllowedValues"),
    ("AlicomOwnerId", "12ab", "AllowedPattern"),
    ("HeartbeatMinutes", 1, "MinValue"),
    ("SinkPrefix", "alicom", "AllowedPattern"),
    ("ExistingBucketName", "Not_A_Bucket", "AllowedPattern"),
]
POSSIBLE = [
    ("DrainTimeout", 900), ("Sink", "dynamodb"), ("DrainScheduleExpression", "rate(5 minutes)"),
    ("DrainScheduleExpression", "cron(0/2 * * * ? *)"), ("ReconcileScheduleTimezone", "UTC"),
    ("AlicomMessageTypes", "SmsReport"), ("AlicomUid", SAMPLE_UID), ("SinkPrefix", "a/"), ("SinkPrefix", "a/b/"),
    ("Architecture", "arm64"), ("AlicomOwnerId", ""), ("AlicomOwnerId", SAMPLE_UID),
    ("AlicomCredentialsSecretArn", "arn:aws:secretsmanager:ap-southeast-1:123456789012:secret:alicom/ak-AbC123"),
    ("AlicomQueueNames", "SmsReport=Alicom-Queue-1-SmsReport,SmsUp=Alicom-Queue-1-SmsUp"),
    ("DrainMaxWorkers", 8), ("DrainMaxWorkers", 41),
]


@pytest.mark.parametrize("name,value,rule", IMPOSSIBLE)
def test_parameter_constraints_reject_impossible_values(name, value, rule):
    parameter = load_sam()["Parameters"][name]
    assert rule in constraint_violations(parameter, value), f"{name}={value!r} passes the template's constraints"


@pytest.mark.parametrize("name,value", POSSIBLE)
def test_parameter_constraints_accept_sensible_values(name, value):
    assert constraint_violations(load_sam()["Parameters"][name], value) == []


def test_every_default_satisfies_its_own_constraints():
    for name, parameter in load_sam()["Parameters"].items():
        assert constraint_violations(parameter, parameter.get("Default", "")) == [], name


def test_cfn_lint_flags_impossible_defaults():
    """The same constraints, as cfn-lint enforces them (E2015) on a template whose defaults are wrong."""
    from cfnlint.api import ManualArgs, lint

    text = TEMPLATE.read_text()
    bad = {"DrainTimeout": ("Default: 55", "Default: 901"), "Sink": ("Default: s3", "Default: ftp"),
           "DrainScheduleExpression": ("Default: rate(1 minute)", "Default: every 5 minutes")}
    for name, (old, new) in bad.items():
        block = re.search(rf"\n  {name}:\n(    .*\n)+", text).group(0)
        assert old in block
        text = text.replace(block, block.replace(old, new))
    flagged = {m.path[1] for m in lint(text, config=ManualArgs(regions=["us-east-1"]))
               if m.rule.id == "E2015" and list(m.path[:1]) == ["Parameters"]}
    assert flagged == set(bad), f"cfn-lint flagged {flagged}"


def test_no_alibaba_credential_travels_in_plain_text():
    template_text = TEMPLATE.read_text()
    assert "ALIBABA_CLOUD_ACCESS_KEY" not in template_text
    for function in SAM_FUNCTIONS:
        env = sam_environment(function)
        assert env["ALICOM_CREDENTIALS_SECRET"].startswith("arn:aws:secretsmanager:")
    secret = load_sam()["Resources"]["AlicomCredentialsSecret"]["Properties"]
    assert "SecretString" not in secret and "GenerateSecretString" in secret
    for name, props in s_resources().items():
        for key, value in props.get("environmentVariables", {}).items():
            if "ACCESS_KEY" in key or "SECRET" in key or key.endswith("SECURITY_TOKEN"):
                raise AssertionError(f"s.yaml {name} sets {key}; credentials come from the function's role")


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
# Both templates agree with each other and with the code
# ======================================================================================

def test_both_clouds_run_the_same_handlers():
    from scripts.package import FC_ENTRY_POINTS

    assert sam_handlers() == HANDLERS
    for function, spec in fc_handlers().items():
        # FC documents <file>.<method> at the code root: the build's entry file re-exports ours.
        entry, method = spec.split(".")
        assert f"{FC_ENTRY_POINTS[entry]}.{method}" == HANDLERS[function], spec


def settings_aliases() -> set[str]:
    from shared.settings import VARIABLES

    return set(VARIABLES.values())


def allowed_variable(name: str, aliases: set[str]) -> bool:
    return name in aliases or name in POWERTOOLS_VARIABLES or name.startswith("POWERTOOLS_") or name in PLATFORM_VARIABLES


def test_every_environment_variable_is_a_setting_or_a_platform_variable():
    aliases = settings_aliases()
    named = {f"template.yml {f}": names for f, names in sam_env_names().items()}
    named.update({f"s.yaml {n}": set(p["environmentVariables"]) for n, p in s_resources().items()})
    for where, names in named.items():
        unknown = sorted(n for n in names if not allowed_variable(n, aliases))
        assert not unknown, f"{where} sets {unknown}, which shared/settings.py does not read"
        reserved = sorted(n for n in names if n.startswith(("AWS_", "LAMBDA_", "_", "FC_")))
        assert not reserved, f"{where} sets platform-reserved {reserved}"


@pytest.mark.parametrize("parameters", [
    {"AlicomUid": SAMPLE_UID},
    {"AlicomUid": SAMPLE_UID, "SinkKmsKeyArn": "arn:aws:kms:ap-southeast-1:123456789012:key/abcd-1234"},
    {"Sink": "dynamodb", "AlicomUid": SAMPLE_UID, "SinkTtlDays": 90},
    {"Sink": "dynamodb", "ExistingTableName": "receipts", "AlicomQueueNames": "SmsReport=q-1,SmsUp=q-2"},
])
def test_sam_environment_loads_through_the_settings_loader(parameters):
    from shared.settings import load_settings

    for function in SAM_FUNCTIONS:
        settings = load_settings(sam_environment(function, parameters))
        assert settings.sink == parameters.get("Sink", "s3")
        assert settings.credentials_secret


@pytest.mark.parametrize("variables", [
    {"uid": SAMPLE_UID},
    {"sink": "tablestore", "uid": SAMPLE_UID, "sinkEndpoint": "https://alicom-receipts.cn-hangzhou.ots.aliyuncs.com"},
])
def test_fc_environment_loads_through_the_settings_loader(variables):
    from shared.settings import load_settings

    for name, props in s_resources(variables).items():
        settings = load_settings(props["environmentVariables"])
        assert settings.sink == variables.get("sink", "oss"), name


def test_schedules_agree_between_the_templates():
    template = load_sam()
    params = template["Parameters"]
    sam = {
        "drain": normalise_sam_schedule(params["DrainScheduleExpression"]["Default"], params["DrainScheduleTimezone"]["Default"]),
        "reconcile": normalise_sam_schedule(params["ReconcileScheduleExpression"]["Default"],
                                            params["ReconcileScheduleTimezone"]["Default"]),
    }
    resources = s_resources()
    fc = {f: normalise_fc_schedule(resources[r]["triggers"][0]["triggerConfig"]["cronExpression"])
          for f, r in FC_FUNCTIONS.items()}
    assert sam == fc == EXPECTED_SCHEDULES


class _LambdaContext:
    aws_request_id = "req-1"
    function_name = "alicom-drain"

    def get_remaining_time_in_millis(self) -> int:
        return 55_000


def test_scheduled_payloads_are_timer_runs_the_functions_accept():
    """The Scheduler Input and the FC timer payload go through the real platform adapter."""
    from shared.events import DrainEvent, parse_event
    from shared.platform import adapt

    template = load_sam()
    for function in SAM_FUNCTIONS.values():
        payload = template["Resources"][function]["Properties"]["Events"]["Schedule"]["Properties"]["Input"]
        invocation = adapt(json.loads(payload), _LambdaContext())
        assert (invocation.platform, invocation.trigger) == ("lambda", "timer"), function
        if function == "DrainFunction":
            parse_event(DrainEvent, invocation.options)
    fc_context = SimpleNamespace(request_id="req-2", function=SimpleNamespace(name="alicom-drain", timeout=55))
    for name, props in s_resources().items():
        config = props["triggers"][0]["triggerConfig"]
        event = json.dumps({"triggerTime": "2026-01-01T00:00:00Z", "triggerName": "t", "payload": config["payload"]})
        invocation = adapt(event.encode(), fc_context)
        assert (invocation.platform, invocation.trigger) == ("fc", "timer"), name
        if name == "alicom-drain":
            parse_event(DrainEvent, invocation.options)


def test_timeouts_and_concurrency_agree():
    params = load_sam()["Parameters"]
    resources = s_resources()
    assert int(params["DrainTimeout"]["Default"]) == resources["alicom-drain"]["timeout"] < 60
    assert int(params["ReconcileTimeout"]["Default"]) == resources["alicom-reconcile"]["timeout"]
    # Reserved concurrency follows the fan-out's "at most K runs", on both clouds (default 1).
    assert int(params["DrainMaxWorkers"]["Default"]) == resources["alicom-drain"]["concurrencyConfig"]["reservedConcurrency"] == 1
    assert resources["alicom-drain"]["environmentVariables"]["DRAIN_MAX_WORKERS"] == "1"
    variables = load_s_yaml()["vars"]
    assert str(variables["drainMaxWorkers"]) == variables["drainMaxWorkersText"]  # the two spellings agree
    assert resources["alicom-drain"]["asyncInvokeConfig"]["maxAsyncRetryAttempts"] == 0


def test_consumers_per_queue_default_is_the_same_on_both_platforms():
    from shared.drain import DrainOptions
    from shared.settings import Settings

    params = load_sam()["Parameters"]
    assert int(params["DrainConcurrency"]["Default"]) == Settings.default("concurrency") == DrainOptions().concurrency
    assert s_resources()["alicom-drain"]["environmentVariables"]["DRAIN_CONCURRENCY"] == "3"


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
# Deployment as users of SAM and Serverless Devs expect (issue 13)
# ======================================================================================

def documented_settings() -> set[str]:
    """The variables README's "Configuration" table lists (a row may name several)."""
    text = README.read_text()
    table = text[text.index("## Configuration"):text.index("## Deploy to Function Compute")]
    names = set()
    for row in re.findall(r"^\| (`[^|]+)\|", table, re.M):
        first = re.findall(r"`([A-Z][A-Z0-9_]+)`", row)
        for name in first:
            names.add(name)
        stem = first[0] if first else ""
        for suffix in re.findall(r"`(_[A-Z_]+)`", row):  # `ALIBABA_CLOUD_ACCESS_KEY_ID` / `_SECRET`
            # the setting of that family (same first two words) that ends so
            family = "_".join(stem.split("_")[:2])
            names.update(v for v in settings_aliases() if v.startswith(family) and v.endswith(suffix))
    return names


def test_every_documented_setting_is_settable_from_both_templates_under_the_same_name():
    documented = documented_settings()
    assert {"SINK", "DRAIN_COALESCE_SECONDS", "POWERTOOLS_LOG_LEVEL", "ALIBABA_CLOUD_SECURITY_TOKEN"} <= documented
    sam = set.union(*sam_env_names().values())  # drain-only settings sit on the drain
    fc = {n for props in s_resources().values() for n in props["environmentVariables"]}
    for name in sorted(documented - set(NOT_IN_TEMPLATES)):
        only = ONE_CLOUD_ONLY.get(name, "both")
        if only in ("both", "aws"):
            assert name in sam, f"template.yml cannot set {name} (README's configuration table lists it)"
        if only in ("both", "fc"):
            assert name in fc, f"s.yaml cannot set {name} (README's configuration table lists it)"
    # The new optional setting, and no alias spelling of the log level.
    assert "ALICOM_OWNER_ID" in sam and "ALICOM_OWNER_ID" in fc
    assert "LOG_LEVEL" not in sam | fc
    # Every s.yaml value comes from vars (one place to edit), not a literal buried in a function.
    raw = load_s_yaml()["resources"]["alicom-drain"]["props"]["environmentVariables"]
    literal = sorted(k for k, v in raw.items() if "${vars." not in str(v) and not k.startswith("POWERTOOLS_")
                     and k not in PLATFORM_VARIABLES)
    assert not literal, f"s.yaml sets {literal} without a var"


def test_template_defaults_are_the_codes_defaults():
    """A value both templates pass by default must be what the code would use without it."""
    import msgspec

    from shared.settings import VARIABLES, Settings

    field = {v: k for k, v in VARIABLES.items()}
    sam = sam_environment("drain", {"AlicomUid": SAMPLE_UID}) | sam_environment("reconcile", {"AlicomUid": SAMPLE_UID})
    fc = {k: v for props in s_resources().values() for k, v in props["environmentVariables"].items()}
    checked = 0
    for name in sorted(set(sam) & set(fc) & set(field)):
        default = Settings.default(field[name])
        if default in (None, msgspec.NODEFAULT) or isinstance(default, tuple):
            continue
        for where, value in (("template.yml", sam[name]), ("s.yaml", fc[name])):
            assert float(value) == float(default) if isinstance(default, (int, float)) else value.rstrip("/") == str(default).rstrip("/"), \
                f"{where} {name}={value!r}, the code's default is {default!r}"
        checked += 1
    assert checked >= 9


def test_reconcile_schedule_runs_only_with_a_table_sink():
    """The scheduled reconcile works the ledger, which needs a table sink: with the default
    object sink its schedule is off on both clouds (it would fail every day), on with a table."""
    template = load_sam()
    state = template["Resources"]["ReconcileFunction"]["Properties"]["Events"]["Schedule"]["Properties"]["State"]
    assert Cfn(template).eval(state) == "DISABLED"  # Sink=s3, the default
    assert Cfn(template, {"Sink": "dynamodb"}).eval(state) == "ENABLED"
    assert Cfn(template, {"Sink": "dynamodb", "ScheduleState": "DISABLED"}).eval(state) == "DISABLED"
    drain_state = template["Resources"]["DrainFunction"]["Properties"]["Events"]["Schedule"]["Properties"]["State"]
    assert Cfn(template).eval(drain_state) == "ENABLED"
    timer = lambda variables: s_resources(variables)["alicom-reconcile"]["triggers"][0]["triggerConfig"]["enable"]
    assert load_s_yaml()["vars"]["sink"] == "oss" and timer({}) is False
    assert timer({"sink": "tablestore", "reconcileScheduleEnabled": True}) is True
    assert s_resources()["alicom-drain"]["triggers"][0]["triggerConfig"]["enable"] is True


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


def test_samconfig_deploys_this_template_with_lint_on():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    config = tomllib.loads((REPO / "samconfig.toml").read_text())
    default = config["default"]
    assert default["global"]["parameters"]["stack_name"] == "alicom-drain"
    assert default["validate"]["parameters"]["lint"] is True
    assert default["build"]["parameters"]["build_in_source"] is True  # no copy of the checkout per function
    deploy = default["deploy"]["parameters"]
    assert deploy["capabilities"] == "CAPABILITY_IAM" and deploy["resolve_s3"] is True
    parameters = load_sam()["Parameters"]
    overrides = dict(item.split("=", 1) for item in deploy["parameter_overrides"])
    assert set(overrides) <= set(parameters) and "Sink" in overrides
    # The sample account id is refused by the template until the user puts theirs.
    assert constraint_violations(parameters["AlicomUid"], overrides["AlicomUid"]) == ["AllowedPattern"]


def test_architecture_parameter_matches_a_package_build():
    from scripts.package import ARCH_PLATFORMS

    template = load_sam()
    assert set(template["Parameters"]["Architecture"]["AllowedValues"]) == set(ARCH_PLATFORMS)
    assert Cfn(template, {"Architecture": "arm64"}).eval(template["Globals"]["Function"]["Architectures"]) == ["arm64"]


def test_what_stays_after_delete_is_explicit():
    """Data stays (bucket, table and its policy); what the stack made for itself goes."""
    resources = load_sam()["Resources"]
    expected = {"SinkBucket": "Retain", "SinkBucketPolicy": "Retain", "SinkTable": "Retain",
                "AlicomCredentialsSecret": "Delete", "FailureQueue": "Delete",
                "DrainLogGroup": "Delete", "ReconcileLogGroup": "Delete"}
    for name, policy in expected.items():
        assert resources[name].get("DeletionPolicy") == policy, name
        assert resources[name].get("UpdateReplacePolicy") == policy, name
    stateful = {"AWS::S3::Bucket", "AWS::DynamoDB::Table", "AWS::SecretsManager::Secret", "AWS::SQS::Queue",
                "AWS::Logs::LogGroup"}
    assert {n for n, r in resources.items() if r["Type"] in stateful} <= set(expected)


@pytest.mark.parametrize("parameters", [{"Sink": "s3"}, {"Sink": "dynamodb"}])
def test_sink_key_grants_go_through_the_sink_service_only(parameters):
    template = load_sam()
    cfn = Cfn(template, dict(parameters, SinkKmsKeyArn="arn:aws:kms:ap-southeast-1:123456789012:key/abcd-1234"))
    service = {"s3": "s3", "dynamodb": "dynamodb"}[parameters["Sink"]]
    found = 0
    for function in SAM_FUNCTIONS.values():
        for document in filter(None, cfn.eval(template["Resources"][function]["Properties"]["Policies"])):
            for statement in document["Statement"]:
                if any(a.startswith("kms:") for a in as_list(statement["Action"])):
                    found += 1
                    via = statement["Condition"]["StringEquals"]["kms:ViaService"]
                    assert via in (f"{service}.ap-southeast-1.amazonaws.com", "secretsmanager.ap-southeast-1.amazonaws.com")
    assert found == 2


def test_heartbeat_alarm_fires_when_no_drain_run_succeeded():
    template = load_sam()
    alarm = template["Resources"]["DrainHeartbeatAlarm"]
    props = alarm["Properties"]
    # Minimum of run_failed (0 per successful run) per minute; no data at all = alarm.
    assert (props["Namespace"], props["MetricName"], props["Statistic"], props["Period"]) == ("AlicomDrain", "run_failed", "Minimum", 60)
    assert props["ComparisonOperator"] == "GreaterThanOrEqualToThreshold" and props["Threshold"] == 1
    assert props["TreatMissingData"] == "breaching"
    assert props["EvaluationPeriods"] == props["DatapointsToAlarm"] == {"Ref": "HeartbeatMinutes"}
    assert Cfn(template).condition(alarm["Condition"]) and not Cfn(template, {"ScheduleState": "DISABLED"}).condition(alarm["Condition"])
