"""Checks on infra/*.yaml beyond what cfn-lint and checkov know: least
privilege as Hookline means it, settings that match what the binaries read,
and the alarms the deployment guide asks for."""

import pathlib
import re

import pytest
from cfnlint.decode import decode

ROOT = pathlib.Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "hookline.yaml"


@pytest.fixture(scope="module")
def template():
    tpl, errors = decode(str(TEMPLATE))
    assert not errors, errors
    return tpl


def resources(tpl, kind):
    return {name: r for name, r in tpl["Resources"].items() if r["Type"] == kind}


def as_list(x):
    return x if isinstance(x, list) else [x]


def role_statements(tpl):
    for name, role in resources(tpl, "AWS::IAM::Role").items():
        for policy in role["Properties"].get("Policies", []):
            for st in policy["PolicyDocument"]["Statement"]:
                yield name, st


def refers_to_own(value, tpl):
    """True when an IAM Resource names something this stack defines (or the
    image repository it is given): Ref, Fn::GetAtt or Fn::Sub of a resource."""
    own = set(tpl["Resources"]) | {"ImageRepositoryArn"}
    if isinstance(value, dict):
        if "Ref" in value:
            return value["Ref"] in own
        if "Fn::GetAtt" in value:
            target = value["Fn::GetAtt"]
            name = target[0] if isinstance(target, list) else target.split(".")[0]
            return name in own
        if "Fn::Sub" in value:
            text = value["Fn::Sub"] if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"][0]
            names = re.findall(r"\$\{([A-Za-z0-9]+)[.}]", text)
            return bool(names) and all(n in own for n in names)
    return False


def test_no_wildcard_actions_and_every_resource_is_the_stacks_own(template):
    statements = list(role_statements(template))
    assert statements
    for role, st in statements:
        if st["Effect"] != "Allow":
            continue
        for action in as_list(st["Action"]):
            assert "*" not in action, f"{role}: wildcard action {action}"
        for res in as_list(st["Resource"]):
            if res == "*":
                # The one action AWS does not let us scope.
                assert as_list(st["Action"]) == ["ecr:GetAuthorizationToken"], f"{role}: {st}"
            else:
                assert refers_to_own(res, template), f"{role}: resource {res} is not the stack's own"


def test_each_service_role_has_only_what_it_needs(template):
    def actions(role):
        return {a for r, st in role_statements(template) if r == role for a in as_list(st["Action"])}

    ingress = actions("IngressTaskRole")
    assert {"sqs:SendMessage", "secretsmanager:GetSecretValue"} <= ingress
    assert not any(a.startswith("dynamodb:") for a in ingress), "the ingress never touches the tables"
    assert "sqs:ReceiveMessage" not in ingress and "sqs:DeleteMessage" not in ingress

    worker = actions("WorkerTaskRole")
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
            "dynamodb:UpdateItem", "dynamodb:PutItem"} <= worker
    assert "secretsmanager:GetSecretValue" not in worker, "the worker needs no secret"
    assert "dynamodb:DeleteItem" not in worker and "dynamodb:Scan" not in worker

    operator = actions("OperatorRole")
    assert {"sqs:StartMessageMoveTask", "sqs:ListMessageMoveTasks", "sqs:SendMessage"} <= operator
    assert "dynamodb:PutItem" not in operator, "operators read the tables, never write them"

    for execution in ("IngressExecutionRole", "WorkerExecutionRole"):
        assert actions(execution) <= {"ecr:GetAuthorizationToken", "ecr:BatchGetImage",
                                      "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability",
                                      "logs:CreateLogStream", "logs:PutLogEvents"}


def settings_read_by(binary):
    """Environment variables a binary reads: its own settings file plus the
    shared groups in crates/core/src/settings.rs; AWS_* come from the SDK."""
    files = [ROOT / "crates/core/src/settings.rs", ROOT / f"crates/{binary}/src/settings.rs"]
    names = set()
    for f in files:
        names |= set(re.findall(r'env = "([A-Z0-9_]+)"', f.read_text()))
    assert names, files
    return names


def container(template, task):
    (c,) = resources(template, "AWS::ECS::TaskDefinition")[task]["Properties"]["ContainerDefinitions"]
    return c


@pytest.mark.parametrize("task,binary,required", [
    ("IngressTaskDefinition", "ingress", {"APP_ENV", "QUEUE_URL", "STRIPE_WEBHOOK_SECRET_ID"}),
    ("WorkerTaskDefinition", "worker", {"APP_ENV", "QUEUE_URL", "DLQ_URL", "EVENTS_TABLE_NAME",
                                        "OBJECTS_TABLE_NAME", "PROVIDER_TABLE_NAME", "MAX_RECEIVES",
                                        "SHUTDOWN_GRACE_SECS"}),
])
def test_task_environment_matches_what_the_service_reads(template, task, binary, required):
    c = container(template, task)
    env = {e["Name"]: e["Value"] for e in c["Environment"]}
    known = settings_read_by(binary)
    for name in env:
        assert name in known or name.startswith("AWS_"), f"{task}: {name} is not read by hookline-{binary}"
    assert required <= set(env), f"{task} lacks {required - set(env)}"
    assert env["APP_ENV"] == "production"
    # Secrets come from Secrets Manager by id, never as values.
    assert "STRIPE_WEBHOOK_SECRET" not in env and "STRIPE_SECRET_KEY" not in env
    assert c["Command"] == [f"hookline-{binary}"]
    assert c["ReadonlyRootFilesystem"] is True
    assert c["User"] != "0" and c["User"] != "root"


def test_worker_stop_timeout_covers_the_shutdown_grace(template):
    grace = int(template["Parameters"]["ShutdownGraceSecs"]["Default"])
    stop = container(template, "WorkerTaskDefinition")["StopTimeout"]
    assert stop >= grace + 5
    assert int(template["Parameters"]["ShutdownGraceSecs"]["MaxValue"]) + 5 <= 120, "Fargate caps stopTimeout at 120 s"


def test_queue_redrive_and_worker_agree_on_max_receives(template):
    q = resources(template, "AWS::SQS::Queue")["Queue"]["Properties"]
    assert q["RedrivePolicy"]["maxReceiveCount"] == {"Ref": "MaxReceives"}
    env = {e["Name"]: e["Value"] for e in container(template, "WorkerTaskDefinition")["Environment"]}
    assert env["MAX_RECEIVES"] == {"Ref": "MaxReceives"}


def test_signature_failure_alarm_watches_what_the_ingress_logs(template):
    alarms = resources(template, "AWS::CloudWatch::Alarm")
    alarm = alarms["StripeWebhookAuthFailures"]["Properties"]
    assert alarm["MetricName"] == "StripeWebhookAuthFailures"
    assert alarm["AlarmActions"] == [{"Ref": "AlarmTopicArn"}]
    (flt,) = [f["Properties"] for f in resources(template, "AWS::Logs::MetricFilter").values()
              if f["Properties"]["MetricTransformations"][0]["MetricName"] == "StripeWebhookAuthFailures"]
    assert flt["LogGroupName"] == {"Ref": "IngressLogGroup"}
    message = re.search(r'\$\.message = "([^"]+)"', flt["FilterPattern"]).group(1)
    source = (ROOT / "crates/ingress/src/app.rs").read_text()
    assert f'message = "{message}"' in source, "the filter matches the ingress's log line"
    names = {a["Properties"]["MetricName"] for a in alarms.values() if "MetricName" in a["Properties"]}
    assert {"ApproximateNumberOfMessagesVisible", "ApproximateAgeOfOldestMessage", "WorkerErrors"} <= names
    assert "LoadBalancer5xx" in alarms


def test_encryption_at_rest_and_in_transit(template):
    for name, q in resources(template, "AWS::SQS::Queue").items():
        assert "KmsMasterKeyId" in q["Properties"], name
    for name, t in resources(template, "AWS::DynamoDB::Table").items():
        p = t["Properties"]
        assert p["SSESpecification"]["SSEEnabled"] is True, name
        assert p["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True, name
        assert p["BillingMode"] == "PAY_PER_REQUEST", name
    for name, s in resources(template, "AWS::SecretsManager::Secret").items():
        assert "KmsKeyId" in s["Properties"], name
    for name, g in resources(template, "AWS::Logs::LogGroup").items():
        assert "KmsKeyId" in g["Properties"] and "RetentionInDays" in g["Properties"], name
    https = resources(template, "AWS::ElasticLoadBalancingV2::Listener")["HttpsListener"]["Properties"]
    assert https["SslPolicy"].startswith("ELBSecurityPolicy-TLS13-1-2")
    http = resources(template, "AWS::ElasticLoadBalancingV2::Listener")["HttpRedirectListener"]["Properties"]
    assert http["DefaultActions"][0]["Type"] == "redirect"


def test_tables_have_the_spec_keys_and_ttl(template):
    tables = resources(template, "AWS::DynamoDB::Table")
    keys = {n: t["Properties"]["KeySchema"][0]["AttributeName"] for n, t in tables.items()}
    assert keys == {"EventsTable": "eventId", "ObjectsTable": "objectId", "ProviderTable": "stripeAccountId"}
    ttl = tables["EventsTable"]["Properties"]["TimeToLiveSpecification"]
    assert ttl == {"AttributeName": "expiresAt", "Enabled": True}
    defaults = {p: template["Parameters"][p]["Default"] for p in
                ("EventsTableName", "ObjectsTableName", "ProviderTableName")}
    assert defaults == {"EventsTableName": "hookline-events", "ObjectsTableName": "hookline-objects",
                        "ProviderTableName": "Provider"}
