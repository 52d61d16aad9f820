"""template.yml (AWS SAM) is valid and least-privilege: cfn-lint reports nothing, the SAM
transform makes both functions with their schedules and roles, no data action is granted on
a wildcard, the parameters' constraints refuse impossible values, and what a deployment
keeps, alarms on and grants is explicit.

Offline: cfn-lint and samtranslator run locally (a fake managed-policy loader, no AWS calls).
"""
from __future__ import annotations

import re
from typing import Any

import pytest

from tests.templates_tooling import (
    REPO,
    SAM_FUNCTIONS,
    SAMPLE_UID,
    TEMPLATE,
    Cfn,
    as_list,
    branches,
    constraint_violations,
    load_sam,
    role_statements,
)

DATA_SERVICES = ("s3", "dynamodb", "secretsmanager", "ssm", "kms", "sqs")


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


# ======================================================================================
# Deployment as users of SAM expect (issue 13)
# ======================================================================================

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
