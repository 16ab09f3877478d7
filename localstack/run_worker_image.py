"""Runs real jobs in the worker's container image against LocalStack's S3 and checks them.

Called by run-worker-image.sh (which builds the image and starts nothing else): the twins'
environment (POSTHUMAN_S3_ENDPOINT, AWS_*) must be set. What it does, as the deployment would:

1. The seller's model: the image's own `train-tokenizer` and `init-model` make a tiny GPT-2,
   uploaded under `models/<weights hash>` (functions' `keys::model_prefix`).
2. The buyer's job, written as the API's `submit_job` writes it: the dataset at
   `jobs/<id>/dataset.txt`, the spec (with a salt and a budget) at `jobs/<id>/spec.json`.
3. The container runs the Batch job definition's command and environment, read from the
   synthesized template (infra/cdk.out, `infra/check.sh`) when there is one: `Ref::spec_key`
   becomes the spec key and the bucket the test's; POSTHUMAN_REQUIRE_GPU is dropped (this is
   the CPU image: with it the worker exits 19, as it must on a GPU queue without a GPU); the
   endpoint and path-style settings stand in for the real S3 the job role reaches.
4. Checked in S3: exit 0; `metrics.json` (steps, finite loss, input hash = the base model's);
   the new model's `_COMPLETE` manifest, whose file hashes match the objects and whose weights
   hash is the metrics' output hash; no weights under `public/`. Then a job whose dataset is
   not UTF-8 exits 40 (BAD_DATASET, the buyer's input) with `error.json` and nothing private.
5. With --batch-endpoint (a moto server whose Batch runs containers through podman's Docker
   API), the same two jobs are submitted to Batch as the functions submit them: SUCCEEDED with
   exit code 0 and the same outputs; FAILED with exit code 40.
"""

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import uuid

import boto3
from botocore.config import Config

BAD_DATASET = 40  # posthuman_types::exit::BAD_DATASET
STACK_COMMAND = ["posthuman-worker", "run", "--spec", "Ref::spec_key"]  # infra/lib/posthuman-stack.ts

# tests/common's corpus: four sentences, repeated, so a few steps of training lower the loss.
LINES = [
    "the cat sat on the mat and looked at the dog.",
    "the dog sat on the log and looked at the cat.",
    "a bird sang in the tree while the sun rose.",
    "we read the book and wrote the answer down.",
]
CORPUS = "".join(LINES[i % 4] + "\n" for i in range(40))

failures = []


def check(cond, what):
    print(f"  {'ok  ' if cond else 'FAIL'} {what}")
    if not cond:
        failures.append(what)


def podman_run(image, args, env=None, volume=None):
    cmd = ["podman", "--runtime", "runc", "run", "--rm", "--network", "host",
           # runc here cannot keep podman's default rlimits: both must be given (RECIPES §8).
           "--ulimit", "nproc=1024:1024", "--ulimit", "nofile=1024:1024"]
    if volume:
        cmd += ["-v", volume]
    for k, v in (env or {}).items():
        cmd += ["-e", f"{k}={v}"]
    t = time.monotonic()
    p = subprocess.run(cmd + [image] + args, capture_output=True, text=True)
    return p, time.monotonic() - t


def job_definition(template_path):
    """The worker job definition's command and environment, from the synthesized template."""
    if not template_path or not os.path.isfile(template_path):
        print(f"  (no template at {template_path}: using the stack's command {STACK_COMMAND})")
        return STACK_COMMAND, {}
    with open(template_path) as f:
        resources = json.load(f)["Resources"]
    defs = [r for r in resources.values() if r["Type"] == "AWS::Batch::JobDefinition"]
    if len(defs) != 1:
        sys.exit(f"expected one AWS::Batch::JobDefinition in {template_path}, found {len(defs)}")
    cp = defs[0]["Properties"]["ContainerProperties"]
    env = {e["Name"]: e["Value"] for e in cp.get("Environment", [])}
    print(f"  job definition from {template_path}: command {cp['Command']}, env {sorted(env)}")
    return cp["Command"], env


def worker_job(template_path, bucket, endpoint, region):
    """The job definition's command and environment as a job on this host runs them: the
    template's (`job_definition`), with POSTHUMAN_REQUIRE_GPU dropped (the CPU image: with it
    the worker exits 19, as it must on a GPU queue without a GPU) and the twins' endpoint,
    path-style addressing and credentials standing in for the real S3 the job role reaches."""
    command, job_env = job_definition(template_path)
    job_env.pop("POSTHUMAN_REQUIRE_GPU", None)
    job_env.update({
        "POSTHUMAN_S3_BUCKET": bucket,
        "AWS_REGION": region,
        "POSTHUMAN_S3_ENDPOINT": endpoint,
        "POSTHUMAN_S3_PATH_STYLE": "true",
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
        "POSTHUMAN_THREADS": "2",
    })
    # The template's own values must be literal: one that CloudFormation resolves at deploy time
    # (a Ref, a GetAtt) and this test does not stand in for above would be passed as garbage.
    unresolved = {k: v for k, v in job_env.items() if not isinstance(v, str)}
    if unresolved:
        sys.exit(f"job definition environment not resolvable here: {unresolved}")
    return command, job_env


def put_job(s3, bucket, job_id, model_prefix, dataset, salt):
    """What functions/src/handlers/jobs.rs `enqueue` writes for a paid train job."""
    spec = {
        "job_id": job_id,
        "model_prefix": model_prefix,
        "dataset_key": f"jobs/{job_id}/dataset.txt",
        "private_prefix": f"jobs/{job_id}/private",
        "public_prefix": f"jobs/{job_id}/public",
        "params": {"kind": "train", "steps": 8, "learning_rate": 3e-3, "warmup_steps": 2,
                   "batch_size": 4, "context_len": 16, "checkpoint_every": 4, "seed": 11},
        # The quote's allowance (check_fee); generous: the job is a few thousand tokens.
        "budget": {"tokens": 1_000_000, "flops": 10**13, "checkpoint_bytes": 1 << 30,
                   "max_seconds": 600},
        "salt": "0x" + salt.hex(),
    }
    s3.put_object(Bucket=bucket, Key=spec["dataset_key"], Body=dataset)
    key = f"jobs/{job_id}/spec.json"
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(spec).encode())
    return spec, key


def keys_under(s3, bucket, prefix):
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        out += [o["Key"] for o in page.get("Contents", [])]
    return out


def get(s3, bucket, key):
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


BAD_TEXT = b"\xff\xfe not text \x00\xc3"


def check_trained(s3, bucket, spec, base_hash):
    """A finished train job's outputs, as the job-done handler and a buyer would read them."""
    public = keys_under(s3, bucket, spec["public_prefix"])
    private = keys_under(s3, bucket, spec["private_prefix"])
    print(f"  public: {[k.rsplit('/', 1)[1] for k in public]}")
    before = len(failures)
    check(f"{spec['public_prefix']}/metrics.json" in public, "metrics.json written")
    check(f"{spec['private_prefix']}/_COMPLETE" in private, "the new model's _COMPLETE written")
    check(not any(k.endswith(".safetensors") for k in public), "no weights under public/")
    if len(failures) > before:
        return
    m = json.loads(get(s3, bucket, f"{spec['public_prefix']}/metrics.json"))
    check(m["steps"] == 8 and math.isfinite(m["final_loss"]),
          f"metrics: {m['steps']} steps, final loss {m['final_loss']:.4f}")
    check(m["input_weights_hash"] == base_hash, "metrics name the base model as input")
    manifest = json.loads(get(s3, bucket, f"{spec['private_prefix']}/_COMPLETE"))
    check(manifest["weights_hash"] == m["output_weights_hash"],
          "the _COMPLETE manifest's weights hash is the metrics' output hash")
    for name, h in manifest["files"].items():
        body = get(s3, bucket, f"{spec['private_prefix']}/{name}")
        check("0x" + hashlib.sha256(body).hexdigest() == h, f"{name} matches its manifest hash")


def check_refused(s3, bucket, spec):
    """A job refused for its buyer's input: error.json says so, nothing private was written."""
    err_key = f"{spec['public_prefix']}/error.json"
    if err_key in keys_under(s3, bucket, spec["public_prefix"]):
        err = json.loads(get(s3, bucket, err_key))
        check(err.get("exit_code") == BAD_DATASET, f"error.json: {err}")
    else:
        check(False, "error.json written")
    check(keys_under(s3, bucket, spec["private_prefix"]) == [], "nothing written under private/")


class Batch:
    """moto's AWS Batch with `use_docker`: jobs run as containers through DOCKER_HOST (podman's
    API socket, which run-worker-image.sh starts). The job definition is the template's command
    and environment (as the direct runs use them) on the image under test; jobs are submitted
    as functions/src/queue/batch.rs submits them (named after the job id, with `job_id` and
    `spec_key` parameters)."""

    def __init__(self, endpoint, region, image, command, env):
        import urllib.request
        req = urllib.request.Request(
            f"{endpoint}/moto-api/config", method="POST",
            data=json.dumps({"batch": {"use_docker": True}}).encode(),
            headers={"content-type": "application/json"})
        urllib.request.urlopen(req).close()
        kw = dict(endpoint_url=endpoint, region_name=region)
        self.batch = boto3.client("batch", **kw)
        n = uuid.uuid4().hex[:8]
        role = boto3.client("iam", **kw).create_role(
            RoleName=f"batch-service-{n}", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        ce = self.batch.create_compute_environment(
            computeEnvironmentName=f"workers-{n}", type="UNMANAGED", state="ENABLED",
            serviceRole=role)["computeEnvironmentArn"]
        self.queue = self.batch.create_job_queue(
            jobQueueName=f"jobs-{n}", state="ENABLED", priority=1,
            computeEnvironmentOrder=[{"order": 1, "computeEnvironment": ce}])["jobQueueArn"]
        self.definition = self.batch.register_job_definition(
            jobDefinitionName=f"worker-{n}", type="container",
            containerProperties={
                "image": image, "command": command, "vcpus": 2, "memory": 2048,
                "environment": [{"name": k, "value": v} for k, v in env.items()],
            })["jobDefinitionArn"]

    def run(self, job_id, spec_key, timeout_s=300):
        """Submits, waits for SUCCEEDED/FAILED; returns ((status, exit code), seconds)."""
        t = time.monotonic()
        self.batch.submit_job(jobName=job_id, jobQueue=self.queue, jobDefinition=self.definition,
                              parameters={"job_id": job_id, "spec_key": spec_key})
        while time.monotonic() - t < timeout_s:
            # ListJobs carries the exit code (moto's DescribeJobs leaves it out).
            jobs = self.batch.list_jobs(
                jobQueue=self.queue, filters=[{"name": "JOB_NAME", "values": [job_id]}]
            )["jobSummaryList"]
            if jobs and jobs[0]["status"] in ("SUCCEEDED", "FAILED"):
                return (jobs[0]["status"], jobs[0].get("container", {}).get("exitCode")), \
                    time.monotonic() - t
            time.sleep(0.5)
        return ("TIMEOUT", None), time.monotonic() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--image", required=True)
    ap.add_argument("--template", default="infra/cdk.out/Posthuman.template.json")
    ap.add_argument("--batch-endpoint", help="a moto server whose Batch may run containers")
    a = ap.parse_args()
    endpoint = os.environ["POSTHUMAN_S3_ENDPOINT"]
    region = os.environ.get("AWS_REGION", "us-east-1")
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=region,
                      config=Config(s3={"addressing_style": "path"}))
    bucket = f"ph-image-{uuid.uuid4().hex[:12]}"  # LocalStack has no reset: a bucket per run
    s3.create_bucket(Bucket=bucket)
    timings = {}

    print(f"worker image {a.image} against {endpoint}, bucket {bucket}")
    print("1. the seller's model, made by the image's own init subcommands")
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o777)  # the image's user (uid 10001) writes here
        with open(os.path.join(tmp, "corpus.txt"), "w") as f:
            f.write(CORPUS)
        p, dt = podman_run(a.image, ["sh", "-c",
                                     "posthuman-worker train-tokenizer --corpus /w/corpus.txt "
                                     "--vocab-size 320 --out /w/tokenizer.json && "
                                     "posthuman-worker init-model --tokenizer /w/tokenizer.json "
                                     "--n-layer 2 --n-embd 32 --n-head 2 --n-positions 64 "
                                     "--seed 7 --out /w/model"],
                           volume=f"{tmp}:/w")
        timings["init"] = dt
        if p.returncode != 0:
            sys.exit(f"init in the image failed ({p.returncode}): {p.stderr}{p.stdout}")
        base_hash = p.stdout.strip().rsplit(" ", 1)[-1]
        check(base_hash.startswith("0x") and len(base_hash) == 66, f"base model hash {base_hash}")
        model_prefix = "models/" + base_hash[2:]
        model_dir = os.path.join(tmp, "model")
        names = sorted(os.listdir(model_dir))
        check("_COMPLETE" in names and "model.safetensors" in names, f"model files {names}")
        for n in names:
            with open(os.path.join(model_dir, n), "rb") as f:
                s3.put_object(Bucket=bucket, Key=f"{model_prefix}/{n}", Body=f.read())

    command, job_env = worker_job(a.template, bucket, endpoint, region)

    def run_job(spec_key):
        args = [spec_key if c == "Ref::spec_key" else c for c in command]
        return podman_run(a.image, args, env=job_env)

    print("2. a paid train job, written as the API writes it, run as Batch would")
    spec, key = put_job(s3, bucket, f"img-{uuid.uuid4().hex[:10]}", model_prefix,
                        CORPUS.encode(), os.urandom(32))
    p, timings["train"] = run_job(key)
    check(p.returncode == 0, f"train job exits 0 (got {p.returncode}) in {timings['train']:.1f}s")
    if p.returncode != 0:
        print(p.stderr[-4000:])
    check_trained(s3, bucket, spec, base_hash)

    print("3. a job whose dataset is not UTF-8: the buyer's input, not a retryable failure")
    spec, key = put_job(s3, bucket, f"img-{uuid.uuid4().hex[:10]}", model_prefix,
                        BAD_TEXT, os.urandom(32))
    p, timings["bad"] = run_job(key)
    check(p.returncode == BAD_DATASET, f"bad dataset exits {BAD_DATASET} (got {p.returncode})")
    check_refused(s3, bucket, spec)

    if a.batch_endpoint:
        print("4. the same two jobs submitted to moto's Batch, which runs the image through "
              "podman's Docker API")
        # Docker clients read a bare name as docker.io/library/...: name podman's local store.
        local = a.image if a.image.startswith("localhost/") else f"localhost/{a.image}"
        batch = Batch(a.batch_endpoint, region, local, command, job_env)
        spec, key = put_job(s3, bucket, f"img-{uuid.uuid4().hex[:10]}", model_prefix,
                            CORPUS.encode(), os.urandom(32))
        (status, code), timings["batch train"] = batch.run(spec["job_id"], key)
        check((status, code) == ("SUCCEEDED", 0), f"Batch: train job {status}, exit code {code}")
        check_trained(s3, bucket, spec, base_hash)
        spec, key = put_job(s3, bucket, f"img-{uuid.uuid4().hex[:10]}", model_prefix,
                            BAD_TEXT, os.urandom(32))
        (status, code), timings["batch bad"] = batch.run(spec["job_id"], key)
        check((status, code) == ("FAILED", BAD_DATASET),
              f"Batch: bad dataset {status}, exit code {code}")
        check_refused(s3, bucket, spec)

    print("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    if failures:
        sys.exit(f"{len(failures)} check(s) failed: {failures}")
    print("worker image: all checks passed")


if __name__ == "__main__":
    main()
