//! Idempotent deployment of the video functions on AWS.
//!
//! [`deploy`] makes the account match a [`DeploySpec`], changing only what
//! differs, and reports each resource as created, updated or unchanged:
//!
//! 1. the buckets `<prefix>-input`, `-stage-1`, `-output`, `-gallery` and
//!    the artifact bucket `<prefix>-lambda-artifacts`;
//! 2. the execution role `<prefix>-video-lambda` (trusted by Lambda) and its
//!    inline policy (S3 on those buckets, CloudWatch Logs);
//! 3. the functions `<prefix>-video-splitting` and `<prefix>-face-recognition`
//!    (runtime `provided.al2023`, zip from the artifact bucket, because with
//!    a static ffmpeg the zip exceeds the 50 MB of a direct upload). The code
//!    is updated only when the zip's SHA-256 differs from the function's
//!    `CodeSha256`, the configuration only when a field differs;
//! 4. the permission for S3 to invoke each function from its bucket;
//! 5. the notifications: object created in `<prefix>-input` →
//!    video-splitting; object created in `<prefix>-stage-1` with suffix
//!    `.jpg` → face-recognition. Other notification configurations of the
//!    buckets are kept.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_lambda::types::{Architecture, Environment, FunctionCode, Runtime};
use aws_sdk_s3::types::{
    Event, FilterRule, FilterRuleName, LambdaFunctionConfiguration, NotificationConfiguration,
    NotificationConfigurationFilter, S3KeyFilter,
};
use facefleet_ports::{Names, ObjectStore};
use serde_json::{json, Value};

use crate::package::{sha256_of, Package, PackageError};

/// What to deploy.
#[derive(Debug, Clone)]
pub struct DeploySpec {
    /// Resource names (from the prefix).
    pub names: Names,
    /// Zip of the video-splitting function.
    pub split_zip: std::path::PathBuf,
    /// Zip of the face-recognition function.
    pub recognize_zip: std::path::PathBuf,
    /// Memory of video-splitting, MB.
    pub split_memory_mb: i32,
    /// Memory of face-recognition, MB.
    pub recognize_memory_mb: i32,
    /// Timeout of each function, seconds.
    pub timeout_secs: i32,
    /// Extra environment of both functions (e.g. `FACEFLEET_SAMPLING`).
    pub environment: HashMap<String, String>,
    /// The face model of face-recognition: passed to it as the environment
    /// variables of its model flags (`FACEFLEET_RECOGNIZER`,
    /// `FACEFLEET_THRESHOLD`, `FACEFLEET_WEIGHTS_DIR`, `FACEFLEET_MIN_FACE`),
    /// which it parses back with the same flags.
    pub model: facefleet_app::ModelArgs,
}

impl DeploySpec {
    /// Defaults for `names`: 1024 MB / 2048 MB, 300 s.
    pub fn new(names: Names, split_zip: impl Into<std::path::PathBuf>, recognize_zip: impl Into<std::path::PathBuf>) -> Self {
        Self {
            names,
            split_zip: split_zip.into(),
            recognize_zip: recognize_zip.into(),
            split_memory_mb: 1024,
            recognize_memory_mb: 2048,
            timeout_secs: 300,
            environment: HashMap::new(),
            model: facefleet_app::ModelArgs::default(),
        }
    }

    /// `<prefix>-video-splitting`.
    pub fn split_function(&self) -> String {
        self.names.split_function.clone()
    }

    /// `<prefix>-face-recognition`.
    pub fn recognize_function(&self) -> String {
        self.names.recognize_function.clone()
    }

    /// `<prefix>-lambda-artifacts`.
    pub fn artifact_bucket(&self) -> String {
        self.names.lambda_artifacts.clone()
    }

    /// `<prefix>-video-lambda`.
    pub fn role_name(&self) -> String {
        self.names.lambda_role.clone()
    }
}

/// What happened to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// It did not exist and was created.
    Created,
    /// It existed and was changed.
    Updated,
    /// It already matched.
    Unchanged,
}

/// The changes of one deployment, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeployReport {
    /// (resource, change).
    pub items: Vec<(String, Change)>,
}

impl DeployReport {
    fn push(&mut self, what: impl Into<String>, change: Change) {
        let what = what.into();
        tracing::info!(resource = what, ?change, "deploy");
        self.items.push((what, change));
    }
    /// True when nothing was created or updated.
    pub fn is_unchanged(&self) -> bool {
        self.items.iter().all(|(_, c)| *c == Change::Unchanged)
    }
}

impl std::fmt::Display for DeployReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (what, change) in &self.items {
            writeln!(f, "{change:<9?} {what}")?;
        }
        Ok(())
    }
}

/// Why the deployment failed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// An AWS call failed.
    #[error("{call}: {message}")]
    Aws {
        /// What was being done.
        call: String,
        /// The service's message.
        message: String,
    },
    /// A package could not be read.
    #[error(transparent)]
    Package(#[from] PackageError),
    /// The object store failed.
    #[error("object store: {0}")]
    Store(#[from] facefleet_ports::PortError),
    /// A function did not become ready in time.
    #[error("function `{0}` did not become ready")]
    NotReady(String),
    /// The settings cannot be passed to a function.
    #[error(transparent)]
    Settings(#[from] facefleet_app::settings::EnvError),
}

fn aws<E: std::fmt::Debug + std::fmt::Display + std::error::Error + Send + Sync + 'static>(call: &str) -> impl FnOnce(aws_sdk_lambda::error::SdkError<E, aws_sdk_lambda::config::http::HttpResponse>) -> DeployError + '_ {
    move |e| DeployError::Aws { call: call.to_string(), message: format!("{}", aws_sdk_lambda::error::DisplayErrorContext(&e)) }
}

fn aws_s3<E: std::fmt::Debug + std::fmt::Display + std::error::Error + Send + Sync + 'static>(call: &str) -> impl FnOnce(aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> DeployError + '_ {
    move |e| DeployError::Aws { call: call.to_string(), message: format!("{}", aws_sdk_s3::error::DisplayErrorContext(&e)) }
}

fn aws_iam<E: std::fmt::Debug + std::fmt::Display + std::error::Error + Send + Sync + 'static>(call: &str) -> impl FnOnce(aws_sdk_iam::error::SdkError<E, aws_sdk_iam::config::http::HttpResponse>) -> DeployError + '_ {
    move |e| DeployError::Aws { call: call.to_string(), message: format!("{}", aws_sdk_iam::error::DisplayErrorContext(&e)) }
}

/// The AWS clients the deployment uses.
#[derive(Clone)]
pub struct DeployClients {
    /// S3 (path-style against an emulator).
    pub s3: aws_sdk_s3::Client,
    /// IAM.
    pub iam: aws_sdk_iam::Client,
    /// Lambda.
    pub lambda: aws_sdk_lambda::Client,
    /// The object store over `s3`.
    pub store: std::sync::Arc<dyn ObjectStore>,
    /// Region.
    pub region: String,
}

impl DeployClients {
    /// Clients from the standard chain and `opts`.
    pub async fn load(opts: &facefleet_aws::AwsOptions) -> Self {
        let clients = facefleet_aws::AwsClients::load(opts).await;
        let region = clients.region();
        Self {
            lambda: aws_sdk_lambda::Client::new(&clients.config),
            store: std::sync::Arc::new(facefleet_aws::S3Store::new(clients.s3.clone(), region.clone())),
            s3: clients.s3,
            iam: clients.iam,
            region,
        }
    }
}

const PERMISSION_ID: &str = "facefleet-s3-invoke";

/// Deploys (or updates) everything of `spec`; see the module doc.
pub async fn deploy(c: &DeployClients, spec: &DeploySpec) -> Result<DeployReport, DeployError> {
    let mut report = DeployReport::default();
    let n = &spec.names;
    let artifacts = spec.artifact_bucket();
    for bucket in [&n.video_input, &n.video_stage1, &n.video_output, &n.gallery_bucket, &artifacts] {
        if c.store.bucket_exists(bucket).await? {
            report.push(format!("bucket {bucket}"), Change::Unchanged);
        } else {
            c.store.create_bucket(bucket).await?;
            report.push(format!("bucket {bucket}"), Change::Created);
        }
    }
    let role_arn = ensure_role(c, spec, &mut report).await?;
    let mut arns = Vec::new();
    for (function, zip, memory) in [
        (spec.split_function(), &spec.split_zip, spec.split_memory_mb),
        (spec.recognize_function(), &spec.recognize_zip, spec.recognize_memory_mb),
    ] {
        let (size, sha) = sha256_of(zip)?;
        let package = Package { path: zip.clone(), size, sha256: sha };
        arns.push(ensure_function(c, spec, &function, &package, memory, &role_arn, &mut report).await?);
    }
    let account = role_arn.split(':').nth(4).unwrap_or_default().to_string();
    for (arn, bucket) in [(&arns[0], &n.video_input), (&arns[1], &n.video_stage1)] {
        ensure_permission(c, arn, bucket, &account, &mut report).await?;
    }
    ensure_notification(c, &n.video_input, &n.split_notification, &arns[0], None, &mut report).await?;
    ensure_notification(c, &n.video_stage1, &n.recognize_notification, &arns[1], Some(".jpg"), &mut report)
        .await?;
    Ok(report)
}

fn role_policy(spec: &DeploySpec) -> Value {
    let n = &spec.names;
    let buckets = [&n.video_input, &n.video_stage1, &n.video_output, &n.gallery_bucket];
    let bucket_arns: Vec<String> = buckets.iter().map(|b| format!("arn:aws:s3:::{b}")).collect();
    let object_arns: Vec<String> = buckets.iter().map(|b| format!("arn:aws:s3:::{b}/*")).collect();
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": bucket_arns},
            {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], "Resource": object_arns},
            {"Effect": "Allow", "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"], "Resource": "*"}
        ]
    })
}

fn trust_policy() -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]
    })
}

/// IAM returns policy documents URL-encoded.
fn parse_policy_document(doc: &str) -> Option<Value> {
    serde_json::from_str(doc)
        .ok()
        .or_else(|| facefleet_video::event::decode_key(&doc.replace('+', "%2B")).ok().and_then(|d| serde_json::from_str(&d).ok()))
}

async fn ensure_role(c: &DeployClients, spec: &DeploySpec, report: &mut DeployReport) -> Result<String, DeployError> {
    let name = spec.role_name();
    let arn = match c.iam.get_role().role_name(&name).send().await {
        Ok(out) => {
            report.push(format!("role {name}"), Change::Unchanged);
            out.role().map(|r| r.arn().to_string()).unwrap_or_default()
        }
        Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_entity_exception()) => {
            let out = c
                .iam
                .create_role()
                .role_name(&name)
                .assume_role_policy_document(trust_policy().to_string())
                .description("facefleet video functions")
                .send()
                .await
                .map_err(aws_iam("create role"))?;
            report.push(format!("role {name}"), Change::Created);
            out.role().map(|r| r.arn().to_string()).unwrap_or_default()
        }
        Err(e) => return Err(aws_iam("get role")(e)),
    };
    let policy_name = "facefleet-video";
    let wanted = role_policy(spec);
    let current = match c.iam.get_role_policy().role_name(&name).policy_name(policy_name).send().await {
        Ok(out) => parse_policy_document(out.policy_document()),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_entity_exception()) => None,
        Err(e) => return Err(aws_iam("get role policy")(e)),
    };
    let change = match &current {
        Some(v) if *v == wanted => Change::Unchanged,
        Some(_) => Change::Updated,
        None => Change::Created,
    };
    if change != Change::Unchanged {
        c.iam
            .put_role_policy()
            .role_name(&name)
            .policy_name(policy_name)
            .policy_document(wanted.to_string())
            .send()
            .await
            .map_err(aws_iam("put role policy"))?;
    }
    report.push(format!("role policy {name}/{policy_name}"), change);
    Ok(arn)
}

/// The environment of `function`: the spec's, the prefix, and for
/// face-recognition the model settings.
fn environment(spec: &DeploySpec, function: &str) -> Result<HashMap<String, String>, DeployError> {
    let mut env = spec.environment.clone();
    env.insert("FACEFLEET_PREFIX".into(), spec.names.prefix.clone());
    env.entry("RUST_LOG".into()).or_insert_with(|| "info".into());
    if function == spec.recognize_function() {
        env.extend(facefleet_app::settings::to_env(&spec.model)?);
    }
    Ok(env)
}

async fn upload_code(c: &DeployClients, spec: &DeploySpec, function: &str, package: &Package) -> Result<String, DeployError> {
    let key = format!("{function}/{}.zip", package.sha256.replace(['/', '+', '='], "_"));
    let body = aws_sdk_s3::primitives::ByteStream::from_path(&package.path)
        .await
        .map_err(|e| DeployError::Aws { call: "reading the zip".into(), message: e.to_string() })?;
    c.s3.put_object().bucket(spec.artifact_bucket()).key(&key).body(body).send().await.map_err(aws_s3("upload zip"))?;
    Ok(key)
}

async fn ensure_function(
    c: &DeployClients,
    spec: &DeploySpec,
    function: &str,
    package: &Package,
    memory: i32,
    role_arn: &str,
    report: &mut DeployReport,
) -> Result<String, DeployError> {
    let env = environment(spec, function)?;
    let existing = match c.lambda.get_function().function_name(function).send().await {
        Ok(out) => out.configuration().cloned(),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => None,
        Err(e) => return Err(aws("get function")(e)),
    };
    let Some(conf) = existing else {
        let key = upload_code(c, spec, function, package).await?;
        let out = c
            .lambda
            .create_function()
            .function_name(function)
            .runtime(Runtime::Providedal2023)
            .handler("bootstrap")
            .role(role_arn)
            .architectures(Architecture::X8664)
            .memory_size(memory)
            .timeout(spec.timeout_secs)
            .environment(Environment::builder().set_variables(Some(env)).build())
            .code(FunctionCode::builder().s3_bucket(spec.artifact_bucket()).s3_key(key).build())
            .send()
            .await
            .map_err(aws("create function"))?;
        report.push(format!("function {function}"), Change::Created);
        wait_ready(c, function).await?;
        return Ok(out.function_arn().unwrap_or_default().to_string());
    };
    let arn = conf.function_arn().unwrap_or_default().to_string();
    if conf.code_sha256() == Some(package.sha256.as_str()) {
        report.push(format!("code of {function}"), Change::Unchanged);
    } else {
        let key = upload_code(c, spec, function, package).await?;
        c.lambda
            .update_function_code()
            .function_name(function)
            .s3_bucket(spec.artifact_bucket())
            .s3_key(key)
            .send()
            .await
            .map_err(aws("update function code"))?;
        report.push(format!("code of {function}"), Change::Updated);
        wait_ready(c, function).await?;
    }
    let current_env = conf.environment().and_then(|e| e.variables()).cloned().unwrap_or_default();
    let same = conf.memory_size() == Some(memory)
        && conf.timeout() == Some(spec.timeout_secs)
        && conf.role() == Some(role_arn)
        && conf.handler() == Some("bootstrap")
        && conf.runtime() == Some(&Runtime::Providedal2023)
        && current_env == env;
    if same {
        report.push(format!("configuration of {function}"), Change::Unchanged);
    } else {
        c.lambda
            .update_function_configuration()
            .function_name(function)
            .runtime(Runtime::Providedal2023)
            .handler("bootstrap")
            .role(role_arn)
            .memory_size(memory)
            .timeout(spec.timeout_secs)
            .environment(Environment::builder().set_variables(Some(env)).build())
            .send()
            .await
            .map_err(aws("update function configuration"))?;
        report.push(format!("configuration of {function}"), Change::Updated);
        wait_ready(c, function).await?;
    }
    Ok(arn)
}

/// Waits until the function's state is active and its last update done
/// (Lambda refuses further updates before that).
async fn wait_ready(c: &DeployClients, function: &str) -> Result<(), DeployError> {
    use aws_sdk_lambda::types::{LastUpdateStatus, State};
    for _ in 0..120 {
        let conf = c
            .lambda
            .get_function_configuration()
            .function_name(function)
            .send()
            .await
            .map_err(aws("get function configuration"))?;
        let active = conf.state().is_none_or(|s| *s == State::Active);
        let updated = conf.last_update_status().is_none_or(|s| *s != LastUpdateStatus::InProgress);
        if conf.state() == Some(&State::Failed) || conf.last_update_status() == Some(&LastUpdateStatus::Failed) {
            return Err(DeployError::NotReady(format!(
                "{function} ({})",
                conf.state_reason().or(conf.last_update_status_reason()).unwrap_or("failed")
            )));
        }
        if active && updated {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Err(DeployError::NotReady(function.to_string()))
}

async fn ensure_permission(
    c: &DeployClients,
    function_arn: &str,
    bucket: &str,
    account: &str,
    report: &mut DeployReport,
) -> Result<(), DeployError> {
    let source_arn = format!("arn:aws:s3:::{bucket}");
    let policy = match c.lambda.get_policy().function_name(function_arn).send().await {
        Ok(out) => out.policy().and_then(|p| serde_json::from_str::<Value>(p).ok()),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => None,
        Err(e) => return Err(aws("get policy")(e)),
    };
    let exists = policy
        .as_ref()
        .and_then(|p| p.get("Statement"))
        .and_then(Value::as_array)
        .is_some_and(|stmts| stmts.iter().any(|s| s.get("Sid").and_then(Value::as_str) == Some(PERMISSION_ID)));
    if exists {
        report.push(format!("permission s3:{bucket} → {function_arn}"), Change::Unchanged);
        return Ok(());
    }
    let mut req = c
        .lambda
        .add_permission()
        .function_name(function_arn)
        .statement_id(PERMISSION_ID)
        .action("lambda:InvokeFunction")
        .principal("s3.amazonaws.com")
        .source_arn(source_arn);
    if !account.is_empty() {
        req = req.source_account(account);
    }
    req.send().await.map_err(aws("add permission"))?;
    report.push(format!("permission s3:{bucket} → {function_arn}"), Change::Created);
    Ok(())
}

fn lambda_config(id: &str, arn: &str, suffix: Option<&str>) -> LambdaFunctionConfiguration {
    let mut b = LambdaFunctionConfiguration::builder().id(id).lambda_function_arn(arn).events(Event::S3ObjectCreated);
    if let Some(s) = suffix {
        b = b.filter(
            NotificationConfigurationFilter::builder()
                .key(S3KeyFilter::builder().filter_rules(FilterRule::builder().name(FilterRuleName::Suffix).value(s).build()).build())
                .build(),
        );
    }
    b.build().expect("function ARN and events are set")
}

/// Comparable form of a notification: ARN, events, filter rules.
fn signature(c: &LambdaFunctionConfiguration) -> (String, Vec<String>, Vec<(String, String)>) {
    let mut events: Vec<String> = c.events().iter().map(|e| e.as_str().to_string()).collect();
    events.sort();
    let mut rules: Vec<(String, String)> = c
        .filter()
        .and_then(|f| f.key())
        .map(|k| {
            k.filter_rules()
                .iter()
                .map(|r| {
                    (r.name().map(|n| n.as_str().to_ascii_lowercase()).unwrap_or_default(), r.value().unwrap_or_default().to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    rules.sort();
    (c.lambda_function_arn().to_string(), events, rules)
}

async fn ensure_notification(
    c: &DeployClients,
    bucket: &str,
    id: &str,
    function_arn: &str,
    suffix: Option<&str>,
    report: &mut DeployReport,
) -> Result<(), DeployError> {
    let current = match c.s3.get_bucket_notification_configuration().bucket(bucket).send().await {
        Ok(out) => out,
        // The moto emulator answers a bucket without notifications with an
        // empty `<GetBucketNotificationResponse/>` the SDK cannot parse:
        // that means "no configuration".
        Err(e) if format!("{}", aws_sdk_s3::error::DisplayErrorContext(&e)).contains("GetBucketNotificationResponse") => {
            aws_sdk_s3::operation::get_bucket_notification_configuration::GetBucketNotificationConfigurationOutput::builder()
                .build()
        }
        Err(e) => return Err(aws_s3("get bucket notification configuration")(e)),
    };
    let wanted = lambda_config(id, function_arn, suffix);
    let mine: Vec<&LambdaFunctionConfiguration> =
        current.lambda_function_configurations().iter().filter(|l| l.id() == Some(id)).collect();
    let change = match mine.as_slice() {
        [one] if signature(one) == signature(&wanted) => Change::Unchanged,
        [] => Change::Created,
        _ => Change::Updated,
    };
    if change != Change::Unchanged {
        let mut lambdas: Vec<LambdaFunctionConfiguration> =
            current.lambda_function_configurations().iter().filter(|l| l.id() != Some(id)).cloned().collect();
        lambdas.push(wanted);
        let config = NotificationConfiguration::builder()
            .set_lambda_function_configurations(Some(lambdas))
            .set_queue_configurations(Some(current.queue_configurations().to_vec()))
            .set_topic_configurations(Some(current.topic_configurations().to_vec()))
            .set_event_bridge_configuration(current.event_bridge_configuration().cloned())
            .build();
        c.s3
            .put_bucket_notification_configuration()
            .bucket(bucket)
            .notification_configuration(config)
            .send()
            .await
            .map_err(aws_s3("put bucket notification configuration"))?;
    }
    report.push(format!("notification {bucket} → {function_arn}"), change);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_documents_decode() {
        let v = json!({"a": "b c+d"});
        assert_eq!(parse_policy_document(&v.to_string()), Some(v.clone()));
        let encoded = facefleet_video::event::encode_key(&v.to_string()).replace('+', "%20");
        assert_eq!(parse_policy_document(&encoded), Some(v));
    }

    #[test]
    fn face_recognition_gets_the_model_settings() {
        let mut spec = DeploySpec::new(Names::new("p"), "a.zip", "b.zip");
        spec.model = facefleet_app::ModelArgs {
            recognizer: facefleet_app::settings::RecognizerKind::DlibResnet,
            threshold: Some(0.9),
            weights_dir: None,
            min_face: Some(40.0),
        };
        let env = environment(&spec, &spec.recognize_function()).unwrap();
        assert_eq!(env.get("FACEFLEET_RECOGNIZER").map(String::as_str), Some("dlib-resnet"));
        assert_eq!(env.get("FACEFLEET_THRESHOLD").map(String::as_str), Some("0.9"));
        assert!(!env.contains_key("FACEFLEET_WEIGHTS_DIR"));
        assert_eq!(env.get("FACEFLEET_MIN_FACE").map(String::as_str), Some("40"));
        let split = environment(&spec, &spec.split_function()).unwrap();
        assert!(!split.contains_key("FACEFLEET_RECOGNIZER"), "{split:?}");
        assert_eq!(split.get("FACEFLEET_PREFIX").map(String::as_str), Some("p"));
    }

    #[test]
    fn notification_signatures_ignore_case_and_order() {
        let a = lambda_config("x", "arn:f", Some(".jpg"));
        let b = lambda_config("y", "arn:f", Some(".jpg"));
        assert_eq!(signature(&a), signature(&b));
        assert_ne!(signature(&a), signature(&lambda_config("x", "arn:f", None)));
    }
}
