"""Reading template.yml (SAM) and s.yaml (Serverless Devs fc3) as the clouds would deploy them,
for the template tests and the tests that run the code as the templates configure it
(test_deploy_defaults, test_least_privilege, test_packaging, ...). Not a fake: no service
stands behind it, only what the clouds would make of the two files:

- loading: template.yml with SAM's long-form intrinsics, s.yaml with Serverless Devs'
  `${vars.x}`, `${config('AccountID')}` and `${env(X)}` resolved to sample values;
- `Cfn`: a small CloudFormation evaluator (parameters and their defaults, conditions, Ref,
  Fn::If / Equals / Not / And / Or, Fn::Sub, Fn::GetAtt, pseudo parameters), and each
  function's environment and handler as each template sets them;
- schedules of both clouds in one form, CloudFormation's parameter constraints, and a walk
  over IAM policies (every branch of each Fn::If).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

import yaml

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "template.yml"
S_YAML = REPO / "s.yaml"

HANDLERS = {"drain": "functions.drain.handler", "reconcile": "functions.reconcile.handler"}
SAM_FUNCTIONS = {"drain": "DrainFunction", "reconcile": "ReconcileFunction"}
FC_FUNCTIONS = {"drain": "alicom-drain", "reconcile": "alicom-reconcile"}
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
