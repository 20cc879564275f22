"""deploy/aws: the member role (a StackSet for the organisation) and the discovery role.

cfn-lint must be silent on both templates; their IAM policies must grant exactly the read actions
the exporter uses, each on the resource the Service Authorization Reference allows; the trust
policies must name the exporter's principal and carry the sts:ExternalId condition only when an
external ID is given.
"""

from __future__ import annotations

import json
import subprocess
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

from exporter.collectors import operations
from tests.conftest import REPO, venv_tool

pytestmark = pytest.mark.tools

AWS_DIR = REPO / "deploy" / "aws"
MEMBER = AWS_DIR / "member-role.yaml"
DISCOVERY = AWS_DIR / "discovery-role.yaml"
DISCOVERY_POLICY = AWS_DIR / "discovery-policy.json"

# What the registered collectors call: the member role allows exactly these.
MEMBER_ACTIONS = {operation.action for operation in operations()}
DISCOVERY_ACTIONS = {"organizations:ListAccounts"}
# Read actions by name (logs:FilterLogEvents reads log events: access level Read in the
# Service Authorization Reference).
READ_VERBS = ("Get", "List", "Describe", "Filter")
NO_VALUE = object()


def load(path: Path) -> dict[str, Any]:
    """The template as cfn-lint reads it (short-form tags become their long-form mappings)."""
    from cfnlint.decode import decode  # type: ignore[import-untyped]

    template, matches = decode(str(path))
    assert not matches, [str(m) for m in matches]
    assert isinstance(template, dict)
    plain: dict[str, Any] = json.loads(json.dumps(template))  # plain dicts, lists and strings
    return plain


def resolve(node: Any, template: dict[str, Any], params: dict[str, str]) -> Any:
    """`node` with Ref (to parameters), Fn::If, Fn::Equals and Fn::Not evaluated for `params`.

    The parameters missing from `params` take their defaults; AWS::NoValue drops its key.
    """
    values = {name: p.get("Default") for name, p in template.get("Parameters", {}).items()}
    values.update(params)

    def condition(name: str) -> bool:
        return bool(walk(template["Conditions"][name]))

    def walk(n: Any) -> Any:
        if isinstance(n, list):
            return [v for v in (walk(x) for x in n) if v is not NO_VALUE]
        if not isinstance(n, dict):
            return n
        if set(n) == {"Ref"}:
            if n["Ref"] == "AWS::NoValue":
                return NO_VALUE
            return values.get(n["Ref"], n)  # pseudo parameters and resources stay as they are
        if set(n) == {"Fn::If"}:
            name, when_true, when_false = n["Fn::If"]
            return walk(when_true if condition(name) else when_false)
        if set(n) == {"Fn::Equals"}:
            left, right = (walk(x) for x in n["Fn::Equals"])
            return left == right
        if set(n) == {"Fn::Not"}:
            (inner,) = n["Fn::Not"]
            return not walk(inner)
        return {k: v for k, v in ((k, walk(x)) for k, x in n.items()) if v is not NO_VALUE}

    return walk(node)


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def roles(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items()
            if r["Type"] == "AWS::IAM::Role"}


def only_role(template: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The template's one resource, an IAM role; its name and properties."""
    assert len(template["Resources"]) == 1, sorted(template["Resources"])
    ((name, role),) = roles(template).items()
    return name, role["Properties"]


def policy_statements(properties: dict[str, Any]) -> list[dict[str, Any]]:
    """Every statement of the role's permissions (inline policies only: nothing managed)."""
    assert "ManagedPolicyArns" not in properties
    statements: list[dict[str, Any]] = []
    for policy in properties["Policies"]:
        document = policy["PolicyDocument"]
        assert document["Version"] == "2012-10-17"
        statements += as_list(document["Statement"])
    return statements


def allowed_actions(statements: list[dict[str, Any]]) -> set[str]:
    actions: set[str] = set()
    for statement in statements:
        assert statement["Effect"] == "Allow", statement
        assert not {"NotAction", "NotResource", "NotPrincipal"} & set(statement), statement
        for action in as_list(statement["Action"]):
            assert isinstance(action, str), statement
            assert "*" not in action and "?" not in action, f"wildcard action {action}"
            actions.add(action)
    return actions


def iam_reference() -> dict[str, Any]:
    """cfn-lint's copy of the Service Authorization Reference: actions and their resource types."""
    spec = files("cfnlint.data.AdditionalSpecs").joinpath("Policies.json")
    data: dict[str, Any] = json.loads(spec.read_text(encoding="utf-8"))
    return data


def assert_resources_match_reference(statements: list[dict[str, Any]]) -> None:
    """`*` for the actions with no resource type; an ARN of the action's own type otherwise."""
    reference = iam_reference()
    for statement in statements:
        arns = as_list(statement["Resource"])
        for action in as_list(statement["Action"]):
            service, name = action.split(":")
            types = reference[service]["Actions"][name.lower()].get("Resources", [])
            if not types:
                assert arns == ["*"], f"{action} has no resource type: it needs '*'"
                continue
            prefixes = {arn.split("${Region}:${Account}:")[1].split(".*")[0]
                        for t in types
                        for arn in reference[service]["Resources"][t.lower()]["ARNFormats"]}
            for resource in arns:
                if resource == "*":
                    continue
                # Any region of this account, the action's own resource type (all of its
                # resources, or some, such as one log group).
                arn = resource["Fn::Sub"]
                assert any(arn.startswith(
                    f"arn:${{AWS::Partition}}:{service}:*:${{AWS::AccountId}}:{prefix}")
                    and arn.endswith("*") for prefix in prefixes), (action, resource, prefixes)


def trust_statement(properties: dict[str, Any]) -> dict[str, Any]:
    document = properties["AssumeRolePolicyDocument"]
    assert document["Version"] == "2012-10-17"
    (statement,) = as_list(document["Statement"])
    assert statement["Effect"] == "Allow"
    assert as_list(statement["Action"]) == ["sts:AssumeRole"]
    return dict(statement)


@pytest.fixture(scope="module")
def member() -> dict[str, Any]:
    return load(MEMBER)


@pytest.fixture(scope="module")
def discovery() -> dict[str, Any]:
    return load(DISCOVERY)


def test_cfn_lint_is_silent() -> None:
    result = subprocess.run(
        [venv_tool("cfn-lint"), "--include-checks", "I", "--", str(MEMBER), str(DISCOVERY)],
        capture_output=True, text=True, timeout=300, check=False, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "", result.stdout
    assert result.stderr.strip() == "", result.stderr


def test_member_role_allows_exactly_the_read_actions(member: dict[str, Any]) -> None:
    _, properties = only_role(member)
    statements = policy_statements(properties)
    actions = allowed_actions(statements)
    assert actions == MEMBER_ACTIONS
    assert all(a.split(":")[1].startswith(READ_VERBS) for a in actions), actions
    assert_resources_match_reference(statements)


def test_member_role_covers_what_the_exporter_calls(member: dict[str, Any]) -> None:
    _, properties = only_role(member)
    used = {operation.action for operation in operations()}
    assert used
    assert used <= allowed_actions(policy_statements(properties))


def test_member_role_name_is_a_parameter(member: dict[str, Any]) -> None:
    _, properties = only_role(member)
    assert properties["RoleName"] == {"Ref": "RoleName"}
    assert member["Parameters"]["RoleName"]["Default"] == "macie-exporter"


def test_describe_is_scoped_to_this_accounts_jobs(member: dict[str, Any]) -> None:
    _, properties = only_role(member)
    (statement,) = [s for s in policy_statements(properties)
                    if "macie2:DescribeClassificationJob" in as_list(s["Action"])]
    assert as_list(statement["Action"]) == ["macie2:DescribeClassificationJob"]
    assert statement["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:macie2:*:${AWS::AccountId}:classification-job/*"}


def test_member_role_resources_are_the_registrys(member: dict[str, Any]) -> None:
    """Each action on the resource its operation declares (the README policy's), in this
    account and partition."""
    _, properties = only_role(member)
    declared = {operation.action: operation.resource for operation in operations()}
    for statement in policy_statements(properties):
        resource = statement["Resource"]
        arn = resource if resource == "*" else resource["Fn::Sub"].replace(
            "${AWS::Partition}", "aws").replace("${AWS::AccountId}", "*")
        for action in as_list(statement["Action"]):
            assert arn == declared[action], (action, arn)


def test_discovery_role_allows_only_list_accounts(discovery: dict[str, Any]) -> None:
    _, properties = only_role(discovery)
    assert properties["RoleName"] == {"Ref": "RoleName"}
    assert discovery["Parameters"]["RoleName"]["Default"] == "macie-exporter-discovery"
    statements = policy_statements(properties)
    assert allowed_actions(statements) == DISCOVERY_ACTIONS
    assert_resources_match_reference(statements)


def test_discovery_policy_json_is_the_roles_policy(discovery: dict[str, Any]) -> None:
    policy = json.loads(DISCOVERY_POLICY.read_text(encoding="utf-8"))
    assert policy["Version"] == "2012-10-17"
    statements = as_list(policy["Statement"])
    assert allowed_actions(statements) == DISCOVERY_ACTIONS
    assert_resources_match_reference(statements)
    _, properties = only_role(discovery)
    assert statements == policy_statements(properties)


@pytest.mark.parametrize("path", [MEMBER, DISCOVERY], ids=["member", "discovery"])
def test_trust_names_the_exporter_principal(path: Path) -> None:
    template = load(path)
    _, properties = only_role(template)
    parameter = template["Parameters"]["ExporterPrincipalArn"]
    assert parameter["Type"] == "String"
    assert "Default" not in parameter  # must be given
    statement = trust_statement(properties)
    assert statement["Principal"] == {"AWS": {"Ref": "ExporterPrincipalArn"}}


@pytest.mark.parametrize("path", [MEMBER, DISCOVERY], ids=["member", "discovery"])
def test_external_id_condition_only_when_set(path: Path) -> None:
    template = load(path)
    assert template["Parameters"]["ExternalId"]["Default"] == ""
    assert template["Conditions"]["HasExternalId"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "ExternalId"}, ""]}]}
    _, properties = only_role(template)
    statement = trust_statement(properties)
    assert statement["Condition"] == {"Fn::If": [
        "HasExternalId",
        {"StringEquals": {"sts:ExternalId": {"Ref": "ExternalId"}}},
        {"Ref": "AWS::NoValue"},
    ]}

    principal = "arn:aws:iam::111111111111:role/macie-exporter-irsa"
    unset = resolve(statement, template, {"ExporterPrincipalArn": principal})
    assert "Condition" not in unset
    assert unset["Principal"] == {"AWS": principal}
    given = resolve(statement, template, {"ExporterPrincipalArn": principal,
                                          "ExternalId": "example"})
    assert given["Condition"] == {"StringEquals": {"sts:ExternalId": "example"}}


@pytest.mark.parametrize("path", [MEMBER, DISCOVERY], ids=["member", "discovery"])
def test_outputs_the_role_arn(path: Path) -> None:
    template = load(path)
    name, _ = only_role(template)
    assert template["Outputs"]["RoleArn"]["Value"] == {"Fn::GetAtt": [name, "Arn"]}
