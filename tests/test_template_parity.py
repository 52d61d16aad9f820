"""template.yml (SAM) and s.yaml (Serverless Devs fc3) agree with each other and with the code:
the same handlers, schedules, timeouts and settings variables, every documented setting
settable from both under the same name with the code's defaults, and no Alibaba credential
in either.
"""
from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest

from tests.templates_tooling import (
    FC_FUNCTIONS,
    HANDLERS,
    REPO,
    SAM_FUNCTIONS,
    SAMPLE_UID,
    TEMPLATE,
    Cfn,
    fc_handlers,
    load_s_yaml,
    load_sam,
    normalise_fc_schedule,
    normalise_sam_schedule,
    s_resources,
    sam_env_names,
    sam_environment,
    sam_handlers,
)

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


# ======================================================================================
# Both templates agree with each other and with the code
# ======================================================================================

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
