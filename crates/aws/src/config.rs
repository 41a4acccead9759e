//! Loading the AWS configuration: the standard credential and region chain,
//! an optional endpoint override (for emulators), retries with back-off and
//! timeouts that make an unreachable backend fail fast enough for callers to
//! back off.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

/// How SDK calls are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetryMode {
    /// Exponential back-off with jitter on transient errors and throttling.
    #[default]
    Standard,
    /// Standard plus client-side rate limiting when the service throttles.
    Adaptive,
}

impl std::str::FromStr for RetryMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "standard" => Ok(RetryMode::Standard),
            "adaptive" => Ok(RetryMode::Adaptive),
            other => Err(format!(
                "unknown retry mode `{other}` (expected `standard` or `adaptive`)"
            )),
        }
    }
}

impl std::fmt::Display for RetryMode {
    /// The flag value `--aws-retry-mode` parses back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RetryMode::Standard => "standard",
            RetryMode::Adaptive => "adaptive",
        })
    }
}

/// Options of the AWS backend. Everything left `None` comes from the
/// standard chain: `AWS_REGION`/`AWS_PROFILE`/`AWS_ENDPOINT_URL`
/// environment, `~/.aws/config`, then the instance metadata (instance role).
#[derive(Debug, Clone)]
pub struct AwsOptions {
    /// Endpoint of every service (e.g. an emulator `http://127.0.0.1:5000`).
    /// `None`: `AWS_ENDPOINT_URL` if set, else the real AWS endpoints.
    pub endpoint: Option<String>,
    /// Region; `None`: the standard chain (falls back to `us-east-1`).
    pub region: Option<String>,
    /// Named profile of `~/.aws/config`; `None`: `AWS_PROFILE` or default.
    pub profile: Option<String>,
    /// Force S3 path-style addressing (`None`: on when an endpoint is set).
    pub force_path_style: Option<bool>,
    /// Retry mode of every call.
    pub retry_mode: RetryMode,
    /// Attempts per call, the first included (1 = no retry).
    pub max_attempts: u32,
    /// First back-off delay; doubles each attempt (with jitter).
    pub initial_backoff: Duration,
    /// Longest back-off delay.
    pub max_backoff: Duration,
    /// Timeout of establishing a connection.
    pub connect_timeout: Duration,
    /// Timeout of one attempt (long polls add their wait on top).
    pub attempt_timeout: Duration,
}

impl Default for AwsOptions {
    fn default() -> Self {
        Self {
            endpoint: None,
            region: None,
            profile: None,
            force_path_style: None,
            retry_mode: RetryMode::Standard,
            max_attempts: 3,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            attempt_timeout: Duration::from_secs(30),
        }
    }
}

impl AwsOptions {
    /// Options talking to `endpoint` (an emulator), other fields default.
    pub fn with_endpoint(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: Some(endpoint.into()),
            ..Self::default()
        }
    }

    /// The retry configuration of these options.
    pub fn retry_config(&self) -> RetryConfig {
        let base = match self.retry_mode {
            RetryMode::Standard => RetryConfig::standard(),
            RetryMode::Adaptive => RetryConfig::adaptive(),
        };
        base.with_max_attempts(self.max_attempts.max(1))
            .with_initial_backoff(self.initial_backoff)
            .with_max_backoff(self.max_backoff)
    }

    /// The timeout configuration of these options.
    pub fn timeout_config(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout)
            .operation_attempt_timeout(self.attempt_timeout)
            .build()
    }
}

/// Loads the shared SDK configuration for `opts`.
pub async fn load_sdk_config(opts: &AwsOptions) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(opts.retry_config())
        .timeout_config(opts.timeout_config());
    if let Some(endpoint) = &opts.endpoint {
        loader = loader.endpoint_url(endpoint.clone());
    }
    if let Some(profile) = &opts.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(region) = &opts.region {
        loader = loader.region(Region::new(region.clone()));
    }
    let mut config = loader.load().await;
    if config.region().is_none() {
        config = config
            .into_builder()
            .region(Region::new("us-east-1"))
            .build();
    }
    config
}

/// True when S3 should use path-style addressing: forced by the options, or
/// an endpoint override is in effect (emulators rarely serve virtual hosts).
pub(crate) fn use_path_style(opts: &AwsOptions, config: &SdkConfig) -> bool {
    opts.force_path_style.unwrap_or_else(|| {
        config.endpoint_url().is_some() || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some()
    })
}

/// The SDK clients of one deployment, built from one [`SdkConfig`].
#[derive(Debug, Clone)]
pub struct AwsClients {
    /// The shared configuration.
    pub config: SdkConfig,
    /// S3 client (path-style when an endpoint is overridden).
    pub s3: aws_sdk_s3::Client,
    /// SQS client.
    pub sqs: aws_sdk_sqs::Client,
    /// EC2 client.
    pub ec2: aws_sdk_ec2::Client,
    /// IAM client.
    pub iam: aws_sdk_iam::Client,
    /// Attempt timeout of the options (long polls extend it).
    pub(crate) attempt_timeout: Duration,
}

impl AwsClients {
    /// Loads the configuration for `opts` and builds every client.
    pub async fn load(opts: &AwsOptions) -> Self {
        let config = load_sdk_config(opts).await;
        let s3_conf = aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(use_path_style(opts, &config))
            .build();
        Self {
            s3: aws_sdk_s3::Client::from_conf(s3_conf),
            sqs: aws_sdk_sqs::Client::new(&config),
            ec2: aws_sdk_ec2::Client::new(&config),
            iam: aws_sdk_iam::Client::new(&config),
            attempt_timeout: opts.attempt_timeout,
            config,
        }
    }

    /// The region in use.
    pub fn region(&self) -> String {
        self.config
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "us-east-1".to_string())
    }
}
