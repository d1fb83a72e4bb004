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


def branches(value):
    """The values an `Fn::If` may take (AWS::NoValue left out), else the value."""
    if isinstance(value, dict) and "Fn::If" in value:
        out = []
        for branch in value["Fn::If"][1:]:
            out += branches(branch)
        return out
    if value == {"Ref": "AWS::NoValue"}:
        return []
    return [value]


def role_statements(tpl):
    for name, role in resources(tpl, "AWS::IAM::Role").items():
        for policy in role["Properties"].get("Policies", []):
            for st in policy["PolicyDocument"]["Statement"]:
                for one in branches(st):
                    yield name, one


def refers_to_own(value, tpl):
    """True when an IAM Resource names something this stack defines (or the
    image repository it is given): Ref, Fn::GetAtt or Fn::Sub of a resource."""
    # Resources the operator hands the stack: the image repository, and
    # secrets (and their key) created before the stack.
    own = set(tpl["Resources"]) | {"ImageRepositoryArn", "WebhookSecretArn",
                                   "StripeApiKeySecretArn", "SecretsKmsKeyArn",
                                   "DestinationSecretArns", "DestinationEventBusArns"}
    if isinstance(value, dict) and "Fn::If" in value:
        options = branches(value)
        return bool(options) and all(refers_to_own(v, tpl) for v in options)
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
        for res in [r for item in as_list(st["Resource"]) for r in branches(item)]:
            if res == "*":
                # The actions AWS does not let us scope.
                assert as_list(st["Action"]) in (
                    ["ecr:GetAuthorizationToken"],
                    ["xray:PutTraceSegments", "xray:PutTelemetryRecords"],
                ), f"{role}: {st}"
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
    worker_reads = [st["Resource"] for r, st in role_statements(template)
                    if r == "WorkerTaskRole" and "secretsmanager:GetSecretValue" in as_list(st["Action"])]
    assert worker_reads == [{"Ref": "StripeApiKeySecretArn"}, {"Ref": "DestinationSecretArns"}], \
        "the worker reads the API key and the destinations' signing secrets the operator gave, never the webhook secret"
    deletes = [st for r, st in role_statements(template)
               if r == "WorkerTaskRole" and "dynamodb:DeleteItem" in as_list(st["Action"])]
    assert len(deletes) == 1, "the worker deletes only to erase an account that left"
    scans = [st for r, st in role_statements(template)
             if r == "WorkerTaskRole" and "dynamodb:Scan" in as_list(st["Action"])]
    assert scans == deletes, "the worker scans only to erase an account that left"
    conditions = template["Conditions"]
    assert conditions["ErasesOnDeauthorize"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "EraseOnDeauthorizeDays"}, ""]}]}
    puts = [st["Resource"] for r, st in role_statements(template)
            if r == "WorkerTaskRole" and "events:PutEvents" in as_list(st["Action"])]
    assert puts == [{"Ref": "DestinationEventBusArns"}], "PutEvents on the named buses only"
    assert "events:PutEvents" not in actions("IngressTaskRole")

    operator = actions("OperatorRole")
    assert {"sqs:StartMessageMoveTask", "sqs:ListMessageMoveTasks", "sqs:SendMessage"} <= operator
    assert "dynamodb:PutItem" not in operator and "dynamodb:UpdateItem" not in operator, \
        "operators read the tables and erase from them, never write them"
    assert "dynamodb:Scan" in operator, "erase finds an account's items by a paced Scan"

    for execution in ("IngressExecutionRole", "WorkerExecutionRole"):
        assert actions(execution) <= {"ecr:GetAuthorizationToken", "ecr:BatchGetImage",
                                      "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability",
                                      "logs:CreateLogStream", "logs:PutLogEvents"}


def settings_read_by(binary):
    """Environment variables a binary reads: its own settings file plus the
    shared groups in crates/settings; AWS_* come from the SDK."""
    files = [ROOT / "crates/settings/src/lib.rs", ROOT / f"crates/{binary}/src/settings.rs"]
    names = set()
    for f in files:
        names |= set(re.findall(r'env = "([A-Z0-9_]+)"', f.read_text()))
    assert names, files
    return names


def containers(template, task):
    """A task's container definitions (each branch of an `Fn::If`)."""
    defs = resources(template, "AWS::ECS::TaskDefinition")[task]["Properties"]["ContainerDefinitions"]
    return [c for x in defs for c in branches(x)]


def container(template, task):
    """The service's own container (not the tracing sidecar)."""
    (c,) = [c for c in containers(template, task) if c["Name"] != "otel-collector"]
    return c


@pytest.mark.parametrize("task,binary,required", [
    ("IngressTaskDefinition", "ingress", {"APP_ENV", "QUEUE_URL", "STRIPE_WEBHOOK_SECRET_ID"}),
    ("WorkerTaskDefinition", "worker", {"APP_ENV", "QUEUE_URL", "DLQ_URL", "EVENTS_TABLE_NAME",
                                        "OBJECTS_TABLE_NAME", "PROVIDER_TABLE_NAME", "MAX_RECEIVES",
                                        "SHUTDOWN_GRACE_SECS"}),
])
def test_task_environment_matches_what_the_service_reads(template, task, binary, required):
    c = container(template, task)
    env = {e["Name"]: e["Value"] for x in c["Environment"] for e in branches(x)}
    known = settings_read_by(binary)
    for name in env:
        # OTEL_* are OpenTelemetry's standard variables, read by its SDK.
        assert name in known or name.startswith(("AWS_", "OTEL_")), f"{task}: {name} is not read by hookline-{binary}"
    assert required <= set(env), f"{task} lacks {required - set(env)}"
    assert {"EMF_NAMESPACE", "EMF_INTERVAL_SECS", "ENABLED_EVENTS"} <= set(env), "metrics reach CloudWatch"
    assert env["APP_ENV"] == "production"
    # Secrets come from Secrets Manager by id, never as values.
    assert "STRIPE_WEBHOOK_SECRET" not in env and "STRIPE_SECRET_KEY" not in env
    assert c["Command"] == [f"hookline-{binary}"]
    assert c["ReadonlyRootFilesystem"] is True
    assert c["User"] != "0" and c["User"] != "root"


def test_worker_stop_timeout_covers_the_shutdown_grace(template):
    """Every grace the parameter allows, not only its default, ends before
    ECS's SIGKILL: stopTimeout is at least the largest grace plus 5 s."""
    grace = template["Parameters"]["ShutdownGraceSecs"]
    stop = container(template, "WorkerTaskDefinition")["StopTimeout"]
    assert stop >= int(grace["MaxValue"]) + 5
    assert stop >= int(grace["Default"]) + 5
    assert stop <= 120, "Fargate caps stopTimeout at 120 s"


def test_queue_redrive_and_worker_agree_on_max_receives(template):
    q = resources(template, "AWS::SQS::Queue")["Queue"]["Properties"]
    assert q["RedrivePolicy"]["maxReceiveCount"] == {"Ref": "MaxReceives"}
    env = {e["Name"]: e["Value"] for x in container(template, "WorkerTaskDefinition")["Environment"]
           for e in branches(x)}
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
    source = (ROOT / "crates/ingress/src/webhook.rs").read_text()
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


# ---------------------------------------------------------------- the first deploy

def test_load_balancer_health_check_is_healthz(template):
    tg = resources(template, "AWS::ElasticLoadBalancingV2::TargetGroup")["TargetGroup"]["Properties"]
    # /readyz depends on the secret and the queue: a placeholder secret or a
    # blip would mark every task unhealthy.
    assert tg["HealthCheckPath"] == "/healthz"


def security_group_rules(template):
    """Every rule: (group, direction, rule), inline or a resource of its own."""
    for name, g in resources(template, "AWS::EC2::SecurityGroup").items():
        for r in g["Properties"].get("SecurityGroupIngress", []):
            yield name, "in", r
        for r in g["Properties"].get("SecurityGroupEgress", []):
            yield name, "out", r
    for kind, direction in (("AWS::EC2::SecurityGroupIngress", "in"), ("AWS::EC2::SecurityGroupEgress", "out")):
        for name, r in resources(template, kind).items():
            yield r["Properties"]["GroupId"]["Ref"], direction, r["Properties"]


def test_the_ingress_port_is_reached_by_security_group_reference(template):
    # Rules on a port given as a parameter (the destinations') are not the ingress's.
    on_port = [(g, d, r) for g, d, r in security_group_rules(template)
               if isinstance(r.get("FromPort"), int) and isinstance(r.get("ToPort"), int)
               and r["FromPort"] <= 8080 <= r["ToPort"] and r.get("IpProtocol") != "-1"]
    assert on_port
    for group, direction, rule in on_port:
        assert "CidrIp" not in rule and "CidrIpv6" not in rule, f"{group} {direction}: {rule}"
    refs = {(g, d): r.get("SourceSecurityGroupId") or r.get("DestinationSecurityGroupId") for g, d, r in on_port}
    assert refs[("IngressSecurityGroup", "in")] == {"Ref": "LoadBalancerSecurityGroup"}
    assert refs[("LoadBalancerSecurityGroup", "out")] == {"Ref": "IngressSecurityGroup"}


def test_only_the_webhook_path_is_forwarded(template):
    listeners = resources(template, "AWS::ElasticLoadBalancingV2::Listener")
    (default,) = listeners["HttpsListener"]["Properties"]["DefaultActions"]
    assert default["Type"] == "fixed-response"
    assert default["FixedResponseConfig"]["StatusCode"] == "404"
    (rule,) = resources(template, "AWS::ElasticLoadBalancingV2::ListenerRule").values()
    p = rule["Properties"]
    assert p["ListenerArn"] == {"Ref": "HttpsListener"}
    paths = [c["PathPatternConfig"]["Values"] for c in p["Conditions"] if c["Field"] == "path-pattern"]
    assert paths == [[{"Ref": "WebhookPath"}]]
    assert [a["Type"] for a in p["Actions"]] == ["forward"]
    env = {e["Name"]: e["Value"] for x in container(template, "IngressTaskDefinition")["Environment"] for e in branches(x)}
    assert env["WEBHOOK_PATH"] == {"Ref": "WebhookPath"}, "the ingress serves the path the rule forwards"


def test_queues_hold_an_event_of_max_body_bytes_plus_attributes(template):
    settings = (ROOT / "crates/ingress/src/settings.rs").read_text()
    max_body = int(re.search(r'env = "MAX_BODY_BYTES", default_value_t = ([0-9_]+)', settings)
                   .group(1).replace("_", ""))
    # Attributes: event_id, event_type, livemode, account, received_at, and
    # the DLQ's `error` (cut at 1 KiB), names and types included.
    attributes = 2048 + 1024
    for name, q in resources(template, "AWS::SQS::Queue").items():
        size = q["Properties"].get("MaximumMessageSize", 262144)
        assert max_body + attributes <= size <= 1048576, f"{name}: {size}"


def test_secret_parameters_are_what_tasks_and_policies_use(template):
    params = template["Parameters"]
    assert params["WebhookSecretArn"]["Default"] == "" and params["StripeApiKeySecretArn"]["Default"] == ""
    webhook = {"Fn::If": ["CreateWebhookSecret", {"Ref": "WebhookSecret"}, {"Ref": "WebhookSecretArn"}]}
    api_key = {"Fn::If": ["CreateApiKeySecret", {"Ref": "StripeApiKeySecret"}, {"Ref": "StripeApiKeySecretArn"}]}
    env = {e["Name"]: e["Value"] for x in container(template, "IngressTaskDefinition")["Environment"] for e in branches(x)}
    assert env["STRIPE_WEBHOOK_SECRET_ID"] == webhook
    ingress_reads = [st["Resource"] for r, st in role_statements(template)
                     if r == "IngressTaskRole" and "secretsmanager:GetSecretValue" in as_list(st["Action"])]
    assert ingress_reads == [webhook]
    operator_reads = [st["Resource"] for r, st in role_statements(template)
                      if r == "OperatorRole" and "secretsmanager:GetSecretValue" in as_list(st["Action"])]
    assert api_key in operator_reads[0]
    secrets = resources(template, "AWS::SecretsManager::Secret")
    assert secrets["WebhookSecret"]["Condition"] == "IngressCreatesWebhookSecret"
    assert secrets["StripeApiKeySecret"]["Condition"] == "CreateApiKeySecret"


# ---------------------------------------------------------------- EventBridge

def test_eventbridge_bus_rule_target_and_a_queue_policy_scoped_to_the_rule(template):
    bus = resources(template, "AWS::Events::EventBus")["PartnerEventBus"]
    assert bus["Condition"] == "UseEventBridge"
    assert bus["Properties"]["EventSourceName"] == {"Ref": "StripeEventSourceName"}
    rule = resources(template, "AWS::Events::Rule")["StripeEventsRule"]
    assert rule["Condition"] == "UseEventBridge"
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["source"] == [{"prefix": "aws.partner/stripe.com"}]
    # The types are the event destination's and the worker's call: a
    # detail-type list could not say "*" or "payout.*".
    assert "detail-type" not in pattern
    (target,) = rule["Properties"]["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["Queue", "Arn"]}
    policy = resources(template, "AWS::SQS::QueueInlinePolicy")["QueueTlsOnly"]["Properties"]
    assert policy["Queue"] == {"Ref": "Queue"}
    sends = [b for st in policy["PolicyDocument"]["Statement"] for b in branches(st)
             if b["Effect"] == "Allow"]
    assert len(sends) == 1
    (send,) = sends
    assert send["Principal"] == {"Service": "events.amazonaws.com"}
    assert send["Action"] == "sqs:SendMessage"
    assert send["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["StripeEventsRule", "Arn"]}}}
    # Only with EventBridge: the statement is conditional.
    (conditional,) = [st for st in policy["PolicyDocument"]["Statement"] if "Fn::If" in st]
    assert conditional["Fn::If"][0] == "UseEventBridge"


def test_ingress_disabled_creates_no_load_balancer_resources(template):
    for kind in ("AWS::ElasticLoadBalancingV2::LoadBalancer", "AWS::ElasticLoadBalancingV2::TargetGroup",
                 "AWS::ElasticLoadBalancingV2::Listener", "AWS::ElasticLoadBalancingV2::ListenerRule",
                 "AWS::S3::Bucket", "AWS::S3::BucketPolicy"):
        for name, r in resources(template, kind).items():
            if name.startswith("Audit"):
                continue  # the audit trail's bucket (see below)
            assert r.get("Condition") == "IngressOn", f"{name} is created without the ingress"
    for name in ("IngressService", "IngressTaskDefinition", "IngressTaskRole", "IngressExecutionRole",
                 "LoadBalancerSecurityGroup", "IngressSecurityGroup", "IngressFromLoadBalancer"):
        assert template["Resources"][name].get("Condition") == "IngressOn", name
    assert template["Outputs"]["WebhookUrl"].get("Condition") == "IngressOn"
    assert template["Parameters"]["CertificateArn"]["Default"] == ""
    assert template["Parameters"]["PublicSubnetIds"]["Default"] == ""


# ---------------------------------------------------------------- metrics

def emf_names(binary):
    source = (ROOT / f"crates/{binary}/src/metrics.rs").read_text()
    return set(re.findall(r'\(\s*"([A-Za-z]+)",\s*Reading::', source))


def test_alarms_and_dashboard_use_metrics_the_tasks_write(template):
    ingress, worker = emf_names("ingress"), emf_names("worker")
    assert {"SignatureFailures", "EnqueueFailures"} <= ingress
    assert {"EventsApplied", "EventsDeadLettered", "EventAge", "ConfigurationErrors"} <= worker
    alarms = resources(template, "AWS::CloudWatch::Alarm")
    emf_alarms = {n: a["Properties"] for n, a in alarms.items()
                  if a["Properties"].get("Namespace") == {"Ref": "MetricsNamespace"}}
    assert {"EnqueueFailures", "EventLagTooHigh", "WorkerConfigurationErrors"} <= set(emf_alarms)
    for name, a in emf_alarms.items():
        (dim,) = a["Dimensions"]
        service = dim["Value"]
        assert a["MetricName"] in {"ingress": ingress, "worker": worker}[service], name
    body = resources(template, "AWS::CloudWatch::Dashboard")["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"][0]
    for metric in ("SignatureFailures", "EnqueueFailures", "EventsApplied", "EventsDeadLettered", "EventAge"):
        assert f'"{metric}"' in body, metric


def test_operator_outputs_export_what_the_cli_reads(template):
    line, variables = template["Outputs"]["OperatorEnvironment"]["Value"]["Fn::Sub"]
    known = settings_read_by("worker")
    for name in re.findall(r"([A-Z_]+)=", line):
        assert name in known or name.startswith("AWS_"), name
    for name in ("QUEUE_URL", "DLQ_URL", "EVENTS_TABLE_NAME", "OBJECTS_TABLE_NAME", "PROVIDER_TABLE_NAME",
                 "AWS_REGION", "STRIPE_SECRET_KEY_ID"):
        assert f"{name}=" in line, name
    # keys status compares the webhook secret's version too (the CLI reads
    # the ingress's setting for it), when the stack has one.
    assert "${WebhookIdSetting}" in line
    with_ingress = variables["WebhookIdSetting"]["Fn::If"]
    assert with_ingress[0] == "IngressCreatesWebhookSecret"
    assert with_ingress[1] == {"Fn::Sub": " STRIPE_WEBHOOK_SECRET_ID=${WebhookSecret}"}
    assert "STRIPE_WEBHOOK_SECRET_ID" in settings_read_by("ingress")


def test_the_ingress_keeps_idle_connections_longer_than_the_alb(template):
    """The ALB must close an idle keep-alive connection before the ingress
    does; otherwise it may send a request on a connection the ingress is
    closing and answer Stripe 502."""
    attrs = resources(template, "AWS::ElasticLoadBalancingV2::LoadBalancer")["LoadBalancer"]["Properties"]
    alb_idle = int({a["Key"]: a["Value"] for a in attrs["LoadBalancerAttributes"]}["idle_timeout.timeout_seconds"])
    env = {e["Name"]: e["Value"] for x in container(template, "IngressTaskDefinition")["Environment"] for e in branches(x)}
    ingress_idle = int(env["KEEP_ALIVE_TIMEOUT_SECS"])
    assert alb_idle < ingress_idle
    header_read = re.search(r'env = "HEADER_READ_TIMEOUT_SECS", default_value_t = (\d+)',
                            (ROOT / "crates/ingress/src/settings.rs").read_text())
    assert header_read and int(header_read.group(1)) < alb_idle, "the header timer is the shorter one"


def test_only_hookline_principals_may_send_to_the_queue(template):
    """The worker trusts what is on the queue: a principal of the account
    with sqs:* in its own policy must still not be able to put an unsigned
    event there. The queue's policy denies SendMessage to everyone but the
    ingress, worker and operator roles and the Stripe rule."""
    policy = resources(template, "AWS::SQS::QueueInlinePolicy")["QueueTlsOnly"]["Properties"]["PolicyDocument"]
    (deny,) = [st for st in policy["Statement"] if st.get("Sid") == "OnlyHooklineSends"]
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*"
    assert deny["Action"] == "sqs:SendMessage"
    assert deny["Resource"] == {"Fn::GetAtt": ["Queue", "Arn"]}
    cond = deny["Condition"]["ArnNotEquals"]
    allowed = [b for v in cond["aws:PrincipalArn"] for b in branches(v)]
    assert allowed == [{"Fn::GetAtt": [r, "Arn"]} for r in ("IngressTaskRole", "WorkerTaskRole", "OperatorRole")]
    # Both keys in one block: denied only when the caller is none of the
    # roles AND the request is not from the rule.
    assert {"Fn::GetAtt": ["StripeEventsRule", "Arn"]} in branches(cond["aws:SourceArn"])
    # Every role that sends to the queue is one of those allowed.
    senders = {r for r, st in role_statements(template)
               if "sqs:SendMessage" in as_list(st["Action"])
               and {"Fn::GetAtt": ["Queue", "Arn"]} in as_list(st["Resource"])}
    assert senders == {"IngressTaskRole", "WorkerTaskRole", "OperatorRole"}


def test_the_eventbridge_key_grant_is_scoped_to_the_rule(template):
    key = resources(template, "AWS::KMS::Key")["Key"]["Properties"]["KeyPolicy"]
    grants = [b for st in key["Statement"] for b in branches(st)
              if b.get("Sid") == "EventBridgeSendsToEncryptedQueue"]
    (grant,) = grants
    arn = grant["Condition"]["ArnEquals"]["aws:SourceArn"]["Fn::Sub"]
    rule = resources(template, "AWS::Events::Rule")["StripeEventsRule"]["Properties"]
    assert rule["Name"] == {"Fn::Sub": "${AWS::StackName}-stripe-events"}
    assert arn.endswith(":rule/${StripeEventSourceName}/${AWS::StackName}-stripe-events"), arn
    assert arn.startswith("arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:"), arn


def test_the_operator_cannot_read_the_webhook_secret(template):
    """With the webhook secret an operator could sign events of their own;
    replay does not need it (backfill reads the API key)."""
    reads = [r for role, st in role_statements(template)
             if role == "OperatorRole" and "secretsmanager:GetSecretValue" in as_list(st["Action"])
             for r in as_list(st["Resource"])]
    flat = str(reads)
    assert "WebhookSecret" not in flat, reads
    assert "StripeApiKeySecret" in flat


# ---------------------------------------------------------------- Destinations

def test_routes_reach_the_worker_and_its_egress_is_the_destinations_only(template):
    env = [e for x in container(template, "WorkerTaskDefinition")["Environment"] for e in branches(x)]
    routes = [e for e in env if e["Name"] == "ROUTES"]
    assert routes == [{"Name": "ROUTES", "Value": {"Ref": "Routes"}}]
    assert template["Parameters"]["Routes"]["Default"] == ""
    egress = resources(template, "AWS::EC2::SecurityGroupEgress")
    assert set(egress) == {"WorkerToDestinationsCidr", "WorkerToDestinationsPrefixList"}
    for name, rule in egress.items():
        p = rule["Properties"]
        assert p["GroupId"] == {"Ref": "WorkerSecurityGroup"}
        assert p["FromPort"] == p["ToPort"] == {"Ref": "DestinationPort"}
        assert p.get("CidrIp") in (None, {"Ref": "DestinationEgressCidr"}), "never a blanket rule"
    assert egress["WorkerToDestinationsCidr"]["Condition"] == "HasDestinationCidr"
    assert egress["WorkerToDestinationsPrefixList"]["Properties"]["DestinationPrefixListId"] == {"Ref": "DestinationPrefixListId"}
    cidr = re.compile(template["Parameters"]["DestinationEgressCidr"]["AllowedPattern"])
    for ok in ("", "10.0.0.0/8", "203.0.113.7/32"):
        assert cidr.fullmatch(ok), ok
    for bad in ("10.0.0.0", "0.0.0.0/33", "example.com"):
        assert not cidr.fullmatch(bad), bad


def test_no_index_taxes_an_applied_event(template):
    """DynamoDB bills a write to every index whose key an item carries.
    Every ledger item carries its subject and many objects their account,
    so those tables have no index (erase scans them); the one index left
    is sparse: only an account that left carries its key."""
    tables = resources(template, "AWS::DynamoDB::Table")
    assert "GlobalSecondaryIndexes" not in tables["EventsTable"]["Properties"]
    assert "GlobalSecondaryIndexes" not in tables["ObjectsTable"]["Properties"]
    (gsi,) = tables["ProviderTable"]["Properties"]["GlobalSecondaryIndexes"]
    assert (gsi["IndexName"], [k["AttributeName"] for k in gsi["KeySchema"]], gsi["Projection"]) == \
        ("deauthorized-index", ["deauthorized", "deauthorizedAt"], {"ProjectionType": "KEYS_ONLY"})
    # The index the code queries is the one the stack creates, and the
    # code queries no other.
    dynamo = (ROOT / "crates/aws/src/dynamo.rs").read_text()
    assert '"deauthorized-index"' in dynamo
    assert "subject-index" not in dynamo and "account-index" not in dynamo
    assert "account.application.deauthorized" in template["Parameters"]["EnabledEvents"]["Default"]


# ---------------------------------------------------------------- Audit trail

def holds(tpl, params, condition):
    """Evaluates one of the template's conditions for the given parameters
    (the others at their defaults)."""
    def value(x):
        if isinstance(x, dict) and "Ref" in x:
            name = x["Ref"]
            if name in params:
                return params[name]
            v = tpl["Parameters"][name].get("Default", "")
            return ",".join(v) if isinstance(v, list) else str(v)
        if isinstance(x, dict) and "Fn::Join" in x:
            sep, parts = x["Fn::Join"]
            return sep.join(str(value(p)) for p in as_list(parts))
        return x

    def ev(c):
        if "Condition" in c:
            return ev(tpl["Conditions"][c["Condition"]])
        if "Fn::Equals" in c:
            a, b = c["Fn::Equals"]
            return str(value(a)) == str(value(b))
        if "Fn::Not" in c:
            return not ev(c["Fn::Not"][0])
        if "Fn::And" in c:
            return all(ev(x) for x in c["Fn::And"])
        if "Fn::Or" in c:
            return any(ev(x) for x in c["Fn::Or"])
        raise AssertionError(c)

    return ev(tpl["Conditions"][condition])


def created(tpl, **params):
    return {name for name, r in tpl["Resources"].items()
            if "Condition" not in r or holds(tpl, params, r["Condition"])}


AUDIT = {"AuditBucket", "AuditBucketPolicy", "AuditLogGroup", "AuditTrailLogsRole", "AuditTrail",
         "WebhookSecretReadMetricFilter", "WebhookSecretDecryptMetricFilter", "ApiKeyReadMetricFilter",
         "ApiKeyDecryptMetricFilter", "SecretReadByOtherPrincipal", "ConfigRole", "ConfigRecorder",
         "ConfigDeliveryChannel", "ConfigRecorderReady"}


def config_rules(tpl):
    return resources(tpl, "AWS::Config::ConfigRule")


def test_the_audit_trail_is_on_by_default_and_each_parameter_turns_its_part_off(template):
    rules = set(config_rules(template))
    assert template["Parameters"]["EnableAuditTrail"]["Default"] == "true"
    on = created(template)
    assert AUDIT | rules <= on, sorted((AUDIT | rules) - on)

    off = created(template, EnableAuditTrail="false")
    assert not (AUDIT | rules) & off, sorted((AUDIT | rules) & off)
    assert on - off == AUDIT | rules, "nothing else depends on the audit trail"

    # An organization trail already delivers to a log group: no trail of
    # ours, the alarm reads that group; Config still records here.
    org = created(template, ExistingTrailLogGroupName="aws-controltower/CloudTrailLogs")
    assert not {"AuditTrail", "AuditLogGroup", "AuditTrailLogsRole"} & org
    assert {"SecretReadByOtherPrincipal", "ApiKeyReadMetricFilter", "ConfigRecorder", "AuditBucket"} <= org
    for name in ("WebhookSecretReadMetricFilter", "ApiKeyDecryptMetricFilter"):
        group = template["Resources"][name]["Properties"]["LogGroupName"]["Fn::If"]
        assert group[0] == "CreatesAuditTrail" and group[1] == {"Ref": "AuditLogGroup"}
        assert "${ExistingTrailLogGroupName}" in group[2]["Fn::Sub"]

    # Config already records in the account: the rules, not the recorder.
    no_recorder = created(template, CreateConfigRecorder="false")
    assert not {"ConfigRecorder", "ConfigDeliveryChannel", "ConfigRole"} & no_recorder
    assert rules <= no_recorder and "AuditTrail" in no_recorder
    both = created(template, CreateConfigRecorder="false", ExistingTrailLogGroupName="org")
    assert "AuditBucket" not in both and rules <= both and "SecretReadByOtherPrincipal" in both

    # Without the ingress there is no webhook secret to watch.
    assert not {"WebhookSecretReadMetricFilter", "WebhookSecretDecryptMetricFilter"} & created(
        template, IngressEnabled="false")


def test_the_trail_validates_its_files_and_records_secret_reads(template):
    trail = template["Resources"]["AuditTrail"]["Properties"]
    assert trail["EnableLogFileValidation"] is True and trail["IsLogging"] is True
    assert trail["IsMultiRegionTrail"] is True and trail["IncludeGlobalServiceEvents"] is True
    assert trail["KMSKeyId"] == {"Fn::GetAtt": ["Key", "Arn"]}
    assert trail["S3BucketName"] == {"Ref": "AuditBucket"}
    assert trail["CloudWatchLogsLogGroupArn"] == {"Fn::GetAtt": ["AuditLogGroup", "Arn"]}
    management, data = trail["AdvancedEventSelectors"]
    # GetSecretValue is a read-only management event: no readOnly filter.
    assert management["FieldSelectors"] == [{"Field": "eventCategory", "Equals": ["Management"]}]
    fields = {f["Field"]: f["Equals"] for f in data["FieldSelectors"]}
    assert fields["eventCategory"] == ["Data"] and fields["resources.type"] == ["AWS::DynamoDB::Table"]
    assert fields["resources.ARN"] == [{"Fn::GetAtt": [t, "Arn"]} for t in ("EventsTable", "ObjectsTable", "ProviderTable")]

    bucket = template["Resources"]["AuditBucket"]["Properties"]
    (sse,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert sse["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": {"Fn::GetAtt": ["Key", "Arn"]}}
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    (rule,) = bucket["LifecycleConfiguration"]["Rules"]
    assert rule["ExpirationInDays"] == {"Ref": "AuditLogRetentionDays"} and rule["NoncurrentVersionExpiration"]
    group = template["Resources"]["AuditLogGroup"]["Properties"]
    assert group["RetentionInDays"] == {"Ref": "AuditLogRetentionDays"} and group["KmsKeyId"]
    assert group["LogGroupName"] == {"Fn::Sub": "/hookline/${AWS::StackName}/audit"}


def test_the_bucket_and_key_admit_this_trail_only(template):
    trail_arn = "arn:${AWS::Partition}:cloudtrail:${AWS::Region}:${AWS::AccountId}:trail/${AWS::StackName}-audit"
    assert template["Resources"]["AuditTrail"]["Properties"]["TrailName"] == {"Fn::Sub": "${AWS::StackName}-audit"}
    statements = [b for st in template["Resources"]["AuditBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
                  for b in branches(st)]
    by_sid = {st["Sid"]: st for st in statements}
    acl, put = by_sid["CloudTrailChecksTheBucketAcl"], by_sid["CloudTrailWritesTheTrail"]
    for st in (acl, put):
        assert st["Principal"] == {"Service": "cloudtrail.amazonaws.com"}
        assert st["Condition"]["StringEquals"]["aws:SourceArn"] == {"Fn::Sub": trail_arn}
    assert as_list(put["Action"]) == ["s3:PutObject"]
    assert put["Condition"]["StringEquals"]["s3:x-amz-acl"] == "bucket-owner-full-control"
    prefix = template["Resources"]["AuditTrail"]["Properties"]["S3KeyPrefix"]
    assert put["Resource"] == {"Fn::Sub": "${AuditBucket.Arn}/" + prefix + "/AWSLogs/${AWS::AccountId}/*"}
    assert by_sid["DenyInsecureTransport"]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    deny = by_sid["DenyDeletingTheTrail"]
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*" and "s3:DeleteObject" in deny["Action"]
    assert not [st for st in statements if st["Effect"] == "Allow" and st.get("Principal") == "*"]

    key = [b for st in template["Resources"]["Key"]["Properties"]["KeyPolicy"]["Statement"] for b in branches(st)]
    (ct,) = [st for st in key if st.get("Principal") == {"Service": "cloudtrail.amazonaws.com"}]
    assert ct["Condition"]["StringEquals"]["aws:SourceArn"] == {"Fn::Sub": trail_arn}
    assert "kms:Decrypt" not in as_list(ct["Action"]), "CloudTrail encrypts; readers decrypt through IAM"


SAMPLE = {"AWS::Partition": "aws", "AWS::AccountId": "123456789012",
          "IngressTaskRole": "hookline-IngressTaskRole-1", "WorkerTaskRole": "hookline-WorkerTaskRole-1",
          "OperatorRole": "hookline-OperatorRole-1",
          "Secret": "arn:aws:secretsmanager:us-east-1:123456789012:secret:hookline/prod/webhook-AbCdEf"}


def filter_matches(pattern, event):
    """CloudWatch Logs' JSON filter semantics for the patterns used here:
    a conjunction of `($.path = "v")` / `($.path != "v")`, `*` a wildcard;
    a missing field fails an `=` and passes a `!=` only if present."""
    terms = re.findall(r'\(\$\.([\w.]+) (=|!=) "([^"]*)"\)', pattern)
    assert terms and pattern.count("&&") == len(terms) - 1, pattern
    for path, op, want in terms:
        v = event
        for part in path.split("."):
            v = v.get(part) if isinstance(v, dict) else None
        if v is None:
            return False
        hit = re.fullmatch(".*".join(map(re.escape, want.split("*"))), str(v)) is not None
        if hit != (op == "="):
            return False
    return True


def cloudtrail_event(source, name, caller, **request):
    return {"eventSource": source, "eventName": name, "requestParameters": request,
            "userIdentity": {"type": "AssumedRole",
                             "arn": f"arn:aws:sts::123456789012:assumed-role/{caller}/session"}}


def test_a_secret_read_by_anyone_but_its_readers_raises_the_alarm(template):
    res = template["Resources"]
    alarm = res["SecretReadByOtherPrincipal"]["Properties"]
    assert alarm["Threshold"] == 0 and alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["AlarmActions"] == [{"Ref": "AlarmTopicArn"}] and alarm["Period"] == 300
    readers = {"Webhook": ["IngressTaskRole"], "ApiKey": ["WorkerTaskRole", "OperatorRole"]}
    for secret, allowed in readers.items():
        for kind in ("Read", "Decrypt"):
            f = res[f"{secret}Secret{kind}MetricFilter" if secret == "Webhook" else f"ApiKey{kind}MetricFilter"]["Properties"]
            (mt,) = f["MetricTransformations"]
            assert (mt["MetricNamespace"], mt["MetricName"]) == (alarm["Namespace"], alarm["MetricName"])
            text, variables = f["FilterPattern"]["Fn::Sub"]
            assert len(text) < 1024
            pattern = re.sub(r"\$\{([\w:]+)\}", lambda m: SAMPLE[m.group(1)], text)
            arn = SAMPLE["Secret"]
            if kind == "Read":
                def read(caller, secret_id=arn):
                    return cloudtrail_event("secretsmanager.amazonaws.com", "GetSecretValue", caller, secretId=secret_id)
            else:
                def read(caller, secret_id=arn):
                    return cloudtrail_event("kms.amazonaws.com", "Decrypt", caller,
                                            encryptionContext={"SecretARN": secret_id})
            for role in allowed:
                assert not filter_matches(pattern, read(SAMPLE[role])), (secret, kind, role)
            others = {"IngressTaskRole", "WorkerTaskRole", "OperatorRole"} - set(allowed)
            for caller in ["oncall-admin", *(SAMPLE[o] for o in others)]:
                assert filter_matches(pattern, read(caller)), (secret, kind, caller)
            assert not filter_matches(pattern, read("oncall-admin", secret_id=arn.replace("webhook", "other")))
            source = {"Webhook": "WebhookSecret", "ApiKey": "StripeApiKeySecret"}[secret]
            assert {"Ref": source} in variables["Secret"]["Fn::If"]


def test_config_rules_cover_the_guides_checks(template):
    rules = {r["Properties"]["Source"]["SourceIdentifier"]: r for r in config_rules(template).values()}
    assert {"SECRETSMANAGER_ROTATION_ENABLED_CHECK", "IAM_POLICY_NO_STATEMENTS_WITH_ADMIN_ACCESS",
            "CLOUD_TRAIL_ENABLED", "CLOUD_TRAIL_LOG_FILE_VALIDATION_ENABLED",
            "DYNAMODB_TABLE_ENCRYPTED_KMS"} <= set(rules)
    for ident, r in rules.items():
        assert r["Properties"]["Source"]["Owner"] == "AWS", ident
        assert r["DependsOn"] == "ConfigRecorderReady", ident
    assert rules["DYNAMODB_TABLE_ENCRYPTED_KMS"]["Properties"]["InputParameters"] == {"kmsKeyArns": {"Fn::GetAtt": ["Key", "Arn"]}}
    ready = template["Resources"]["ConfigRecorderReady"]["Metadata"]
    assert ready["Recorder"]["Fn::If"][:2] == ["CreatesConfigRecorder", {"Ref": "ConfigRecorder"}]
    group = template["Resources"]["ConfigRecorder"]["Properties"]["RecordingGroup"]
    assert group == {"AllSupported": True, "IncludeGlobalResourceTypes": True}, "IAM changes are recorded"
    # The rotation rule's documented exception: the Stripe secrets say why.
    for secret in ("WebhookSecret", "StripeApiKeySecret"):
        tags = {t["Key"]: t["Value"] for t in template["Resources"][secret]["Properties"]["Tags"]}
        assert "Stripe dashboard" in tags["hookline:rotation"]


# ---------------------------------------------------------------- Tracing

@pytest.mark.parametrize("task,service", [
    ("IngressTaskDefinition", "hookline-ingress"),
    ("WorkerTaskDefinition", "hookline-worker"),
])
def test_tracing_adds_the_collector_beside_each_service_and_is_off_by_default(template, task, service):
    assert template["Parameters"]["EnableTracing"]["Default"] == "false"
    assert not holds(template, {}, "TracingOn")
    assert holds(template, {"EnableTracing": "true"}, "TracingOn")
    (sidecar,) = [c for c in containers(template, task) if c["Name"] == "otel-collector"]
    defs = resources(template, "AWS::ECS::TaskDefinition")[task]["Properties"]["ContainerDefinitions"]
    assert defs[1]["Fn::If"][0] == "TracingOn", "the sidecar exists only with tracing on"
    assert sidecar["Image"] == {"Ref": "CollectorImageUri"}
    assert "aws-otel-collector" in template["Parameters"]["CollectorImageUri"]["Default"]
    assert sidecar["Essential"] is False, "a collector that stops never stops the service"
    assert sidecar["ReadonlyRootFilesystem"] is True and sidecar["User"] not in ("0", "root")
    (config,) = [e["Value"] for e in sidecar["Environment"] if e["Name"] == "AOT_CONFIG_CONTENT"]
    assert "endpoint: 127.0.0.1:4318" in config, "OTLP on loopback only"
    assert "awsxray:" in config and "exporters: [awsxray]" in config
    assert "stripe.event_id" in config, "an event's trace is found by its id"

    app = container(template, task)
    env = {}
    for x in app["Environment"]:
        if isinstance(x, dict) and "Fn::If" in x:
            assert x["Fn::If"][0] != "TracingOn" or x["Fn::If"][2] == {"Ref": "AWS::NoValue"}
        for e in branches(x):
            env[e["Name"]] = e["Value"]
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4318"
    assert env["OTEL_SERVICE_NAME"] == service
    assert env["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    assert env["OTEL_TRACES_SAMPLER_ARG"] == {"Ref": "TraceSamplingRatio"}
    traced = [x["Fn::If"][1]["Name"] for x in app["Environment"]
              if isinstance(x, dict) and "Fn::If" in x and x["Fn::If"][0] == "TracingOn"]
    assert set(traced) == {n for n in env if n.startswith("OTEL_")}, "every OTEL_ setting only with tracing on"
    memory = resources(template, "AWS::ECS::TaskDefinition")[task]["Properties"]["Memory"]
    assert memory == {"Fn::If": ["TracingOn", "1024", "512"]}


def test_only_the_task_roles_may_write_traces_and_only_with_tracing_on(template):
    writers = {}
    for name, role in resources(template, "AWS::IAM::Role").items():
        for policy in role["Properties"].get("Policies", []):
            for st in policy["PolicyDocument"]["Statement"]:
                for one in branches(st):
                    if any(a.startswith("xray:") for a in as_list(one["Action"])):
                        assert st["Fn::If"][0] == "TracingOn", name
                        writers[name] = as_list(one["Action"])
    assert writers == {
        "IngressTaskRole": ["xray:PutTraceSegments", "xray:PutTelemetryRecords"],
        "WorkerTaskRole": ["xray:PutTraceSegments", "xray:PutTelemetryRecords"],
    }


def test_the_operator_environment_links_the_console_to_x_ray_with_tracing_on(template):
    line, variables = template["Outputs"]["OperatorEnvironment"]["Value"]["Fn::Sub"]
    assert "${TraceSetting}" in line
    condition, on, off = variables["TraceSetting"]["Fn::If"]
    assert condition == "TracingOn" and off == ""
    assert "TRACE_URL_TEMPLATE='https://${AWS::Region}.console.aws.amazon.com/" in on["Fn::Sub"]
    assert "{xray_trace_id}" in on["Fn::Sub"]
    console = (ROOT / "crates/cli/src/console/mod.rs").read_text()
    assert 'env = "TRACE_URL_TEMPLATE"' in console


def test_only_the_worker_and_the_rule_may_send_to_the_dlq(template):
    """`dlq replay` moves what is on the DLQ into the queue the worker
    trusts, so the DLQ's policy denies SendMessage to everyone but the
    worker (it dead-letters) and the Stripe rule (its own dead letters);
    SQS's redrive needs no permission."""
    policy = resources(template, "AWS::SQS::QueueInlinePolicy")["DeadLetterQueueRedriveAllow"]["Properties"]["PolicyDocument"]
    (deny,) = [st for st in policy["Statement"] if st.get("Sid") == "OnlyHooklineDeadLetters"]
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*"
    assert deny["Action"] == "sqs:SendMessage"
    assert deny["Resource"] == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    cond = deny["Condition"]["ArnNotEquals"]
    assert [b for b in branches(cond["aws:PrincipalArn"])] == [{"Fn::GetAtt": ["WorkerTaskRole", "Arn"]}]
    assert {"Fn::GetAtt": ["StripeEventsRule", "Arn"]} in branches(cond["aws:SourceArn"])
    senders = {r for r, st in role_statements(template)
               if "sqs:SendMessage" in as_list(st["Action"])
               and {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]} in as_list(st["Resource"])}
    assert senders == {"WorkerTaskRole"}


@pytest.mark.parametrize("value,ok", [
    ("*", True),
    ("payment_intent.succeeded,payout.*", True),
    ("v2.core.account.updated,v2.core.account[requirements].updated", True),
    ("v2.core.account[configuration.merchant].capability_status_updated", True),
    ("v2.core.*,account.application.deauthorized", True),
    ("payout.created, payout.updated", False),
    ("payout.created;drop", False),
    ("", False),
    ("payout.*.x", False),
])
def test_enabled_events_takes_every_form_the_services_take(template, value, ok):
    pattern = template["Parameters"]["EnabledEvents"]["AllowedPattern"]
    assert bool(re.fullmatch(pattern, value)) is ok, value
    assert re.fullmatch(pattern, template["Parameters"]["EnabledEvents"]["Default"])
