"""Deploys infra/hookline.yaml to moto's CloudFormation (in-process) and
checks what it created: queues, tables, roles and their policies, task
definitions, the load balancer's listener, rule and health check, security
groups, the EventBridge bus and rule.

moto creates most of the stack's resource types. It cannot create
AWS::SQS::QueueInlinePolicy, AWS::SecretsManager::Secret and
AWS::S3::BucketPolicy (it skips them with a warning): the queue policies are
checked on the template instead (test_templates.py), and these tests pass
existing secrets (the README's recommended flow), which moto's Secrets
Manager holds. moto drops DestinationSecurityGroupId from inline egress
rules (the load balancer's egress is checked on the template). moto also reads a partner event bus name (which contains
slashes, aws.partner/stripe.com/...) as if it were an ARN when a rule names
it; the fixture below makes it read names as EventBridge does. moto keeps
an AWS::NoValue element of a task's container list as null, where
CloudFormation drops it; the fixture drops it too.
"""

import ast
import json
import pathlib
import warnings

import boto3
import pytest
from moto import mock_aws

ROOT = pathlib.Path(__file__).resolve().parents[2]
TEMPLATE = (ROOT / "infra" / "hookline.yaml").read_text()
REGION = "us-east-1"
SOURCE = "aws.partner/stripe.com/ed_test_61MoqxHLgUG5tbmjc"


@pytest.fixture
def aws(monkeypatch):
    from moto.events import models as events_models

    def normalize(self, bus):
        if bus is None:
            return "default"
        return bus.split(":event-bus/", 1)[1] if bus.startswith("arn:") else bus

    monkeypatch.setattr(events_models.EventsBackend, "_normalize_event_bus_arn", normalize)

    # CloudFormation drops a list element that is AWS::NoValue (the tracing
    # sidecar of a stack without tracing); moto passes it on as null and
    # its ECS refuses the task definition.
    from moto.ecs import models as ecs_models

    register = ecs_models.EC2ContainerServiceBackend.register_task_definition

    def register_without_novalue(self, family, container_definitions, *args, **kwargs):
        kept = [c for c in container_definitions if c is not None]
        return register(self, family, kept, *args, **kwargs)

    monkeypatch.setattr(ecs_models.EC2ContainerServiceBackend, "register_task_definition",
                        register_without_novalue)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with warnings.catch_warnings(), mock_aws():
        warnings.simplefilter("ignore")
        yield lambda service: boto3.client(service, region_name=REGION)


def network(aws):
    ec2 = aws("ec2")
    # Not 10.0.0.0/8: the load balancer must reach the tasks in any VPC.
    vpc = ec2.create_vpc(CidrBlock="172.16.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"172.16.{i}.0/24")["Subnet"]["SubnetId"]
               for i in (1, 2)]
    return vpc, ",".join(subnets)


def deploy(aws, **extra):
    vpc, subnets = network(aws)
    params = {
        "ImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/hookline:1",
        "ImageRepositoryArn": "arn:aws:ecr:us-east-1:123456789012:repository/hookline",
        "VpcId": vpc,
        "PrivateSubnetIds": subnets,
        "AlarmTopicArn": "arn:aws:sns:us-east-1:123456789012:hookline-alarms",
        "OperatorPrincipalArn": "arn:aws:iam::123456789012:role/oncall",
    }
    if extra.get("IngressEnabled", "true") == "true":
        cert = aws("acm").request_certificate(DomainName="hooks.example.com")["CertificateArn"]
        params.update(PublicSubnetIds=subnets, CertificateArn=cert)
    params.update(extra)
    cf = aws("cloudformation")
    cf.create_stack(
        StackName="hookline",
        TemplateBody=TEMPLATE,
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
        Capabilities=["CAPABILITY_IAM"],
    )
    stack = cf.describe_stacks(StackName="hookline")["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    created = {r["LogicalResourceId"]: r
               for r in cf.list_stack_resources(StackName="hookline")["StackResourceSummaries"]}
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    return created, outputs


def existing_secrets(aws):
    sm = aws("secretsmanager")
    webhook = sm.create_secret(Name="prod/stripe/webhook", SecretString="whsec_test_created_before_the_stack")["ARN"]
    api_key = sm.create_secret(Name="prod/stripe/api-key", SecretString="rk_test_fakeRestrictedKey")["ARN"]
    return webhook, api_key


def role_policy(aws, logical, created):
    iam = aws("iam")
    name = created[logical]["PhysicalResourceId"]
    statements = []
    for policy in iam.list_role_policies(RoleName=name)["PolicyNames"]:
        doc = iam.get_role_policy(RoleName=name, PolicyName=policy)["PolicyDocument"]
        if isinstance(doc, str):
            # moto keeps a CloudFormation-created policy as Python's repr.
            try:
                doc = json.loads(doc)
            except json.JSONDecodeError:
                doc = ast.literal_eval(doc)
        # moto leaves an `!If` that chose AWS::NoValue as null.
        statements += [s for s in doc["Statement"] if s]
    return statements


def env_of(aws, created, logical):
    arn = created[logical]["PhysicalResourceId"]
    td = aws("ecs").describe_task_definition(taskDefinition=arn)["taskDefinition"]
    # moto keeps an AWS::NoValue list element as null; CloudFormation drops it.
    (c,) = [c for c in td["containerDefinitions"] if c and c.get("name") != "otel-collector"]
    return {e["name"]: e["value"] for e in c["environment"] if e is not None}


def test_the_stack_deploys_with_existing_secrets(aws):
    webhook, api_key = existing_secrets(aws)
    signing = aws("secretsmanager").create_secret(
        Name="prod/hookline/billing-signing", SecretString="whsec_test_destinationSigning")["ARN"]
    bus = "arn:aws:events:us-east-1:123456789012:event-bus/payments"
    routes = ('[[destination]]\nname = "billing"\nkind = "http"\nevents = ["*"]\n'
              'url = "https://billing.internal/stripe"\nsigning_secret_id = "%s"\n\n'
              '[[destination]]\nname = "bus"\nkind = "eventbridge"\nevents = ["*"]\nbus = "%s"\n'
              % (signing, bus))
    created, outputs = deploy(aws, WebhookSecretArn=webhook, StripeApiKeySecretArn=api_key,
                              Routes=routes, DestinationSecretArns=signing,
                              DestinationEventBusArns=bus,
                              DestinationEgressCidr="10.20.0.0/16")

    # Queues: redrive, and room for an event of MAX_BODY_BYTES plus attributes.
    sqs = aws("sqs")
    for url in (outputs["QueueUrl"], outputs["DeadLetterQueueUrl"]):
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert int(attrs["MaximumMessageSize"]) == 1048576, url
    attrs = sqs.get_queue_attributes(QueueUrl=outputs["QueueUrl"], AttributeNames=["All"])["Attributes"]
    assert json.loads(attrs["RedrivePolicy"])["maxReceiveCount"] == 5

    # Tables with the contract's keys.
    ddb = aws("dynamodb")
    keys = {}
    for logical in ("EventsTable", "ObjectsTable", "ProviderTable"):
        t = ddb.describe_table(TableName=created[logical]["PhysicalResourceId"])["Table"]
        keys[logical] = t["KeySchema"][0]["AttributeName"]
    assert keys == {"EventsTable": "eventId", "ObjectsTable": "objectId", "ProviderTable": "stripeAccountId"}

    # The audit trail (on by default): its bucket and log group, encrypted
    # with the stack's key and kept AuditLogRetentionDays, and the alarm's
    # trail's role. (moto's CloudFormation skips AWS::CloudTrail::Trail, the
    # AWS::Config types, metric filters and alarms, and drops the bucket's
    # versioning and lifecycle rules and the log group's key; the template
    # tests check those.)
    s3 = aws("s3")
    bucket = created["AuditBucket"]["PhysicalResourceId"]
    (sse,) = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert sse["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    logs = aws("logs")
    (group,) = logs.describe_log_groups(logGroupNamePrefix="/hookline/hookline/audit")["logGroups"]
    assert group["retentionInDays"] == 365
    role = created["AuditTrailLogsRole"]["PhysicalResourceId"]
    trust = aws("iam").get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]
    assert "cloudtrail.amazonaws.com" in json.dumps(trust)

    # The given secrets are what the task and the roles use; none is created.
    assert "WebhookSecret" not in created and "StripeApiKeySecret" not in created
    assert env_of(aws, created, "IngressTaskDefinition")["STRIPE_WEBHOOK_SECRET_ID"] == webhook
    reads = [s for s in role_policy(aws, "IngressTaskRole", created)
             if "secretsmanager:GetSecretValue" in s["Action"]]
    assert [s["Resource"] for s in reads] == [webhook]
    operator = [s for s in role_policy(aws, "OperatorRole", created)
                if "secretsmanager:GetSecretValue" in s["Action"]]
    # The API key (backfill), never the webhook secret (it would let an
    # operator forge signed events).
    assert operator[0]["Resource"] in (api_key, [api_key]), operator
    assert outputs["WebhookSecretArn"] == webhook
    # Given an existing API key, the worker reads it (thin events,
    # same-second events), and that secret alone: never the webhook secret.
    worker = role_policy(aws, "WorkerTaskRole", created)
    worker_reads = [s["Resource"] for s in worker if "secretsmanager:GetSecretValue" in s["Action"]]
    flat = [r for x in worker_reads for r in (x if isinstance(x, list) else [x])]
    assert flat == [api_key, signing], "the API key and the destinations' signing secrets, nothing else"
    puts = [s["Resource"] for s in worker if "events:PutEvents" in s["Action"]]
    assert puts in ([bus], [[bus]]), "PutEvents on the named bus only"
    assert env_of(aws, created, "WorkerTaskDefinition")["STRIPE_SECRET_KEY_ID"] == api_key
    # The routes document reaches the worker as ROUTES. (moto creates no
    # AWS::EC2::SecurityGroupEgress: the egress rule is checked on the
    # template, test_templates.py.)
    assert env_of(aws, created, "WorkerTaskDefinition")["ROUTES"] == routes

    # Metrics as EMF lines, and the webhook path, in the tasks' settings.
    for task in ("IngressTaskDefinition", "WorkerTaskDefinition"):
        env = env_of(aws, created, task)
        assert env["EMF_NAMESPACE"] == "Hookline" and env["EMF_INTERVAL_SECS"] == "60"
    assert env_of(aws, created, "IngressTaskDefinition")["WEBHOOK_PATH"] == "/api/stripe-webhook"

    # Load balancer: health on /healthz, only the webhook forwarded.
    elb = aws("elbv2")
    tg = elb.describe_target_groups(TargetGroupArns=[created["TargetGroup"]["PhysicalResourceId"]])["TargetGroups"][0]
    assert tg["HealthCheckPath"] == "/healthz"
    listener = created["HttpsListener"]["PhysicalResourceId"]
    (l,) = elb.describe_listeners(ListenerArns=[listener])["Listeners"]
    assert l["DefaultActions"][0]["Type"] == "fixed-response"
    assert l["DefaultActions"][0]["FixedResponseConfig"]["StatusCode"] == "404"
    rules = [r for r in elb.describe_rules(ListenerArn=listener)["Rules"] if not r.get("IsDefault")]
    assert len(rules) == 1
    paths = [c for c in rules[0]["Conditions"] if c["Field"] == "path-pattern"]
    assert paths[0]["PathPatternConfig"]["Values"] == ["/api/stripe-webhook"]
    assert rules[0]["Actions"][0]["Type"] == "forward"

    # Security groups: the tasks' port is reached by group reference only.
    ec2 = aws("ec2")
    ingress_sg = created["IngressSecurityGroup"]["PhysicalResourceId"]
    lb_sg = created["LoadBalancerSecurityGroup"]["PhysicalResourceId"]
    groups = {g["GroupId"]: g for g in ec2.describe_security_groups(GroupIds=[ingress_sg, lb_sg])["SecurityGroups"]}
    (rule,) = [p for p in groups[ingress_sg]["IpPermissions"] if p.get("FromPort") == 8080]
    assert rule["IpRanges"] == [] and [u["GroupId"] for u in rule["UserIdGroupPairs"]] == [lb_sg]
    # (moto drops DestinationSecurityGroupId from an inline egress rule, so
    # the load balancer's egress by reference is checked on the template.)

    # The operator's export lines name what the stack created.
    line = outputs["OperatorEnvironment"]
    for part in (f"QUEUE_URL={outputs['QueueUrl']}", f"DLQ_URL={outputs['DeadLetterQueueUrl']}",
                 f"EVENTS_TABLE_NAME={created['EventsTable']['PhysicalResourceId']}", "AWS_REGION=us-east-1",
                 f"STRIPE_SECRET_KEY_ID={outputs['StripeApiKeySecretArn']}",
                 f"STRIPE_WEBHOOK_SECRET_ID={outputs['WebhookSecretArn']}"):
        assert part in line, line
    assert aws("cloudwatch").get_dashboard(DashboardName=outputs["DashboardName"])["DashboardBody"]


def test_eventbridge_alone_creates_no_load_balancer(aws):
    events = aws("events")
    events.create_partner_event_source(Name=SOURCE, Account="123456789012")
    created, outputs = deploy(aws, IngressEnabled="false", StripeEventSourceName=SOURCE)
    for logical in ("LoadBalancer", "TargetGroup", "HttpsListener", "IngressService",
                    "IngressTaskDefinition", "LoadBalancerSecurityGroup", "AccessLogBucket", "WebhookSecret"):
        assert logical not in created, logical
    assert "WebhookUrl" not in outputs
    assert aws("elbv2").describe_load_balancers()["LoadBalancers"] == []

    bus = events.describe_event_bus(Name=SOURCE)
    assert bus["Name"] == SOURCE
    (rule,) = events.list_rules(EventBusName=SOURCE)["Rules"]
    pattern = json.loads(rule["EventPattern"])
    assert pattern["source"] == [{"prefix": "aws.partner/stripe.com"}]
    assert "detail-type" not in pattern, "the worker applies ENABLED_EVENTS, wildcards included"
    (target,) = events.list_targets_by_rule(Rule=rule["Name"], EventBusName=SOURCE)["Targets"]
    queue_arn = aws("sqs").get_queue_attributes(
        QueueUrl=outputs["QueueUrl"], AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    assert target["Arn"] == queue_arn
    assert outputs["EventBusName"] == SOURCE


def test_without_the_audit_trail_nothing_of_it_is_created(aws):
    webhook, api_key = existing_secrets(aws)
    created, _ = deploy(aws, WebhookSecretArn=webhook, StripeApiKeySecretArn=api_key, EnableAuditTrail="false")
    for logical in ("AuditBucket", "AuditLogGroup", "AuditTrailLogsRole", "ApiKeyReadMetricFilter",
                    "WebhookSecretDecryptMetricFilter", "SecretReadByOtherPrincipal", "ConfigRole"):
        assert logical not in created, logical
    assert not aws("logs").describe_log_groups(logGroupNamePrefix="/hookline/hookline/audit")["logGroups"]
    assert not aws("cloudwatch").describe_alarms(AlarmNames=["hookline-SecretReadByOtherPrincipal"])["MetricAlarms"]
    assert "WorkerService" in created, "the rest of the stack is there"


def test_tracing_deploys_a_collector_beside_each_service(aws):
    webhook, api_key = existing_secrets(aws)
    created, outputs = deploy(aws, WebhookSecretArn=webhook, StripeApiKeySecretArn=api_key,
                              EnableTracing="true", TraceSamplingRatio="0.25")
    ecs = aws("ecs")
    for logical, service in (("IngressTaskDefinition", "hookline-ingress"),
                             ("WorkerTaskDefinition", "hookline-worker")):
        arn = created[logical]["PhysicalResourceId"]
        td = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
        names = sorted(c["name"] for c in td["containerDefinitions"] if c)
        assert names == sorted([service.removeprefix("hookline-"), "otel-collector"]), names
        assert str(td["memory"]) == "1024"
        env = env_of(aws, created, logical)
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4318"
        assert env["OTEL_SERVICE_NAME"] == service
        assert env["OTEL_TRACES_SAMPLER_ARG"] == "0.25"
    for role in ("IngressTaskRole", "WorkerTaskRole"):
        actions = {a for st in role_policy(aws, role, created) for a in
                   (st["Action"] if isinstance(st["Action"], list) else [st["Action"]])}
        assert {"xray:PutTraceSegments", "xray:PutTelemetryRecords"} <= actions, role
    assert "TRACE_URL_TEMPLATE='https://us-east-1.console.aws.amazon.com/" in outputs["OperatorEnvironment"]


def test_without_tracing_no_collector_and_no_trace_writes(aws):
    webhook, api_key = existing_secrets(aws)
    created, outputs = deploy(aws, WebhookSecretArn=webhook, StripeApiKeySecretArn=api_key)
    ecs = aws("ecs")
    arn = created["WorkerTaskDefinition"]["PhysicalResourceId"]
    td = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
    assert [c["name"] for c in td["containerDefinitions"] if c] == ["worker"]
    assert not any(k.startswith("OTEL_") for k in env_of(aws, created, "WorkerTaskDefinition"))
    for role in ("IngressTaskRole", "WorkerTaskRole"):
        for st in role_policy(aws, role, created):
            acts = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            assert not any(a.startswith("xray:") for a in acts), role
    assert "TRACE_URL_TEMPLATE" not in outputs["OperatorEnvironment"]
