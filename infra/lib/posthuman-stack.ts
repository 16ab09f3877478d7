// The AWS deployment of DESIGN.md's "in AWS" column:
//   S3 data bucket (private) ── Batch GPU queue running batch-worker (no internet: isolated
//   subnets with S3/ECR/Logs/ECS endpoints only) ── EventBridge "Batch Job State Change" → job-done
//   Lambda; the HTTP API is API Gateway (HTTP API, payload v2) → api Lambda (lambda_http).
// Env var names match functions/src/aws.rs and batch-worker/src/main.rs.
import * as path from "path";
import {
  Aws,
  CfnCondition,
  CfnElement,
  CfnOutput,
  CfnParameter,
  Duration,
  Fn,
  RemovalPolicy,
  Size,
  Stack,
  StackProps,
  Validations,
} from "aws-cdk-lib";
import { Construct } from "constructs";
import * as s3 from "aws-cdk-lib/aws-s3";
import * as ec2 from "aws-cdk-lib/aws-ec2";
import * as ecr from "aws-cdk-lib/aws-ecr";
import * as ecs from "aws-cdk-lib/aws-ecs";
import * as iam from "aws-cdk-lib/aws-iam";
import * as batch from "aws-cdk-lib/aws-batch";
import * as lambda from "aws-cdk-lib/aws-lambda";
import * as destinations from "aws-cdk-lib/aws-lambda-destinations";
import * as events from "aws-cdk-lib/aws-events";
import * as targets from "aws-cdk-lib/aws-events-targets";
import * as sqs from "aws-cdk-lib/aws-sqs";
import * as ssm from "aws-cdk-lib/aws-ssm";
import * as logs from "aws-cdk-lib/aws-logs";
import * as secretsmanager from "aws-cdk-lib/aws-secretsmanager";
import * as apigw from "aws-cdk-lib/aws-apigatewayv2";
import { HttpLambdaIntegration } from "aws-cdk-lib/aws-apigatewayv2-integrations";
import * as cloudfront from "aws-cdk-lib/aws-cloudfront";
import * as origins from "aws-cdk-lib/aws-cloudfront-origins";
import * as s3deploy from "aws-cdk-lib/aws-s3-deployment";

/** What the CUDA variant of a commit's worker image adds to its tag (scripts/deploy.sh pushes both). */
export const CUDA_IMAGE_SUFFIX = "-cuda";
/** Memory of the worker's Batch container: fits the smallest instance of every GPU family (g5/g6.xlarge, 16 GiB, less what the ECS agent keeps). */
export const WORKER_CONTAINER_MEMORY_MIB = 15_000;
/**
 * What the worker process needs beyond its preflight estimate (batch-worker's
 * CGROUP_HEADROOM_MIB): the job budget it is given stays this far below the container, so a
 * job too large for it is refused by the preflight instead of OOM-killed.
 */
export const WORKER_MEMORY_HEADROOM_MIB = 512;

export interface PosthumanStackProps extends StackProps {
  /** Directory with `<bin>/bootstrap` for each Lambda binary (cargo lambda build output). */
  lambdaDir: string;
  /** The storefront's build (web/dist: index.html, the wasm module, its JS and CSS). */
  storefrontDir: string;
}

export class PosthumanStack extends Stack {
  constructor(scope: Construct, id: string, props: PosthumanStackProps) {
    super(scope, id, props);
    // S3 server access logs are delivered under a bucket policy naming the source buckets, not
    // the legacy LogDeliveryWrite ACL (set here, before any child, so every synth path has it).
    this.node.setContext("@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy", true);

    const rpcUrl = new CfnParameter(this, "RpcUrl", {
      type: "String",
      description: "EVM JSON-RPC endpoint of the chain holding the Ocean and lineage contracts",
    });

    // Where S3 server access logs (both buckets), the VPC's flow logs and CloudFront's
    // standard logs go: who read which model's weights, and what the workers reached. ACLs
    // stay enabled (BUCKET_OWNER_PREFERRED) because CloudFront's standard logging writes with
    // them; everything else is kept private. Kept 90 days, then expired (cost at rest). cdk-nag
    // exempts a log-delivery bucket from needing its own access logs.
    const accessLogs = new s3.Bucket(this, "AccessLogs", {
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      encryption: s3.BucketEncryption.S3_MANAGED,
      enforceSSL: true,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
      lifecycleRules: [{ expiration: Duration.days(90) }],
      removalPolicy: RemovalPolicy.RETAIN,
    });

    // One private bucket holds everything the code stores: weights and checkpoints (private
    // prefixes), datasets, job specs, public outputs and the catalogue state. Public outputs
    // are served only through the API, never from S3 directly.
    const data = new s3.Bucket(this, "DataBucket", {
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      encryption: s3.BucketEncryption.S3_MANAGED,
      enforceSSL: true,
      versioned: true, // an overwritten or deleted model version stays recoverable
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      lifecycleRules: [
        { abortIncompleteMultipartUploadAfter: Duration.days(1) },
        { noncurrentVersionExpiration: Duration.days(90) },
        // Direct uploads (functions/src/uploads.rs) never used: their URLs expire after
        // 15 minutes, what they staged goes after a day (the API sweeps them locally).
        { prefix: "uploads/", expiration: Duration.days(1) },
      ],
      removalPolicy: RemovalPolicy.RETAIN,
      serverAccessLogsBucket: accessLogs,
      serverAccessLogsPrefix: "s3/data/",
    });

    // Workers get no network except the object store (and what pulling the image and
    // shipping logs need): isolated subnets, no NAT, VPC endpoints only.
    const vpc = new ec2.Vpc(this, "WorkerVpc", {
      maxAzs: 2,
      natGateways: 0,
      subnetConfiguration: [{ name: "workers", subnetType: ec2.SubnetType.PRIVATE_ISOLATED }],
      gatewayEndpoints: { S3: { service: ec2.GatewayVpcEndpointAwsService.S3 } },
    });
    // Flow logs (accepted and rejected) of the worker network, to the access-log bucket.
    vpc.addFlowLog("FlowLog", {
      destination: ec2.FlowLogDestination.toS3(accessLogs, "vpc-flow-logs/"),
      trafficType: ec2.FlowLogTrafficType.ALL,
    });
    // Log delivery's grant, stated here: AWS would otherwise add it to the bucket policy itself
    // when the flow log is created, and the next stack update of that policy would drop it.
    const delivery = new iam.ServicePrincipal("delivery.logs.amazonaws.com");
    accessLogs.addToResourcePolicy(
      new iam.PolicyStatement({
        principals: [delivery],
        actions: ["s3:PutObject"],
        resources: [accessLogs.arnForObjects(`vpc-flow-logs/AWSLogs/${this.account}/*`)],
        conditions: { StringEquals: { "s3:x-amz-acl": "bucket-owner-full-control", "aws:SourceAccount": this.account } },
      }),
    );
    accessLogs.addToResourcePolicy(
      new iam.PolicyStatement({
        principals: [delivery],
        actions: ["s3:GetBucketAcl", "s3:ListBucket"],
        resources: [accessLogs.bucketArn],
        conditions: { StringEquals: { "aws:SourceAccount": this.account } },
      }),
    );
    const workerSg = new ec2.SecurityGroup(this, "WorkerSg", { vpc, allowAllOutbound: false });
    // HTTPS only; the isolated subnets route nowhere but the VPC endpoints (no IGW, no NAT).
    workerSg.addEgressRule(ec2.Peer.anyIpv4(), ec2.Port.tcp(443), "HTTPS to the VPC endpoints");
    // The interface endpoints answer the workers only (not the whole VPC CIDR, CDK's default).
    const endpointSg = new ec2.SecurityGroup(this, "EndpointSg", {
      vpc,
      allowAllOutbound: false,
      description: "Posthuman worker VPC endpoints: HTTPS from the workers only",
    });
    endpointSg.addIngressRule(workerSg, ec2.Port.tcp(443), "HTTPS from the workers");
    for (const [name, service] of [
      ["EcrApi", ec2.InterfaceVpcEndpointAwsService.ECR],
      ["EcrDocker", ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER],
      ["Logs", ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS],
      // The ECS agent on each container instance registers with the cluster, polls for tasks
      // and reports metrics through these three; without them no instance ever joins and
      // jobs stay RUNNABLE.
      ["Ecs", ec2.InterfaceVpcEndpointAwsService.ECS],
      ["EcsAgent", ec2.InterfaceVpcEndpointAwsService.ECS_AGENT],
      ["EcsTelemetry", ec2.InterfaceVpcEndpointAwsService.ECS_TELEMETRY],
    ] as const) {
      vpc.addInterfaceEndpoint(name, { service, privateDnsEnabled: true, securityGroups: [endpointSg], open: false });
    }

    const computeEnv = new batch.ManagedEc2EcsComputeEnvironment(this, "GpuCompute", {
      vpc,
      vpcSubnets: { subnetType: ec2.SubnetType.PRIVATE_ISOLATED },
      securityGroups: [workerSg],
      instanceTypes: gpuInstanceTypes(this.node.tryGetContext("gpuFamily") ?? "p3"),
      useOptimalInstanceClasses: false,
      images: [{ imageType: batch.EcsMachineImageType.ECS_AL2023_NVIDIA }],
      minvCpus: 0, // scale to zero between jobs
      maxvCpus: 32,
    });
    // CloudFormation takes either case; moto (which deploys this stack in tests elsewhere)
    // only the documented upper case.
    (computeEnv.node.defaultChild as batch.CfnComputeEnvironment).type = "MANAGED";
    acknowledge(
      computeEnv,
      "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role]",
      "the container instances' role: AWS's policy for the ECS agent, which AWS keeps in step with the agent's calls",
    );
    const queue = new batch.JobQueue(this, "JobQueue", {
      computeEnvironments: [{ computeEnvironment: computeEnv, order: 1 }],
    });

    // The worker image's tag: the git commit it was built from. The repository is IMMUTABLE
    // (a tag names one image forever, so a job definition revision names what its jobs ran),
    // which rules out a moving `latest`: each deploy names the commit it pushed (`-c
    // workerImageTag=...` makes it the default; otherwise `--parameters WorkerImageTag=...`).
    const contextTag: string | undefined = this.node.tryGetContext("workerImageTag");
    const tagPattern = "^[0-9a-f]{7,40}$";
    if (contextTag !== undefined && !new RegExp(tagPattern).test(contextTag)) {
      throw new Error(`workerImageTag ${JSON.stringify(contextTag)} is not a git commit (7 to 40 hex digits)`);
    }
    const imageTag = new CfnParameter(this, "WorkerImageTag", {
      type: "String",
      description: "Tag of the batch-worker image in WorkerRepository: the git commit it was built from (the GPU job definition runs <tag>-cuda)",
      allowedPattern: tagPattern,
      constraintDescription: "a git commit (7 to 40 lowercase hex digits); the repository's tags are immutable",
      default: contextTag,
    });
    const repo = new ecr.Repository(this, "WorkerRepo", {
      imageScanOnPush: true,
      imageTagMutability: ecr.TagMutability.IMMUTABLE,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    const jobRole = new iam.Role(this, "WorkerJobRole", {
      assumedBy: new iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
    });
    // A job reads models (roots under models/, derived ones under another job's private/)
    // and its own inputs, and writes only its outputs; never the catalogue under state/,
    // which decides who paid for what. (IAM cannot name "this job's" prefix in a static
    // role; the spec the functions layer writes names the prefixes.)
    grantObjects(jobRole, data, ["s3:GetObject"], [
      "models/*",
      "jobs/*/dataset.txt",
      "jobs/*/spec.json",
    ]);
    grantObjects(jobRole, data, ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], [
      "jobs/*/private/*",
      "jobs/*/public/*",
    ]);
    grantList(jobRole, data, ["models/*", "jobs/*"]);
    // The worker's logs, kept a month (CDK's default group would keep them forever).
    const workerLogs = new logs.LogGroup(this, "WorkerLogs", { retention: logs.RetentionDays.ONE_MONTH });
    const workerContainer = new batch.EcsEc2ContainerDefinition(this, "WorkerContainer", {
      // The GPU queue runs the CUDA variant of the commit's image (batch-worker/Dockerfile.cuda,
      // pushed by scripts/deploy.sh as <commit>-cuda beside the CPU image <commit>): the CPU
      // worker would refuse every job here (POSTHUMAN_REQUIRE_GPU below, exit 19).
      image: ecs.ContainerImage.fromEcrRepository(repo, `${imageTag.valueAsString}${CUDA_IMAGE_SUFFIX}`),
      command: ["posthuman-worker", "run", "--spec", "Ref::spec_key"],
      // The worker refuses to run (exit 19) if the GPU cannot be opened, rather than falling
      // back to the CPU on a GPU instance.
      environment: {
        POSTHUMAN_S3_BUCKET: data.bucketName,
        AWS_REGION: this.region,
        POSTHUMAN_REQUIRE_GPU: "1",
        // The preflight's budget, from the same number as the container's memory (the
        // worker also caps it at its cgroup limit less the headroom).
        POSTHUMAN_MEMORY_LIMIT_MIB: String(WORKER_CONTAINER_MEMORY_MIB - WORKER_MEMORY_HEADROOM_MIB),
      },
      cpu: 4,
      memory: Size.mebibytes(WORKER_CONTAINER_MEMORY_MIB),
      gpu: 1,
      jobRole,
      logging: ecs.LogDriver.awsLogs({ streamPrefix: "worker", logGroup: workerLogs }),
    });
    acknowledge(
      workerContainer,
      "AwsSolutions-IAM5[Resource::*]",
      "the execution role's ecr:GetAuthorizationToken, which has no resource-level permissions (the pull itself is on the worker repository only)",
    );
    // The functions layer passes job_id and spec_key as Batch parameters (functions/src/queue/batch.rs).
    const jobDef = new batch.EcsJobDefinition(this, "WorkerJob", {
      container: workerContainer,
      parameters: { job_id: "unset", spec_key: "unset" },
      // The worker resumes from its last checkpoint, so a retried attempt finishes the same job.
      retryAttempts: 2,
      retryStrategies: workerRetryRules(),
      timeout: Duration.hours(12),
    });

    // The operator key signs provider fees and receipts. It is generated here as 64 hex
    // characters (a secp256k1 key); rotate it by putting your own value into the secret.
    const operatorKey = new secretsmanager.Secret(this, "OperatorKey", {
      description: "Posthuman operator private key (hex)",
      generateSecretString: {
        passwordLength: 64,
        excludePunctuation: true,
        excludeUppercase: true,
        includeSpace: false,
        excludeCharacters: "ghijklmnopqrstuvwxyz",
      },
      removalPolicy: RemovalPolicy.RETAIN,
    });
    acknowledge(
      operatorKey,
      "AwsSolutions-SMG4",
      "an Ethereum key: a new value is a new operator address, which the contracts and published assets name; rotating it is a migration, not a schedule",
    );
    // Deployed contract addresses (the chain crate's AddressBook JSON). The stack does not own
    // the parameter: the deploy writes it after deploying the contracts and before this
    // stack, so a missing one fails the deploy (not the functions at cold start), and a stack
    // update never resets it.
    const addressBookName: string = this.node.tryGetContext("addressBookParam") ?? "/posthuman/address-book";
    const addressBook = ssm.StringParameter.fromStringParameterName(this, "AddressBook", addressBookName);

    const env = {
      POSTHUMAN_BUCKET: data.bucketName,
      POSTHUMAN_BATCH_QUEUE: queue.jobQueueArn,
      POSTHUMAN_BATCH_JOB_DEFINITION: jobDef.jobDefinitionArn,
      POSTHUMAN_RPC_URL: rpcUrl.valueAsString,
      // The functions read the address book from this parameter at cold start, so an update
      // to it reaches every new execution environment without a redeploy.
      POSTHUMAN_ADDRESS_BOOK_PARAM: addressBookName,
      // Only the secret's ARN: the functions read the key at cold start (functions/src/
      // secrets.rs), so it is in no function configuration, console or template.
      POSTHUMAN_OPERATOR_KEY_SECRET: operatorKey.secretArn,
    };
    // One operator account signs and sends every transaction, and the chain client manages
    // nonces simply (the pending count, per process), so two functions sending at once would
    // race for a nonce. The senders therefore run one at a time: job-done (createChild,
    // recordDerivation) and publishing (the asset's transactions), each on reserved
    // concurrency. The rest of the API sends nothing (a quote signs a provider fee offline,
    // a submit verifies an order and queues a job) and stays parallel. Raise this only once
    // the senders manage nonces across processes (or use one key each). Each reserved
    // instance comes out of the account's unreserved pool, which must keep 10.
    const txSenders = new CfnParameter(this, "TxSenderConcurrency", {
      type: "Number",
      default: 1,
      minValue: 1,
      description: "Reserved concurrency of each function that sends the operator's transactions (publish, job-done)",
    });
    // Each function has its own role and log group: the role may write that group only (not
    // AWSLambdaBasicExecutionRole's every group in the account), and logs expire after a month.
    const rustFn = (id: string, bin: string, timeout: Duration, reservedConcurrentExecutions?: number) => {
      const logGroup = new logs.LogGroup(this, `${id}Logs`, { retention: logs.RetentionDays.ONE_MONTH });
      const role = new iam.Role(this, `${id}Role`, { assumedBy: new iam.ServicePrincipal("lambda.amazonaws.com") });
      logGroup.grantWrite(role);
      return new lambda.Function(this, id, {
        runtime: lambda.Runtime.PROVIDED_AL2023,
        architecture: lambda.Architecture.X86_64,
        handler: "bootstrap",
        code: lambda.Code.fromAsset(path.join(props.lambdaDir, bin)),
        memorySize: 1024,
        timeout,
        environment: env,
        reservedConcurrentExecutions,
        role,
        logGroup,
      });
    };
    const api = rustFn("ApiFn", "posthuman-api-lambda", Duration.seconds(29));
    // The api bundle again, behind the routes that send transactions (publishing, card edits).
    // One at a time: a second concurrent one is throttled rather than racing for a nonce.
    const publish = rustFn("ApiPublishFn", "posthuman-api-lambda", Duration.seconds(29), txSenders.valueAsNumber);
    // A multipart publish (small models) spools its parts in /tmp.
    (publish.node.defaultChild as lambda.CfnFunction).ephemeralStorage = { size: 3072 };
    // A publish by direct upload is asynchronous (functions/src/publishes): ApiPublishFn checks
    // the request and answers 202; this function, invoked with InvocationType Event, does the
    // weight work (a 1 GiB model: 25-33 s before its transactions, over API Gateway's 29 s),
    // the transactions and the listing, within Lambda's longest timeout. It reads the upload's
    // weights (up to 1 GiB, an adapter as much again) into /tmp, more than the default 512 MiB.
    // One at a time too: it sends the operator's transactions.
    const publishWork = rustFn("PublishFn", "posthuman-publish-lambda", Duration.minutes(15), txSenders.valueAsNumber);
    (publishWork.node.defaultChild as lambda.CfnFunction).ephemeralStorage = { size: 3072 };
    // Lambda retries a failed asynchronous event twice by default: never here (a publish sends
    // transactions; the record's start marker also refuses a second delivery). A publish whose
    // function died is reported failed (timed out) once its deadline passed.
    publishWork.configureAsyncInvoke({ retryAttempts: 0, maxEventAge: Duration.minutes(15) });
    // Only the functions behind the API start publishes, and they may invoke this one only.
    for (const fn of [api, publish]) {
      fn.addEnvironment("POSTHUMAN_PUBLISH_FUNCTION", publishWork.functionName);
      // The unqualified function only (grantInvoke would add its versions, `arn:*`).
      fn.addToRolePolicy(
        new iam.PolicyStatement({ actions: ["lambda:InvokeFunction"], resources: [publishWork.functionArn] }),
      );
    }
    // EventBridge invokes job-done asynchronously: a throttled event waits in Lambda's queue.
    const jobDone = rustFn("JobDoneFn", "posthuman-job-done-lambda", Duration.minutes(5), txSenders.valueAsNumber);
    // The API: the catalogue, published models, a job's dataset and spec, public outputs, and
    // a derived model's config (its private prefix) for quotes.
    grantObjects(api, data, ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], ["state/*"]);
    grantObjects(api, data, ["s3:GetObject", "s3:PutObject"], ["models/*", "jobs/*/spec.json"]);
    grantObjects(api, data, ["s3:PutObject"], ["jobs/*/dataset.txt"]);
    grantObjects(api, data, ["s3:GetObject"], ["jobs/*/public/*", "jobs/*/private/config.json"]);
    grantList(api, data, ["state/*"]);
    // Direct uploads (functions/src/uploads.rs): the API writes each upload's manifest and
    // presigns its PUTs with its own role (so that role must may put there), checks what
    // arrived (listing, so a missing file is a 404, not a 403) and, for a submit, reads the
    // dataset back and deletes what it used.
    grantObjects(api, data, ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], ["uploads/*"]);
    grantList(api, data, ["uploads/*"]);
    // Publishing: the catalogue (records, request nonces) and the model's files, read from
    // the direct upload that staged them.
    grantObjects(publish, data, ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], ["state/*", "uploads/*"]);
    grantObjects(publish, data, ["s3:GetObject", "s3:PutObject"], ["models/*"]);
    grantList(publish, data, ["state/*", "uploads/*"]);
    // The publish work: the staged upload's files (read back, then consumed or released: the
    // claim marker), the model's files under models/, and the state (the publish's record and
    // its owner's slot, the catalogue's model record).
    grantObjects(publishWork, data, ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], ["state/*", "uploads/*"]);
    grantObjects(publishWork, data, ["s3:GetObject", "s3:PutObject"], ["models/*"]);
    grantList(publishWork, data, ["state/*", "uploads/*"]);
    // Completion: the catalogue, the job's spec, and its public outputs (receipts, attestations).
    grantObjects(jobDone, data, ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], ["state/*"]);
    grantObjects(jobDone, data, ["s3:GetObject"], ["jobs/*/spec.json"]);
    grantObjects(jobDone, data, ["s3:GetObject", "s3:PutObject"], ["jobs/*/public/*"]);
    // The sweep (functions/src/sweep.rs) asks whether a stuck job's spec is stored by listing
    // that one key: S3 answers a HEAD of a missing key with 403 to a role that may not list it.
    grantList(jobDone, data, ["state/*", "jobs/*/spec.json"]);
    for (const fn of [api, publish, publishWork, jobDone]) {
      // GetSecretValue (and the key's decrypt) on this one secret only.
      operatorKey.grantRead(fn);
      // ssm:GetParameter(s) on the address book's parameter only.
      addressBook.grantRead(fn);
    }
    for (const fn of [api, jobDone]) {
      fn.addToRolePolicy(
        new iam.PolicyStatement({
          actions: ["batch:SubmitJob"],
          resources: [queue.jobQueueArn, jobDefArnAnyRevision(this, jobDef)],
        }),
      );
      // DescribeJobs does not support resource-level permissions.
      fn.addToRolePolicy(new iam.PolicyStatement({ actions: ["batch:DescribeJobs"], resources: ["*"] }));
      acknowledge(
        fn.role!,
        "AwsSolutions-IAM5[Resource::*]",
        "batch:DescribeJobs (and job-done's ListJobs) have no resource-level permissions",
      );
      acknowledge(
        fn.role!,
        `AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:batch:<AWS::Region>:<AWS::AccountId>:job-definition/${nagToken(this, jobDef.jobDefinitionName)}*]`,
        "SubmitJob names the worker's job definition with its revision (name:N); the * is that revision, not other definitions",
      );
    }
    // The sweep finds a job a crash left without its Batch id by name; ListJobs does not
    // support resource-level permissions either.
    jobDone.addToRolePolicy(new iam.PolicyStatement({ actions: ["batch:ListJobs"], resources: ["*"] }));

    const httpApi = new apigw.HttpApi(this, "HttpApi", {
      defaultIntegration: new HttpLambdaIntegration("ApiIntegration", api, {
        payloadFormatVersion: apigw.PayloadFormatVersion.VERSION_2_0,
      }),
    });
    // The routes that send the operator's transactions go to the reserved-concurrency publish
    // function: publishing, and a card edit (it re-sets the model's DDO with setMetaData /
    // setChildMetaData). From the unreserved api function they would race it for the nonce.
    const txIntegration = new HttpLambdaIntegration("ApiPublishIntegration", publish, {
      payloadFormatVersion: apigw.PayloadFormatVersion.VERSION_2_0,
    });
    for (const path of ["/api/models", "/api/models/{nft}/card"]) {
      httpApi.addRoutes({ path, methods: [apigw.HttpMethod.POST], integration: txIntegration });
    }
    // The API's public URL: every model's DDO (written by publishing and by job-done) names
    // its Ocean Provider under it, for Ocean's clients to call. The API resource itself does
    // not reference the functions (its integrations and routes do), so this is no cycle.
    for (const fn of [api, publish, publishWork, jobDone]) {
      fn.addEnvironment("POSTHUMAN_PUBLIC_API_URL", httpApi.apiEndpoint);
    }
    // Access logs of the API: who called which route, the status and latency; no headers or
    // bodies (signatures, datasets), so nothing secret reaches the log.
    const apiLogs = new logs.LogGroup(this, "ApiAccessLogs", { retention: logs.RetentionDays.ONE_MONTH });
    (httpApi.defaultStage!.node.defaultChild as apigw.CfnStage).accessLogSettings = {
      destinationArn: apiLogs.logGroupArn,
      format: JSON.stringify({
        requestId: "$context.requestId",
        ip: "$context.identity.sourceIp",
        time: "$context.requestTime",
        routeKey: "$context.routeKey",
        status: "$context.status",
        latencyMs: "$context.responseLatency",
        integrationError: "$context.integrationErrorMessage",
      }),
    };
    acknowledge(
      httpApi,
      "AwsSolutions-APIG4",
      "the API authorizes in the handlers: buyers and sellers sign requests with their wallet keys (functions/src/auth.rs); they have no IAM or Cognito identity",
    );

    // Completion: terminal states of jobs on our queue. The handler is idempotent, so
    // EventBridge's retries (and a DLQ for what still fails) are safe.
    const dlq = new sqs.Queue(this, "JobDoneDlq", {
      retentionPeriod: Duration.days(14),
      enforceSSL: true,
    });
    acknowledge(dlq, "AwsSolutions-SQS3", "this is the dead-letter queue (of the job-done rule's target)");
    new events.Rule(this, "BatchJobDone", {
      eventPattern: {
        source: ["aws.batch"],
        detailType: ["Batch Job State Change"],
        detail: { jobQueue: [queue.jobQueueArn], status: ["SUCCEEDED", "FAILED"] },
      },
      targets: [
        new targets.LambdaFunction(jobDone, {
          retryAttempts: 20,
          maxEventAge: Duration.hours(6),
          deadLetterQueue: dlq,
        }),
      ],
    });
    // EventBridge's retries and DLQ cover handing the event to Lambda; once Lambda took it
    // (asynchronously), a handler error is retried by Lambda and then dropped unless the
    // function has an on-failure destination: these records (request payload included)
    // can be redriven, and the sweep below redelivers the completion meanwhile.
    const failed = new sqs.Queue(this, "JobDoneFailed", {
      retentionPeriod: Duration.days(14),
      enforceSSL: true,
    });
    acknowledge(failed, "AwsSolutions-SQS3", "this is a dead-letter queue (job-done's on-failure destination)");
    jobDone.configureAsyncInvoke({
      onFailure: new destinations.SqsDestination(failed),
      retryAttempts: 2,
      maxEventAge: Duration.hours(6),
    });
    // The sweep (functions/src/sweep.rs): paid jobs a crash left between the order claim and
    // the queue, and finished jobs whose completion events were all lost. A missed tick is
    // retried by the next one.
    new events.Rule(this, "JobSweep", {
      schedule: events.Schedule.rate(Duration.minutes(5)),
      targets: [new targets.LambdaFunction(jobDone, { retryAttempts: 0 })],
    });

    // The storefront: its build in a private bucket that only this distribution reads (origin
    // access control), and /api/* on the same origin forwarded to the HTTP API, so the SPA's
    // relative /api/... calls need no CORS and no build-time API URL.
    const site = new s3.Bucket(this, "StorefrontBucket", {
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      encryption: s3.BucketEncryption.S3_MANAGED,
      enforceSSL: true,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      removalPolicy: RemovalPolicy.RETAIN,
      serverAccessLogsBucket: accessLogs,
      serverAccessLogsPrefix: "s3/storefront/",
    });
    // A client-side route (/models/0x..., /jobs/<id>/receipt) is no object: serve the SPA's
    // index.html for any path whose last segment has no file extension. A viewer-request
    // function on the default behavior only, not a distribution-wide error response, which
    // would also turn the API's JSON 404s into index.html.
    const spaFallback = new cloudfront.Function(this, "SpaFallback", {
      runtime: cloudfront.FunctionRuntime.JS_2_0,
      comment: "Posthuman storefront: index.html for client-side routes",
      code: cloudfront.FunctionCode.fromInline(SPA_FALLBACK_JS),
    });
    const apiOrigin = new origins.HttpOrigin(`${httpApi.apiId}.execute-api.${this.region}.${this.urlSuffix}`, {
      protocolPolicy: cloudfront.OriginProtocolPolicy.HTTPS_ONLY,
    });
    const storefront = new cloudfront.Distribution(this, "Storefront", {
      comment: "Posthuman storefront and API",
      defaultRootObject: "index.html",
      priceClass: cloudfront.PriceClass.PRICE_CLASS_100,
      enableLogging: true,
      logBucket: accessLogs,
      logFilePrefix: "cloudfront/",
      defaultBehavior: {
        origin: origins.S3BucketOrigin.withOriginAccessControl(site),
        viewerProtocolPolicy: cloudfront.ViewerProtocolPolicy.REDIRECT_TO_HTTPS,
        functionAssociations: [{ function: spaFallback, eventType: cloudfront.FunctionEventType.VIEWER_REQUEST }],
      },
      additionalBehaviors: {
        "/api/*": {
          origin: apiOrigin,
          viewerProtocolPolicy: cloudfront.ViewerProtocolPolicy.HTTPS_ONLY,
          allowedMethods: cloudfront.AllowedMethods.ALLOW_ALL,
          // Every answer is per request (signed reads, quotes that expire): never cached.
          cachePolicy: cloudfront.CachePolicy.CACHING_DISABLED,
          // The API Gateway endpoint answers only to its own Host.
          originRequestPolicy: cloudfront.OriginRequestPolicy.ALL_VIEWER_EXCEPT_HOST_HEADER,
        },
      },
    });
    acknowledge(
      storefront,
      "AwsSolutions-CFR1",
      "a marketplace open to any wallet holder: no country is excluded (a deployment that must can add geo restrictions)",
    );
    acknowledge(
      storefront,
      "AwsSolutions-CFR2",
      "no WAF by default (a web ACL costs at rest); what changes state is signed and checked in the handlers " +
        "(functions/src/auth.rs); add a web ACL for rate-based rules",
    );
    acknowledge(
      storefront,
      "AwsSolutions-CFR4",
      "no custom domain yet: the default *.cloudfront.net certificate fixes the TLS policy; with one, set minimumProtocolVersion TLS_V1_2_2021",
    );
    const storefrontDeploy = new s3deploy.BucketDeployment(this, "StorefrontDeploy", {
      sources: [s3deploy.Source.asset(props.storefrontDir)],
      destinationBucket: site,
      distribution: storefront,
      distributionPaths: ["/*"],
    });
    // CDK's own deployment function (a singleton beside the stack, not ours to shape): its
    // role copies the asset into the storefront bucket and invalidates the distribution.
    const deployFn = this.node.children.find((c) => c.node.id.startsWith("Custom::CDKBucketDeployment"));
    if (!deployFn) throw new Error("no CDK bucket deployment function beside " + storefrontDeploy.node.path);
    const basicExecution = "arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole";
    const assets = "arn:<AWS::Partition>:s3:::cdk-hnb659fds-assets-<AWS::AccountId>-<AWS::Region>/*";
    for (const [id, reason] of [
      [`AwsSolutions-IAM4[Policy::${basicExecution}]`, "CDK's BucketDeployment handler; its role is CDK's"],
      ["AwsSolutions-IAM5[Action::s3:GetObject*]", "CDK's BucketDeployment grant: read the asset it copies"],
      ["AwsSolutions-IAM5[Action::s3:GetBucket*]", "CDK's BucketDeployment grant: read the asset it copies"],
      ["AwsSolutions-IAM5[Action::s3:List*]", "CDK's BucketDeployment grant: list the asset and the storefront bucket to sync"],
      ["AwsSolutions-IAM5[Action::s3:DeleteObject*]", "CDK's BucketDeployment grant: prune files of the previous storefront build"],
      ["AwsSolutions-IAM5[Action::s3:Abort*]", "CDK's BucketDeployment grant: abort its own multipart uploads"],
      [`AwsSolutions-IAM5[Resource::${assets}]`, "CDK's bootstrap asset bucket, where the storefront's zip is staged"],
      [`AwsSolutions-IAM5[Resource::<${nagLogicalId(site)}.Arn>/*]`, "the storefront bucket holds only the build it syncs"],
      ["AwsSolutions-IAM5[Resource::*]", "CDK's BucketDeployment invalidates CloudFront: no resource-level permissions"],
      ["AwsSolutions-L1", "CDK pins the BucketDeployment handler's runtime (it bundles the AWS CLI for it)"],
    ]) {
      acknowledge(deployFn, id, reason);
    }

    // CORS, for a storefront served from another origin (a custom domain, a developer's
    // localhost): the deploy names it; empty (the default) means none, as the CloudFront
    // storefront is the API's own origin.
    const storefrontOrigin = new CfnParameter(this, "StorefrontOrigin", {
      type: "String",
      default: "",
      allowedPattern: "^$|^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$",
      constraintDescription: "an origin: scheme://host[:port], no path, or empty for none",
      description: "Browser origin allowed to call the HTTP API cross-origin (empty: none)",
    });
    const hasOrigin = new CfnCondition(this, "HasStorefrontOrigin", {
      expression: Fn.conditionNot(Fn.conditionEquals(storefrontOrigin.valueAsString, "")),
    });
    (httpApi.node.defaultChild as apigw.CfnApi).corsConfiguration = Fn.conditionIf(
      hasOrigin.logicalId,
      {
        AllowOrigins: [storefrontOrigin.valueAsString],
        AllowMethods: ["GET", "POST", "OPTIONS"],
        // What the API reads (functions/src/api.rs, auth.rs) and the list pages' cursor.
        AllowHeaders: ["content-type", "x-posthuman-signature", "x-posthuman-expires", "x-posthuman-reader"],
        ExposeHeaders: ["x-posthuman-next-cursor"],
        MaxAge: 600,
      },
      Aws.NO_VALUE,
    );

    // Direct uploads (functions/src/uploads.rs): the storefront PUTs publish files and
    // datasets straight to presigned S3 URLs on the data bucket — cross-origin requests the
    // browser sends only when the bucket's CORS admits the page's origin: the CloudFront
    // storefront always, and the StorefrontOrigin above when the deploy names one. Only PUT,
    // only the headers a presigned PUT carries (its signed length and SHA-256 checksum), and
    // ETag exposed. CORS grants nothing by itself: the presigned URL is the authorisation;
    // what CORS decides is whether a page of that origin may send it and read the answer.
    const uploadRule = (origin: string) => ({
      AllowedOrigins: [origin],
      AllowedMethods: ["PUT"],
      AllowedHeaders: UPLOAD_CORS_HEADERS,
      ExposedHeaders: ["ETag"],
      MaxAge: 600,
    });
    (data.node.defaultChild as s3.CfnBucket).addPropertyOverride("CorsConfiguration", {
      CorsRules: [
        uploadRule(`https://${storefront.distributionDomainName}`),
        Fn.conditionIf(hasOrigin.logicalId, uploadRule(storefrontOrigin.valueAsString), Aws.NO_VALUE),
      ],
    });

    new CfnOutput(this, "StorefrontUrl", { value: `https://${storefront.distributionDomainName}` });
    new CfnOutput(this, "ApiUrl", { value: httpApi.apiEndpoint });
    new CfnOutput(this, "BucketName", { value: data.bucketName });
    new CfnOutput(this, "WorkerRepository", { value: repo.repositoryUri });
    new CfnOutput(this, "JobQueueArn", { value: queue.jobQueueArn });
  }
}

/**
 * The request headers a storefront's presigned PUT to the data bucket sends (the bucket's
 * CORS allows these): the URL signs the exact length and the SHA-256 checksum
 * (`S3Uploads::presign`: X-Amz-SignedHeaders=content-length;host;x-amz-checksum-sha256, seen
 * on LocalStack 2026-12-07), and the browser adds the file's content type.
 */
export const UPLOAD_CORS_HEADERS = ["content-type", "content-length", "x-amz-checksum-sha256"];

/**
 * The compute environment's instance types for a GPU family (context `gpuFamily`). p3 (one
 * V100, sm_70) is the card's hardware and the default; g5 (A10G) and g6 (L4) are cheaper and
 * newer. Each type has one GPU and room for the job definition's 4 vCPUs and its memory.
 */
export const GPU_FAMILIES: Record<string, string[]> = {
  p3: ["p3.2xlarge"],
  g5: ["g5.xlarge", "g5.2xlarge"],
  g6: ["g6.xlarge", "g6.2xlarge"],
};

function gpuInstanceTypes(family: string): ec2.InstanceType[] {
  const types = GPU_FAMILIES[family];
  if (!types) {
    throw new Error(`gpuFamily ${JSON.stringify(family)}: one of ${Object.keys(GPU_FAMILIES).join(", ")}`);
  }
  return types.map((t) => new ec2.InstanceType(t));
}

/**
 * Batch's retry rules for the worker, after crates/types/src/exit.rs (the stack test parses
 * it and checks, for every exit status 1..255, that these rules stop exactly where exit.rs's
 * classify() does). Batch takes the first rule that matches and retries when none does; exit
 * codes match as digits with an optional trailing `*`, and a job definition takes at most 5
 * rules — which is why exit.rs keeps the buyer's codes in one decade, BUYER_INPUT_RANGE
 * 40..=49: `4*` covers it, with a bare `4` carved out first; the one FINAL code (124) is
 * exact. Everything else — the worker's retryable codes, a panic's 101, a signal's 128+n, a
 * reclaimed host — is retried (attempts bounded).
 */
function workerRetryRules(): batch.RetryStrategy[] {
  const { RetryStrategy, Action, Reason } = batch;
  return [
    // A Spot reclaim or a lost host ("Host EC2 (instance i-...) terminated."): no exit code.
    RetryStrategy.of(Action.RETRY, Reason.SPOT_INSTANCE_RECLAIMED),
    RetryStrategy.of(Action.RETRY, Reason.custom({ onExitCode: "4" })), // not in 40..=49
    RetryStrategy.of(Action.EXIT, Reason.custom({ onExitCode: "4*" })), // BUYER_INPUT_RANGE 40..=49
    RetryStrategy.of(Action.EXIT, Reason.custom({ onExitCode: "124" })), // FINAL: WALL_CLOCK_EXCEEDED
  ];
}

/** CloudFront Function (viewer request): the SPA's index.html for client-side routes. */
const SPA_FALLBACK_JS = `function handler(event) {
  var request = event.request;
  var uri = request.uri;
  var last = uri.substring(uri.lastIndexOf("/") + 1);
  if (uri !== "/" && last.indexOf(".") === -1) {
    request.uri = "/index.html";
  }
  return request;
}`;

/**
 * Allows `actions` on the bucket's objects matching each key pattern, and nothing else. A
 * pattern's `*` stands for a job id or a file name under a fixed prefix (IAM cannot name one
 * job's keys in a static role), so cdk-nag's wildcard finding is acknowledged per pattern.
 */
function grantObjects(grantee: iam.IGrantable, bucket: s3.Bucket, actions: string[], keys: string[]) {
  const principal = grantee.grantPrincipal;
  principal.addToPrincipalPolicy(new iam.PolicyStatement({ actions, resources: keys.map((k) => bucket.arnForObjects(k)) }));
  if (!(principal instanceof iam.Role)) throw new Error("grantObjects: the grantee is not a role of this stack");
  for (const k of keys.filter((k) => k.includes("*"))) {
    acknowledge(
      principal,
      `AwsSolutions-IAM5[Resource::<${nagLogicalId(bucket)}.Arn>/${k}]`,
      `object keys under a fixed prefix (${k}): * is a job id or a file name`,
    );
  }
}

/** Acknowledges one cdk-nag finding on `scope` and everything under it, with why. */
function acknowledge(scope: Construct, id: string, reason: string) {
  Validations.of(scope).acknowledge({ id, reason });
}

/** A construct's CloudFormation logical id, as cdk-nag writes it in a finding's id. */
function nagLogicalId(c: Construct): string {
  const stack = Stack.of(c);
  return stack.resolve(stack.getLogicalId(c.node.defaultChild as CfnElement));
}

/** A token as cdk-nag renders it inside a finding's id (its resolved CloudFormation JSON). */
function nagToken(stack: Stack, value: string): string {
  return JSON.stringify(stack.resolve(value));
}

/** Allows listing the bucket under the given key prefixes only. */
function grantList(grantee: iam.IGrantable, bucket: s3.IBucket, prefixes: string[]) {
  grantee.grantPrincipal.addToPrincipalPolicy(
    new iam.PolicyStatement({
      actions: ["s3:ListBucket"],
      resources: [bucket.bucketArn],
      conditions: { StringLike: { "s3:prefix": prefixes } },
    }),
  );
}

function jobDefArnAnyRevision(scope: Stack, jobDef: batch.EcsJobDefinition): string {
  // SubmitJob is authorized against the definition ARN with or without a revision.
  return scope.formatArn({
    service: "batch",
    resource: "job-definition",
    resourceName: `${jobDef.jobDefinitionName}*`,
  });
}
