"""Deploy the synthesized CDK template (infra/cdk.out) into emulated CloudFormation and assert
what was deployed through the emulators' APIs (not the template's text).

Run by localstack/deploy-template.sh with the moto venv's Python (boto3 and moto are there).

Two emulators, because neither holds the whole stack:
- moto's CloudFormation (an in-process moto server on a free loopback port, private state)
  takes the stack: VPC + endpoints, Batch, ECR, Lambda (code from the assets bucket), IAM,
  S3 buckets, SQS, EventBridge, Logs.
- LocalStack community's CloudFormation ($POSTHUMAN_S3_ENDPOINT, the twins' LocalStack) takes
  what moto has no CloudFormation model for but LocalStack has: the operator key secret, the
  bucket policies and the queue policies, deployed with the buckets and queues they attach to.
- What neither emulates (API Gateway v2, CloudFront, the BucketDeployment custom resource,
  Lambda's EventInvokeConfig) is in SKIPPED below with the reason and the exact count; a
  template whose resources differ from that list fails here instead of shrinking the test.

The template is the one `cdk deploy` uploads (default synthesizer, assets in the bootstrap
bucket), split between the emulators; references across the split or to skipped resources
are listed in SUBSTITUTED. The environment is prepared the way `cdk bootstrap` +
scripts/deploy.sh leave a real account: the assets bucket holding the files
Posthuman.assets.json names (directories zipped, as the CLI publishes them), the bootstrap
version parameter, the address-book parameter that the stack reads but does not own.

Where moto departs from CloudFormation, the moto copy or moto itself is adjusted, each
printed at the end of a run: PATCHED properties AWS defaults but moto requires, Batch ARNs
by Ref instead of Fn::GetAtt (same value in AWS), lower-case generated ECR names, flow-log
S3 destinations with a folder, and instance types missing from moto's catalog. Bucket
properties an emulator's CloudFormation ignores are listed per emulator
(BUCKET_PROPS_APPLIED) and checked to be absent, so the list cannot go stale silently.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import socket
import sys
import time
import zipfile
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parent.parent
CDK_OUT = Path(os.environ.get("POSTHUMAN_CDK_OUT", ROOT / "infra" / "cdk.out"))
REGION = "us-east-1"
MOTO_ACCOUNT = "123456789012"  # moto's default account
WORKER_IMAGE_TAG = "0123456789abcdef0123456789abcdef01234567"
RPC_URL = "https://rpc.example.invalid"
ADDRESS_BOOK_PARAM = "/posthuman/address-book"

# Resource type -> (how many the template has, why it is not deployed anywhere here).
SKIPPED = {
    "AWS::ApiGatewayV2::Api": (1, "no emulator here: moto has no CloudFormation model, LocalStack's is paid"),
    "AWS::ApiGatewayV2::Integration": (2, "as ApiGatewayV2::Api"),
    "AWS::ApiGatewayV2::Route": (3, "as ApiGatewayV2::Api"),
    "AWS::ApiGatewayV2::Stage": (1, "as ApiGatewayV2::Api"),
    "AWS::CloudFront::Distribution": (1, "no emulator here: moto has no CloudFormation model, LocalStack's is paid"),
    "AWS::CloudFront::Function": (1, "as CloudFront::Distribution"),
    "AWS::CloudFront::OriginAccessControl": (1, "as CloudFront::Distribution"),
    "AWS::Lambda::EventInvokeConfig": (2, "moto has no CloudFormation model; LocalStack's Lambda needs Docker"),
    "Custom::CDKBucketDeployment": (1, "runs a Python Lambda with the AWS CLI layer: moto's Lambda does not run code without Docker"),
}
# Types moto has no model for but LocalStack's CloudFormation deploys (with their targets).
LOCALSTACK_TYPES = {
    "AWS::SecretsManager::Secret": 1,
    "AWS::S3::BucketPolicy": 3,
    "AWS::SQS::QueuePolicy": 2,
}
# Types deployed into moto and asserted below, and those deployed (their creation checked) but
# not asserted one by one. A new type in the template fails until it is put in one of them.
MOTO_ASSERTED = {
    "AWS::S3::Bucket", "AWS::Batch::ComputeEnvironment", "AWS::Batch::JobQueue", "AWS::Batch::JobDefinition",
    "AWS::ECR::Repository", "AWS::Lambda::Function", "AWS::Lambda::Permission", "AWS::IAM::Role",
    "AWS::IAM::Policy", "AWS::Events::Rule", "AWS::SQS::Queue", "AWS::EC2::VPC", "AWS::EC2::VPCEndpoint",
    "AWS::EC2::Subnet",
}
MOTO_DEPLOYED_ONLY = {
    "AWS::EC2::FlowLog", "AWS::EC2::RouteTable", "AWS::EC2::SecurityGroup", "AWS::EC2::SecurityGroupIngress",
    "AWS::EC2::SubnetRouteTableAssociation", "AWS::IAM::InstanceProfile", "AWS::Lambda::LayerVersion",
    "AWS::Logs::LogGroup",
}
# References from a deployed resource to one deployed elsewhere or skipped: (resource,
# referenced) -> what stands in for it. A new such reference fails the run.
SUBSTITUTED = {
    # moto stack: the secret lives in LocalStack; its ARN there is used as is.
    ("ApiFnRoleDefaultPolicy40B91477", "OperatorKeyD7C0C4F2"): "secret ARN from LocalStack",
    ("ApiFnE0725F78", "OperatorKeyD7C0C4F2"): "secret ARN from LocalStack",
    ("ApiPublishFnRoleDefaultPolicy126D098D", "OperatorKeyD7C0C4F2"): "secret ARN from LocalStack",
    ("ApiPublishFn39C480C0", "OperatorKeyD7C0C4F2"): "secret ARN from LocalStack",
    ("JobDoneFnRoleDefaultPolicy4772D56F", "OperatorKeyD7C0C4F2"): "secret ARN from LocalStack",
    ("JobDoneFnC6B1D17C", "OperatorKeyD7C0C4F2"): "secret ARN from LocalStack",
    ("PublishFnRoleDefaultPolicy706922CA", "OperatorKeyD7C0C4F2"): "secret ARN from LocalStack",
    ("PublishFnB0C9E186", "OperatorKeyD7C0C4F2"): "secret ARN from LocalStack",
    # The HTTP API is skipped: its invoke permissions name a placeholder API id.
    ("HttpApiDefaultRouteApiIntegrationPermission87FFCA32", "HttpApiF5A9A8A7"): "placeholder",
    ("HttpApiPOSTapimodelsApiPublishIntegrationPermission7BF95330", "HttpApiF5A9A8A7"): "placeholder",
    ("HttpApiPOSTapimodelsnftcardApiPublishIntegrationPermissionB4962ACE", "HttpApiF5A9A8A7"): "placeholder",
    # ... and the functions' POSTHUMAN_PUBLIC_API_URL (its ApiEndpoint) a placeholder endpoint.
    ("ApiFnE0725F78", "HttpApiF5A9A8A7"): "placeholder endpoint",
    ("ApiPublishFn39C480C0", "HttpApiF5A9A8A7"): "placeholder endpoint",
    ("JobDoneFnC6B1D17C", "HttpApiF5A9A8A7"): "placeholder endpoint",
    ("PublishFnB0C9E186", "HttpApiF5A9A8A7"): "placeholder endpoint",
    # LocalStack stack: policies naming resources that live in moto (or are skipped).
    ("StorefrontBucketPolicy6C3C1F38", "Storefront6CE586AA"): "placeholder",
    # The data bucket's CORS admits the (skipped) distribution's origin: a placeholder
    # domain, in both stacks that deploy the bucket.
    ("DataBucketE3889A50", "Storefront6CE586AA"): "placeholder domain",
    ("JobDoneDlqPolicyA7901017", "BatchJobDone3CAE7A6F"): "placeholder rule ARN",
}

# Properties added to the template for moto only, where moto requires what AWS defaults.
PATCHED = {
    # AWS uses the Batch service-linked role when ServiceRole is absent (created here with
    # iam:CreateServiceLinkedRole, as AWS does on first use); moto requires it named.
    ("GpuComputeEE69B12E", "ServiceRole"): "service-linked role AWSServiceRoleForBatch",
    # moto's JobDefinition model reads "timeout" where CloudFormation says "Timeout".
    ("WorkerJobAE811AD5", "timeout"): "a copy of Timeout (moto reads the lower-case key)",
}

# The skipped HTTP API's endpoint, as the functions' environment names it.
PLACEHOLDER_API_URL = f"https://a1b2c3d4e5.execute-api.{REGION}.amazonaws.com"
# The skipped distribution: its id (the storefront bucket's OAC condition) and its domain
# (the data bucket's CORS origin).
PLACEHOLDER_DISTRIBUTION = {"Ref": "EDFDVBD6EXAMPLE", "DomainName": "d111111abcdef8.cloudfront.net"}
# The template's conditions as the default parameters decide them (StorefrontOrigin empty).
DEFAULT_CONDITIONS = {"HasStorefrontOrigin": False}
PUBLISHED_SHA256: dict[str, str] = {}  # asset object key -> base64 SHA-256 (Lambda's CodeSha256)
CATALOG_GAPS: list[str] = []  # instance types the template names that moto's catalog lacks

# moto's Batch models answer Ref but not Fn::GetAtt; for these attributes AWS documents Ref
# as returning the same ARN, so the moto copy uses Ref.
BATCH_ARN_ATTRS = {"ComputeEnvironmentArn", "JobQueueArn"}


def batch_getatt_to_ref(obj) -> int:
    """Rewrite Fn::GetAtt [X, ComputeEnvironmentArn|JobQueueArn] to Ref X in place; count them."""

    def is_batch_arn(v) -> bool:
        return (isinstance(v, dict) and list(v) == ["Fn::GetAtt"] and isinstance(v["Fn::GetAtt"], list)
                and v["Fn::GetAtt"][1] in BATCH_ARN_ATTRS)

    n = 0
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else []
    for k, v in list(items):
        if is_batch_arn(v):
            obj[k] = {"Ref": v["Fn::GetAtt"][0]}
            n += 1
        else:
            n += batch_getatt_to_ref(v)
    return n


def fail(msg: str) -> None:
    print(f"deploy-template: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def check(cond: bool, msg: str) -> None:
    if not cond:
        fail(msg)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def logical_refs(obj):
    """Logical ids a template fragment references (Ref, GetAtt, Sub)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "Ref" and isinstance(v, str):
                yield v
            elif k == "Fn::GetAtt":
                yield v[0] if isinstance(v, list) else v.split(".")[0]
            elif k == "Fn::Sub":
                text = v if isinstance(v, str) else v[0]
                for name in re.findall(r"\$\{([^}!]+)\}", text):
                    yield name.split(".")[0]
                if not isinstance(v, str):
                    yield from logical_refs(v[1])
            else:
                yield from logical_refs(v)
    elif isinstance(obj, list):
        for x in obj:
            yield from logical_refs(x)


def replace_refs(obj, logical_id: str, value):
    """obj with every Ref/GetAtt of logical_id replaced by value (a dict: one value per
    attribute, "Ref" for the Ref)."""
    def pick(attr):
        return value.get(attr, value["Ref"]) if isinstance(value, dict) else value

    if isinstance(obj, dict):
        if obj.get("Ref") == logical_id and len(obj) == 1:
            return pick("Ref")
        att = obj.get("Fn::GetAtt")
        if att is not None and len(obj) == 1:
            target, attr = att if isinstance(att, list) else att.split(".", 1)
            if target == logical_id:
                return pick(attr)
        return {k: replace_refs(v, logical_id, value) for k, v in obj.items()}
    if isinstance(obj, list):
        return [replace_refs(x, logical_id, value) for x in obj]
    return obj


def resolve_conditions(obj, conditions=DEFAULT_CONDITIONS):
    """obj with every Fn::If decided by `conditions` (a list element that comes out
    AWS::NoValue is dropped, as CloudFormation drops it)."""
    no_value = {"Ref": "AWS::NoValue"}
    if isinstance(obj, dict):
        cond = obj.get("Fn::If")
        if cond is not None and len(obj) == 1:
            return resolve_conditions(cond[1] if conditions[cond[0]] else cond[2], conditions)
        return {k: resolve_conditions(v, conditions) for k, v in obj.items()}
    if isinstance(obj, list):
        return [x for x in (resolve_conditions(x, conditions) for x in obj) if x != no_value]
    return obj


def sub_template(template: dict, keep: set[str], values: dict[str, object], used: set) -> dict:
    """The template with only `keep`; references to other resources replaced by `values`
    (each replacement recorded in `used`; one without a value fails)."""
    out = {k: v for k, v in template.items() if k not in ("Resources", "Outputs")}
    resources = {}
    for lid in keep:
        res = json.loads(json.dumps(template["Resources"][lid]))
        for ref in set(logical_refs(res.get("Properties", {}))):
            if ref in template["Resources"] and ref not in keep:
                check(ref in values, f"{lid} references {ref}, which is not deployed with it: add it to SUBSTITUTED")
                used.add((lid, ref))
                res["Properties"] = replace_refs(res["Properties"], ref, values[ref])
        deps = res.get("DependsOn")
        if deps is not None:
            deps = [deps] if isinstance(deps, str) else deps
            res["DependsOn"] = [d for d in deps if d in keep]
            if not res["DependsOn"]:
                del res["DependsOn"]
        resources[lid] = res
    out["Resources"] = resources
    outputs = {}
    for name, o in template.get("Outputs", {}).items():
        if all(r in keep or r not in template["Resources"] for r in logical_refs(o)):
            outputs[name] = o
    out["Outputs"] = outputs
    return out


def wait_stack(cfn, name: str) -> dict:
    deadline = time.monotonic() + 120
    while True:
        stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
        status = stack["StackStatus"]
        if status.endswith("_COMPLETE") or status.endswith("_FAILED"):
            break
        check(time.monotonic() < deadline, f"stack {name} still {status} after 120 s")
        time.sleep(0.2)
    if status != "CREATE_COMPLETE":
        events = cfn.describe_stack_events(StackName=name)["StackEvents"]
        for e in events:
            reason = e.get("ResourceStatusReason") or ""
            if "FAILED" in e.get("ResourceStatus", "") or reason:
                print(f"  {e['LogicalResourceId']}: {e['ResourceStatus']} {reason}", file=sys.stderr)
            if "Unsupported resources detected" in reason:
                print("  (twins started before localstack/twins.sh set CFN_IGNORE_UNSUPPORTED_TYPE_CREATE: "
                      "restart them with localstack/twins.sh stop)", file=sys.stderr)
        fail(f"stack {name}: {status}")
    return stack


def physical_ids(cfn, name: str) -> dict[str, str]:
    out = {}
    for page in cfn.get_paginator("list_stack_resources").paginate(StackName=name):
        for r in page["StackResourceSummaries"]:
            out[r["LogicalResourceId"]] = r["PhysicalResourceId"]
    return out


def upload_assets(s3, bucket_for) -> int:
    """Publish the file assets as `cdk deploy` does: directories zipped, files as they are."""
    manifest = json.loads((CDK_OUT / "Posthuman.assets.json").read_text())
    n = 0
    for asset in manifest["files"].values():
        src = CDK_OUT / asset["source"]["path"]
        if asset["source"].get("packaging") == "zip":
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
                for f in sorted(src.rglob("*")):
                    if f.is_file():
                        info = zipfile.ZipInfo(str(f.relative_to(src)))
                        info.external_attr = (f.stat().st_mode & 0o777) << 16
                        z.writestr(info, f.read_bytes())
            body = buf.getvalue()
        else:
            body = src.read_bytes()
        for dest in asset["destinations"].values():
            bucket = bucket_for(dest["bucketName"])
            s3.put_object(Bucket=bucket, Key=dest["objectKey"], Body=body)
            PUBLISHED_SHA256[dest["objectKey"]] = base64.b64encode(hashlib.sha256(body).digest()).decode()
            n += 1
    return n


def main() -> None:
    t0 = time.monotonic()
    template = json.loads((CDK_OUT / "Posthuman.template.json").read_text())
    resources = template["Resources"]
    counts: dict[str, int] = {}
    for r in resources.values():
        counts[r["Type"]] = counts.get(r["Type"], 0) + 1

    # --- Which emulator takes which resource; the lists may not drift silently.
    from moto.cloudformation.parsing import get_model_map

    moto_models = get_model_map()
    for ty, (n, why) in SKIPPED.items():
        check(counts.get(ty, 0) == n, f"template has {counts.get(ty, 0)} {ty}, SKIPPED says {n} ({why}): update the list")
        check(ty not in moto_models, f"moto now models {ty}: deploy it instead of skipping it")
    for ty, n in LOCALSTACK_TYPES.items():
        check(counts.get(ty, 0) == n, f"template has {counts.get(ty, 0)} {ty}, LOCALSTACK_TYPES says {n}")
        check(ty not in moto_models, f"moto now models {ty}: deploy it there")
    unplaced = sorted(t for t in counts if t not in moto_models and t not in SKIPPED and t not in LOCALSTACK_TYPES)
    check(not unplaced, f"no emulator takes {unplaced}: deploy them somewhere or add them to SKIPPED with a reason")

    new_types = sorted(t for t in counts if t in moto_models and t not in MOTO_ASSERTED | MOTO_DEPLOYED_ONLY)
    check(not new_types, f"{new_types} would deploy into moto unasserted: assert them (MOTO_ASSERTED) or list them in MOTO_DEPLOYED_ONLY")
    in_moto = {lid for lid, r in resources.items() if r["Type"] in moto_models}
    in_ls = {lid for lid, r in resources.items() if r["Type"] in LOCALSTACK_TYPES}
    # LocalStack also gets the buckets and queues its policies attach to.
    for lid in list(in_ls):
        for ref in logical_refs(resources[lid].get("Properties", {})):
            if resources.get(ref, {}).get("Type") in ("AWS::S3::Bucket", "AWS::SQS::Queue"):
                in_ls.add(ref)
    used: set = set()

    # --- moto: a private in-process server (state of its own, nothing to reset).
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    from moto.cloudformation import parsing as moto_parsing
    from moto.ec2.models.instance_types import INSTANCE_TYPES

    # CloudFormation names an unnamed ECR repository in lower case (repository names must
    # be); moto keeps the logical id's capitals and then refuses its own name.
    moto_name = moto_parsing.generate_resource_name

    def aws_name(resource_type, stack_name, logical_id):
        name = moto_name(resource_type, stack_name, logical_id)
        return name.lower() if resource_type == "AWS::ECR::Repository" else name

    moto_parsing.generate_resource_name = aws_name

    # A flow log's S3 destination may name a folder (arn:aws:s3:::bucket/prefix/, as the
    # template's does); moto looks up "bucket/prefix/" as a bucket and fails the flow log.
    from moto.ec2.models.flow_logs import FlowLogsBackend

    moto_flow_logs = FlowLogsBackend.create_flow_logs

    def flow_logs_with_prefix(self, resource_type, resource_ids, traffic_type, role, dest_type, dest, *rest):
        if dest_type == "s3" and dest and dest.count("/") > 0:
            logs, failed = moto_flow_logs(self, resource_type, resource_ids, traffic_type, role, dest_type,
                                          dest.split("/", 1)[0], *rest)
            for fl in logs:
                fl.log_destination = dest
            return logs, failed
        return moto_flow_logs(self, resource_type, resource_ids, traffic_type, role, dest_type, dest, *rest)

    FlowLogsBackend.create_flow_logs = flow_logs_with_prefix

    # moto's instance catalog (a DescribeInstanceTypes snapshot) lists no p3 size but
    # p3dn.24xlarge, in any region: AWS is retiring p3. Batch validates instanceTypes against
    # it, so the card's p3.2xlarge is added here (same shape as p3dn.24xlarge's entry); the
    # run prints this so nobody mistakes it for AWS still offering p3.2xlarge.
    for ty in json.loads(json.dumps(template["Resources"]["GpuComputeEE69B12E"]["Properties"]
                                    ["ComputeResources"]["InstanceTypes"])):
        if ty not in INSTANCE_TYPES:
            INSTANCE_TYPES[ty] = dict(INSTANCE_TYPES["p3dn.24xlarge"], InstanceType=ty)
            CATALOG_GAPS.append(ty)

    moto_port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
    server.start()
    try:
        moto_url = f"http://127.0.0.1:{moto_port}"
        mk = dict(endpoint_url=moto_url, region_name=REGION, aws_access_key_id="test", aws_secret_access_key="test")
        m = {svc: boto3.client(svc, **mk) for svc in
             ("cloudformation", "s3", "ssm", "batch", "lambda", "iam", "events", "sqs", "ec2", "ecr", "logs")}

        ls_url = os.environ.get("POSTHUMAN_S3_ENDPOINT")
        check(bool(ls_url), "POSTHUMAN_S3_ENDPOINT unset: start the twins (eval \"$(localstack/twins.sh start)\")")
        lk = dict(endpoint_url=ls_url, region_name=REGION, aws_access_key_id="test", aws_secret_access_key="test")
        ls = {svc: boto3.client(svc, **lk) for svc in ("cloudformation", "s3", "secretsmanager", "sqs", "sts")}

        # --- LocalStack stack: the secret, bucket and queue policies (with their targets).
        ls_account = ls["sts"].get_caller_identity()["Account"]
        ls_values = {
            "Storefront6CE586AA": PLACEHOLDER_DISTRIBUTION,
            # The DLQ policy names the rule's ARN; the rule is in moto's stack, whose name is
            # derived from the stack name and logical id. The condition is asserted below.
            "BatchJobDone3CAE7A6F": f"arn:aws:events:{REGION}:{ls_account}:rule/placeholder",
        }
        ls_template = sub_template(template, in_ls, ls_values, used)
        ls_template.pop("Rules", None)  # the bootstrap check: LocalStack's account has no CDK bootstrap
        ls_template["Parameters"] = {}
        # Decided here as the default parameters decide them (LocalStack's stack takes none).
        ls_template.pop("Conditions", None)
        ls_template["Resources"] = resolve_conditions(ls_template["Resources"])
        ls_stack = f"posthuman-{int(time.time() * 1000)}"
        ls["cloudformation"].create_stack(StackName=ls_stack, TemplateBody=json.dumps(ls_template))
        wait_stack(ls["cloudformation"], ls_stack)
        ls_ids = physical_ids(ls["cloudformation"], ls_stack)
        secret_arn = ls["secretsmanager"].describe_secret(SecretId=ls_ids["OperatorKeyD7C0C4F2"])["ARN"]

        # --- moto: what `cdk bootstrap` and scripts/deploy.sh (step 6) leave in an account.
        assets_bucket = f"cdk-hnb659fds-assets-{MOTO_ACCOUNT}-{REGION}"
        m["s3"].create_bucket(Bucket=assets_bucket)
        m["ssm"].put_parameter(Name="/cdk-bootstrap/hnb659fds/version", Value="30", Type="String")
        m["ssm"].put_parameter(Name=ADDRESS_BOOK_PARAM, Value='{"chain_id":31337}', Type="String")
        n_assets = upload_assets(
            m["s3"],
            lambda name: name.replace("${AWS::AccountId}", MOTO_ACCOUNT).replace("${AWS::Region}", REGION),
        )

        moto_values = {
            "Storefront6CE586AA": PLACEHOLDER_DISTRIBUTION,
            "OperatorKeyD7C0C4F2": secret_arn,
            "HttpApiF5A9A8A7": {"Ref": "a1b2c3d4e5", "ApiEndpoint": PLACEHOLDER_API_URL},
        }
        moto_template = sub_template(template, in_moto, moto_values, used)
        n_getatt = batch_getatt_to_ref(moto_template)
        slr = m["iam"].create_service_linked_role(AWSServiceName="batch.amazonaws.com")["Role"]["Arn"]
        for (lid, prop), _why in PATCHED.items():
            props = moto_template["Resources"][lid]["Properties"]
            check(prop not in props, f"{lid} now sets {prop}: drop it from PATCHED")
            props[prop] = slr if prop == "ServiceRole" else props["Timeout"]
        check(
            used == set(SUBSTITUTED),
            f"substituted references differ from SUBSTITUTED: new {sorted(used - set(SUBSTITUTED))}, "
            f"gone {sorted(set(SUBSTITUTED) - used)}",
        )
        stack_name = "Posthuman"
        params = [
            {"ParameterKey": "RpcUrl", "ParameterValue": RPC_URL},
            {"ParameterKey": "WorkerImageTag", "ParameterValue": WORKER_IMAGE_TAG},
        ]
        m["cloudformation"].create_stack(
            StackName=stack_name, TemplateBody=json.dumps(moto_template), Parameters=params,
            Capabilities=["CAPABILITY_IAM"],
        )
        stack = wait_stack(m["cloudformation"], stack_name)
        ids = physical_ids(m["cloudformation"], stack_name)
        missing = sorted(in_moto - set(ids))
        check(not missing, f"moto's stack lacks {missing}")
        t_deployed = time.monotonic() - t0

        n_checks = assert_moto(m, template, ids, stack, secret_arn)
        n_checks += assert_localstack(ls, ls_ids, template, ids)
    finally:
        server.stop()

    skipped = sum(n for n, _ in SKIPPED.values())
    print(
        f"deploy-template: {len(in_moto)} resources in moto's CloudFormation, {len(in_ls)} in LocalStack's "
        f"({n_assets} assets published), {skipped} skipped; {n_checks} assertions passed "
        f"(deployed in {t_deployed:.1f} s, total {time.monotonic() - t0:.1f} s)"
    )
    for ty, (n, why) in SKIPPED.items():
        print(f"  skipped {n} x {ty}: {why}")
    print(f"  for moto: {n_getatt} Fn::GetAtt of a Batch ARN written as Ref (same value in AWS)")
    for (lid, prop), why in PATCHED.items():
        print(f"  patched for moto: {lid}.{prop} = {why}")
    for prop, emus in sorted(NOT_APPLIED.items()):
        where = sorted(e for e, props in BUCKET_PROPS_APPLIED.items() if prop in props)
        then = f"asserted on {' and '.join(where)}'s copy" if where else \
            "no emulator applies it: the synth tests (infra/test) check it; equal to S3's default passes here"
        print(f"  bucket {prop}: ignored by {' and '.join(sorted(emus))}'s CloudFormation; {then}")
    for ty in CATALOG_GAPS:
        print(f"  NOTE: {ty} is not in moto's EC2 instance catalog (AWS lists no p3 but p3dn.24xlarge); added for this run")


def by_type(template: dict, ty: str) -> list[str]:
    return sorted(lid for lid, r in template["Resources"].items() if r["Type"] == ty)


def assert_moto(m, template, ids, stack, secret_arn) -> int:
    n = 0

    def ok(cond, msg):
        nonlocal n
        check(cond, msg)
        n += 1

    n += assert_buckets("moto", m["s3"], template, ids)
    data = ids["DataBucketE3889A50"]

    # Batch: p3 compute environment (scale to zero) in the isolated subnets, queue, job definition.
    ce = m["batch"].describe_compute_environments(computeEnvironments=[ids["GpuComputeEE69B12E"]])["computeEnvironments"]
    ok(len(ce) == 1, f"compute environment {ids['GpuComputeEE69B12E']}")
    cr = ce[0]["computeResources"]
    ok(cr["instanceTypes"] == ["p3.2xlarge"], f"p3 instances: {cr['instanceTypes']}")
    ok(cr["minvCpus"] == 0, f"scales to zero: minvCpus {cr['minvCpus']}")
    ok(ce[0]["type"] == "MANAGED" and ce[0]["state"] == "ENABLED", f"managed, enabled: {ce[0]['type']} {ce[0]['state']}")
    worker_subnets = {ids["WorkerVpcworkersSubnet1SubnetFDC380AF"], ids["WorkerVpcworkersSubnet2SubnetCF1AE629"]}
    ok(set(cr["subnets"]) == worker_subnets, f"workers in the isolated subnets: {cr['subnets']}")
    queue_arn = [o["OutputValue"] for o in stack.get("Outputs", []) if o["OutputKey"] == "JobQueueArn"]
    jq = m["batch"].describe_job_queues()["jobQueues"]
    ok(len(jq) == 1 and jq[0]["state"] == "ENABLED", f"one enabled job queue: {jq}")
    ok(jq[0]["computeEnvironmentOrder"][0]["computeEnvironment"] == ce[0]["computeEnvironmentArn"],
       "the queue feeds the p3 compute environment")
    ok(queue_arn == [jq[0]["jobQueueArn"]], f"JobQueueArn output {queue_arn}")
    jd_arn = ids["WorkerJobAE811AD5"]
    jd = m["batch"].describe_job_definitions(jobDefinitions=[jd_arn])["jobDefinitions"]
    ok(len(jd) == 1, f"job definition {jd_arn}")
    jd = jd[0]
    cp = jd["containerProperties"]
    ok(cp["command"] == ["posthuman-worker", "run", "--spec", "Ref::spec_key"], f"worker command {cp['command']}")
    ok(cp["image"].endswith(f":{WORKER_IMAGE_TAG}-cuda") and ".dkr.ecr." in cp["image"], f"the GPU queue runs the CUDA image: {cp['image']}")
    req = {r["type"]: r["value"] for r in cp["resourceRequirements"]}
    ok(req == {"MEMORY": "15000", "VCPU": "4", "GPU": "1"}, f"resources {req}")
    env = {e["name"]: e["value"] for e in cp["environment"]}
    ok(env.get("POSTHUMAN_S3_BUCKET") == data and env.get("POSTHUMAN_REQUIRE_GPU") == "1", f"worker env {env}")
    ok(int(env.get("POSTHUMAN_MEMORY_LIMIT_MIB", "0")) < int(req["MEMORY"]), "worker memory limit below the container's")
    ok(jd["parameters"] == {"job_id": "unset", "spec_key": "unset"}, f"parameters {jd['parameters']}")
    rs = jd["retryStrategy"]
    want_rs = template["Resources"]["WorkerJobAE811AD5"]["Properties"]["RetryStrategy"]
    ok(rs["attempts"] == want_rs["Attempts"], f"attempts {rs}")
    # Batch answers actions in lower case ("retry"); the template writes them upper case.
    got_rules = [{k[0].upper() + k[1:]: (v.upper() if k == "action" else v) for k, v in r.items()}
                 for r in rs.get("evaluateOnExit", [])]
    ok(got_rules == want_rs["EvaluateOnExit"], f"evaluateOnExit {got_rules} != {want_rs['EvaluateOnExit']}")
    # The rules infra/test proves equal to exit.rs's classes for every status: retry a lost host
    # and everything else, stop on the buyer's decade 40-49 (a bare 4 carved out) and on 124.
    ok(got_rules == [{"Action": "RETRY", "OnStatusReason": "Host EC2*"}, {"Action": "RETRY", "OnExitCode": "4"},
                     {"Action": "EXIT", "OnExitCode": "4*"}, {"Action": "EXIT", "OnExitCode": "124"}],
       f"retry rules: host loss retried, exit on 40-49 and 124 only: {got_rules}")
    want_timeout = template["Resources"]["WorkerJobAE811AD5"]["Properties"]["Timeout"]["AttemptDurationSeconds"]
    ok(jd["timeout"]["attemptDurationSeconds"] == want_timeout, f"attemptDurationSeconds {jd.get('timeout')}")
    repo = m["ecr"].describe_repositories(repositoryNames=[ids["WorkerRepoEE566D3E"]])["repositories"][0]
    ok(repo["imageTagMutability"] == "IMMUTABLE", f"ECR tags immutable: {repo['imageTagMutability']}")

    # Lambdas: provided.al2023, environment without secrets, reserved concurrency of the senders.
    fns = by_type(template, "AWS::Lambda::Function")
    ours = ["ApiFnE0725F78", "ApiPublishFn39C480C0", "JobDoneFnC6B1D17C", "PublishFnB0C9E186"]
    for lid in ours:
        cfg = m["lambda"].get_function(FunctionName=ids[lid])
        c = cfg["Configuration"]
        ok(c["Runtime"] == "provided.al2023" and c["Handler"] == "bootstrap", f"{lid}: {c['Runtime']} {c['Handler']}")
        key = template["Resources"][lid]["Properties"]["Code"]["S3Key"]
        ok(c["CodeSha256"] == PUBLISHED_SHA256[key], f"{lid}: code is the published asset {key}")
        fenv = c.get("Environment", {}).get("Variables", {})
        ok(fenv.get("POSTHUMAN_OPERATOR_KEY_SECRET") == secret_arn, f"{lid}: the secret's ARN only: {fenv}")
        ok(fenv.get("POSTHUMAN_ADDRESS_BOOK_PARAM") == ADDRESS_BOOK_PARAM, f"{lid}: address book by name")
        ok("POSTHUMAN_ADDRESS_BOOK" not in fenv, f"{lid}: no address book baked in")
        ok(fenv.get("POSTHUMAN_PUBLIC_API_URL") == PLACEHOLDER_API_URL,
           f"{lid}: the HTTP API's endpoint for DDOs: {fenv.get('POSTHUMAN_PUBLIC_API_URL')}")
        for k, v in fenv.items():
            ok(not any(s in k.upper() for s in ("PRIVATE", "PASSWORD", "MNEMONIC")) and not
               (len(v) == 64 and all(ch in "0123456789abcdef" for ch in v.lower().removeprefix("0x"))),
               f"{lid}: {k} looks like a secret")
        ok(fenv.get("POSTHUMAN_BUCKET") == data, f"{lid}: bucket {fenv.get('POSTHUMAN_BUCKET')}")
        conc = cfg.get("Concurrency", {}).get("ReservedConcurrentExecutions")
        if lid == "ApiFnE0725F78":
            ok(conc is None, f"the read API is not limited: {conc}")
        else:
            ok(conc == 1, f"{lid}: reserved concurrency TxSenderConcurrency=1, got {conc}")
    ok(len(fns) == 5, f"4 functions + the BucketDeployment handler: {fns}")
    # The asynchronous publish's worker: Lambda's longest timeout (its 3 GiB of /tmp moto does
    # not apply from a template: infra/test asserts the synthesized property).
    pc = m["lambda"].get_function(FunctionName=ids["PublishFnB0C9E186"])["Configuration"]
    ok(pc["Timeout"] == 900, f"publish function: 15-minute timeout, got {pc['Timeout']}")

    # IAM: the functions' and the worker's S3 grants are scoped to prefixes of the data bucket.
    data_arn = f"arn:aws:s3:::{data}"

    def statements(role_lid):
        role = ids[role_lid]
        out = []
        for pname in m["iam"].list_role_policies(RoleName=role)["PolicyNames"]:
            doc = m["iam"].get_role_policy(RoleName=role, PolicyName=pname)["PolicyDocument"]
            doc = json.loads(doc) if isinstance(doc, str) else doc
            out += doc["Statement"]
        return out

    def resources_of(st):
        r = st["Resource"]
        return r if isinstance(r, list) else [r]

    roles = {"JobDoneFnRole409DBE25": "job-done", "ApiFnRoleB6D06560": "api",
             "ApiPublishFnRole0E2A8CBB": "publish", "PublishFnRole0B13530F": "publish work",
             "WorkerJobRole890EB09D": "worker"}
    for role_lid in list(roles):
        if role_lid not in ids:  # logical ids are CDK's; find the role by its policy's target
            fail(f"role {role_lid} not deployed; roles: {by_type(template, 'AWS::IAM::Role')}")
    for role_lid, who in roles.items():
        sts = statements(role_lid)
        ok(sts, f"{who}: has a policy")
        for st in sts:
            acts = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            ok(st["Effect"] == "Allow", f"{who}: {st}")
            ok(not any(a in ("*", "s3:*") for a in acts), f"{who}: wildcard action {acts}")
            for r in resources_of(st):
                if any(a.startswith("s3:") and a != "s3:ListBucket" for a in acts):
                    ok(r.startswith(data_arn + "/") and r != data_arn + "/*", f"{who}: S3 object grant not under a prefix: {r}")
                if any(a.startswith("secretsmanager:") for a in acts):
                    ok(r == secret_arn, f"{who}: secret grant {r}")
                if any(a.startswith("ssm:") for a in acts):
                    ok(r.endswith(":parameter" + ADDRESS_BOOK_PARAM), f"{who}: ssm grant {r}")
    worker_actions = {a for st in statements("WorkerJobRole890EB09D")
                      for a in (st["Action"] if isinstance(st["Action"], list) else [st["Action"]])}
    ok(not any(a.startswith(("secretsmanager:", "batch:", "ssm:")) for a in worker_actions),
       f"the worker reads no secret and submits nothing: {worker_actions}")

    # EventBridge: Batch Job State Change on our queue -> job-done, with retries and the DLQ.
    rule = m["events"].describe_rule(Name=ids["BatchJobDone3CAE7A6F"].split("|")[-1])
    pattern = json.loads(rule["EventPattern"])
    ok(pattern["source"] == ["aws.batch"] and pattern["detail-type"] == ["Batch Job State Change"], f"pattern {pattern}")
    ok(pattern["detail"]["jobQueue"] == [jq[0]["jobQueueArn"]] and
       sorted(pattern["detail"]["status"]) == ["FAILED", "SUCCEEDED"], f"our queue's final states: {pattern}")
    targets = m["events"].list_targets_by_rule(Rule=rule["Name"])["Targets"]
    job_done_arn = m["lambda"].get_function(FunctionName=ids["JobDoneFnC6B1D17C"])["Configuration"]["FunctionArn"]
    ok(len(targets) == 1 and targets[0]["Arn"] == job_done_arn, f"target is job-done: {targets}")
    dlq_url = ids["JobDoneDlq7A9B9C2A"]
    dlq_arn = m["sqs"].get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    ok(targets[0].get("DeadLetterConfig", {}).get("Arn") == dlq_arn, f"DLQ {targets[0].get('DeadLetterConfig')}")
    ok(targets[0].get("RetryPolicy", {}).get("MaximumRetryAttempts") == 20, f"retries {targets[0].get('RetryPolicy')}")
    sweep = m["events"].describe_rule(Name=ids["JobSweep8E25BB90"].split("|")[-1])
    ok(sweep.get("ScheduleExpression") == "rate(5 minutes)", f"sweep schedule {sweep.get('ScheduleExpression')}")
    for q in ("JobDoneDlq7A9B9C2A", "JobDoneFailed43BD72C9"):
        attrs = m["sqs"].get_queue_attributes(QueueUrl=ids[q], AttributeNames=["MessageRetentionPeriod"])["Attributes"]
        ok(attrs["MessageRetentionPeriod"] == "1209600", f"{q}: 14-day retention {attrs}")
    perms = json.loads(m["lambda"].get_policy(FunctionName=ids["JobDoneFnC6B1D17C"])["Policy"])["Statement"]
    ok(any(p["Principal"].get("Service") == "events.amazonaws.com" for p in perms), f"events may invoke job-done: {perms}")

    # Network: isolated worker subnets reach AWS only through endpoints, ECS's included.
    vpc_id = ids[by_type(template, "AWS::EC2::VPC")[0]]
    eps = m["ec2"].describe_vpc_endpoints(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["VpcEndpoints"]
    services = {e["ServiceName"].removeprefix(f"com.amazonaws.{REGION}.") for e in eps}
    ok(services == {"s3", "ecr.api", "ecr.dkr", "logs", "ecs", "ecs-agent", "ecs-telemetry"},
       f"VPC endpoints: {sorted(services)}")
    igws = m["ec2"].describe_internet_gateways(Filters=[{"Name": "attachment.vpc-id", "Values": [vpc_id]}])
    ok(not igws["InternetGateways"], "no internet gateway on the workers' VPC")
    return n


# Each emulator's CloudFormation applies only some of a bucket's properties. Those it applies
# are compared with the template; those it does not are checked to be absent, so an emulator
# that starts applying one fails here until it is asserted. Properties neither applies are
# covered by the synth tests (infra/test/stack.test.ts) only.
BUCKET_PROPS_APPLIED = {
    "moto": {"BucketEncryption", "Tags"},
    "LocalStack": {"BucketEncryption", "VersioningConfiguration", "CorsConfiguration", "Tags"},
}


def bucket_property(s3, bucket: str, prop: str, ids: dict[str, str]):
    """A bucket property as deployed, in the template's shape (None: not configured)."""
    from botocore.exceptions import ClientError

    try:
        if prop == "BucketEncryption":
            rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
            return {"ServerSideEncryptionConfiguration": [
                {"ServerSideEncryptionByDefault": {"SSEAlgorithm": r["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"]}}
                for r in rules]}
        if prop == "VersioningConfiguration":
            status = s3.get_bucket_versioning(Bucket=bucket).get("Status")
            return {"Status": status} if status else None
        if prop == "PublicAccessBlockConfiguration":
            return s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        if prop == "LifecycleConfiguration":
            out = []
            for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]:
                rule = {"Status": r["Status"]}
                if "Expiration" in r:
                    rule["ExpirationInDays"] = r["Expiration"]["Days"]
                if "AbortIncompleteMultipartUpload" in r:
                    rule["AbortIncompleteMultipartUpload"] = r["AbortIncompleteMultipartUpload"]
                if "NoncurrentVersionExpiration" in r:
                    rule["NoncurrentVersionExpiration"] = {"NoncurrentDays": r["NoncurrentVersionExpiration"]["NoncurrentDays"]}
                out.append(rule)
            return {"Rules": out}
        if prop == "LoggingConfiguration":
            le = s3.get_bucket_logging(Bucket=bucket).get("LoggingEnabled")
            return {"DestinationBucketName": le["TargetBucket"], "LogFilePrefix": le["TargetPrefix"]} if le else None
        if prop == "OwnershipControls":
            rules = s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]["Rules"]
            return {"Rules": [{"ObjectOwnership": r["ObjectOwnership"]} for r in rules]}
        if prop == "CorsConfiguration":
            rules = s3.get_bucket_cors(Bucket=bucket)["CORSRules"]
            keys = {"AllowedOrigins": "AllowedOrigins", "AllowedMethods": "AllowedMethods",
                    "AllowedHeaders": "AllowedHeaders", "ExposeHeaders": "ExposedHeaders", "MaxAgeSeconds": "MaxAge"}
            return {"CorsRules": [{keys[k]: v for k, v in r.items() if k in keys} for r in rules]}
        if prop == "Tags":
            tags = s3.get_bucket_tagging(Bucket=bucket)["TagSet"]
            return [{"Key": t["Key"], "Value": t["Value"]} for t in tags if not t["Key"].startswith("aws:")]
    except ClientError as e:
        if e.response["Error"]["Code"].startswith(("NoSuch", "ServerSideEncryptionConfigurationNotFound",
                                                   "OwnershipControlsNotFound")):
            return None
        raise
    fail(f"no reader for bucket property {prop}")


def assert_buckets(emulator: str, s3, template: dict, ids: dict[str, str]) -> int:
    n = 0
    applied = BUCKET_PROPS_APPLIED[emulator]
    for lid in by_type(template, "AWS::S3::Bucket"):
        for prop, want in template["Resources"][lid]["Properties"].items():
            # The references among bucket properties: the access-log bucket's name, and the
            # storefront's origin in the data bucket's CORS (the placeholder distribution's,
            # the deploy's StorefrontOrigin left out as by default).
            want = replace_refs(want, "AccessLogs8B620ECA", ids["AccessLogs8B620ECA"])
            want = join_strings(resolve_conditions(replace_refs(want, "Storefront6CE586AA", PLACEHOLDER_DISTRIBUTION)))
            got = bucket_property(s3, ids[lid], prop, ids)
            if got == want:
                pass  # deployed as the template says (for some, S3's default says the same)
            elif prop in applied:
                fail(f"{emulator}: {lid}.{prop} deployed as {got}, template says {want}")
            else:
                check(got is None or got == default_bucket_property(prop),
                      f"{emulator} now applies {lid}.{prop} ({got}): add it to BUCKET_PROPS_APPLIED")
                NOT_APPLIED.setdefault(prop, set()).add(emulator)
            n += 1
    return n


def join_strings(obj):
    """obj with every Fn::Join of plain strings joined."""
    if isinstance(obj, dict):
        j = obj.get("Fn::Join")
        if j is not None and len(obj) == 1 and all(isinstance(x, str) for x in j[1]):
            return j[0].join(j[1])
        return {k: join_strings(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [join_strings(x) for x in obj]
    return obj


def default_bucket_property(prop: str):
    """What a bucket created with no such property reports (S3's defaults since 2023)."""
    return {
        "BucketEncryption": {"ServerSideEncryptionConfiguration": [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]},
        "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
        "PublicAccessBlockConfiguration": {k: True for k in ("BlockPublicAcls", "BlockPublicPolicy",
                                                            "IgnorePublicAcls", "RestrictPublicBuckets")},
    }.get(prop)


NOT_APPLIED: dict[str, set[str]] = {}  # bucket property -> emulators that did not apply it


def assert_localstack(ls, ls_ids, template, moto_ids) -> int:
    n = 0

    def ok(cond, msg):
        nonlocal n
        check(cond, msg)
        n += 1

    n += assert_buckets("LocalStack", ls["s3"], template, ls_ids)

    # The operator key: generated by Secrets Manager (64 hex digits), never in the template.
    secret_id = ls_ids["OperatorKeyD7C0C4F2"]
    value = ls["secretsmanager"].get_secret_value(SecretId=secret_id)["SecretString"]
    ok(len(value) == 64 and all(c in "0123456789abcdef" for c in value), "the generated key is 64 hex digits")
    ok(value not in json.dumps(template), "the key is not in the template")
    # Bucket policies: TLS only on every bucket; the storefront's readable only by CloudFront.
    for lid in ("DataBucketE3889A50", "AccessLogs8B620ECA", "StorefrontBucket197DB398"):
        policy = json.loads(ls["s3"].get_bucket_policy(Bucket=ls_ids[lid])["Policy"])
        ok(any(st["Effect"] == "Deny" and st.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
               for st in policy["Statement"]), f"{lid}: TLS-only policy {policy}")
        ok(not any(st["Effect"] == "Allow" and st.get("Principal") in ("*", {"AWS": "*"}) for st in policy["Statement"]),
           f"{lid}: nothing public {policy}")
    sf = json.loads(ls["s3"].get_bucket_policy(Bucket=ls_ids["StorefrontBucket197DB398"])["Policy"])
    reads = [st for st in sf["Statement"] if st["Effect"] == "Allow"]
    ok(reads and all(st["Principal"] == {"Service": "cloudfront.amazonaws.com"} and "AWS:SourceArn" in
                     st.get("Condition", {}).get("StringEquals", {}) for st in reads),
       f"storefront read only by the distribution: {reads}")
    # Queue policies: TLS only; the DLQ takes messages only from the job-done rule.
    for lid in ("JobDoneDlq7A9B9C2A", "JobDoneFailed43BD72C9"):
        attrs = ls["sqs"].get_queue_attributes(QueueUrl=ls_ids[lid], AttributeNames=["Policy"])["Attributes"]
        policy = json.loads(attrs["Policy"])
        ok(any(st["Effect"] == "Deny" and st.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
               for st in policy["Statement"]), f"{lid}: TLS-only policy {policy}")
        if lid == "JobDoneDlq7A9B9C2A":
            allow = [st for st in policy["Statement"] if st["Effect"] == "Allow"]
            ok(len(allow) == 1 and allow[0]["Principal"] == {"Service": "events.amazonaws.com"} and
               allow[0]["Action"] in ("sqs:SendMessage", ["sqs:SendMessage"]) and
               "aws:SourceArn" in allow[0]["Condition"]["ArnEquals"], f"DLQ accepts only the rule: {allow}")
    return n


if __name__ == "__main__":
    main()
