//! Command-line pieces for the binaries: AWS connection flags and the
//! `provision` / `teardown` subcommands (flatten them into a clap parser).
//!
//! ```ignore
//! #[derive(clap::Subcommand)]
//! enum Command {
//!     /// Create or update every AWS resource of a deployment.
//!     Provision(facefleet_aws::cli::ProvisionArgs),
//!     /// Delete every AWS resource of a deployment.
//!     Teardown(facefleet_aws::cli::TeardownArgs),
//! }
//! // ...
//! Command::Provision(a) => facefleet_aws::cli::run_provision(&a).await?,
//! ```

use std::time::Duration;

use crate::config::{AwsClients, AwsOptions, RetryMode};
use crate::provision::{provision, teardown, ProvisionSpec, Report};

/// How to reach AWS. Unset flags fall back to the standard AWS chain
/// (`AWS_REGION`, `AWS_PROFILE`, `AWS_ENDPOINT_URL`, instance role...).
#[derive(Debug, Clone, clap::Args)]
pub struct AwsArgs {
    /// Endpoint of every AWS service (an emulator, e.g. http://127.0.0.1:5000).
    #[arg(long = "aws-endpoint", env = "FACEFLEET_AWS_ENDPOINT")]
    pub endpoint: Option<String>,
    /// AWS region (default: the standard chain, else us-east-1).
    #[arg(long = "aws-region", env = "FACEFLEET_AWS_REGION")]
    pub region: Option<String>,
    /// Named profile of ~/.aws/config.
    #[arg(long = "aws-profile", env = "FACEFLEET_AWS_PROFILE")]
    pub profile: Option<String>,
    /// Attempts per AWS call, the first included.
    #[arg(long = "aws-max-attempts", env = "FACEFLEET_AWS_MAX_ATTEMPTS", default_value_t = 3)]
    pub max_attempts: u32,
    /// Retry mode: standard or adaptive (client-side rate limiting).
    #[arg(long = "aws-retry-mode", env = "FACEFLEET_AWS_RETRY_MODE", default_value = "standard")]
    pub retry_mode: RetryMode,
}

impl AwsArgs {
    /// The [`AwsOptions`] these flags ask for.
    pub fn options(&self) -> AwsOptions {
        AwsOptions {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            profile: self.profile.clone(),
            max_attempts: self.max_attempts,
            retry_mode: self.retry_mode,
            ..AwsOptions::default()
        }
    }
}

/// `facefleet provision`: create or update every resource of a deployment.
#[derive(Debug, Clone, clap::Args)]
pub struct ProvisionArgs {
    /// AWS connection.
    #[command(flatten)]
    pub aws: AwsArgs,
    /// Prefix every resource is named from.
    #[arg(long, env = "FACEFLEET_PREFIX", default_value = "facefleet")]
    pub prefix: String,
    /// App-tier AMI (from ami/bake-app-tier.sh); without it the launch
    /// template is skipped.
    #[arg(long, env = "FACEFLEET_AMI")]
    pub ami: Option<String>,
    /// Instance type of the app-tier workers.
    #[arg(long, default_value = "t3.micro")]
    pub instance_type: String,
    /// VPC of the security groups (default: the default VPC).
    #[arg(long)]
    pub vpc_id: Option<String>,
    /// CIDR allowed to reach the web tier.
    #[arg(long, default_value = "0.0.0.0/0")]
    pub web_cidr: String,
    /// Port of the web tier.
    #[arg(long, default_value_t = 8000)]
    pub web_port: u16,
    /// Do not create the video buckets (<prefix>-input, -stage-1, -output).
    #[arg(long)]
    pub no_video_buckets: bool,
}

impl ProvisionArgs {
    /// The provisioning spec these flags describe.
    pub fn spec(&self) -> ProvisionSpec {
        let mut spec = ProvisionSpec::new(&self.prefix);
        spec.app_tier_ami = self.ami.clone();
        spec.instance_type = self.instance_type.clone();
        spec.vpc_id = self.vpc_id.clone();
        spec.web_ingress_cidr = self.web_cidr.clone();
        spec.web_port = self.web_port;
        spec.video_buckets = !self.no_video_buckets;
        spec
    }
}

/// `facefleet teardown`: delete every resource of a deployment, data
/// included.
#[derive(Debug, Clone, clap::Args)]
pub struct TeardownArgs {
    /// AWS connection.
    #[command(flatten)]
    pub aws: AwsArgs,
    /// Prefix every resource is named from.
    #[arg(long, env = "FACEFLEET_PREFIX", default_value = "facefleet")]
    pub prefix: String,
    /// Confirm: buckets are deleted with every object in them.
    #[arg(long)]
    pub yes: bool,
    /// Longest wait, in seconds, for instances to terminate before their
    /// security groups are deleted.
    #[arg(long, default_value_t = 300)]
    pub wait_secs: u64,
}

/// Runs `provision` and prints its report.
pub async fn run_provision(args: &ProvisionArgs) -> anyhow::Result<Report> {
    let clients = AwsClients::load(&args.aws.options()).await;
    let report = provision(&clients, &args.spec()).await?;
    println!("{report}");
    Ok(report)
}

/// Runs `teardown` and prints its report.
pub async fn run_teardown(args: &TeardownArgs) -> anyhow::Result<Report> {
    if !args.yes {
        anyhow::bail!(
            "teardown deletes every bucket of prefix `{}` with its objects; add --yes to confirm",
            args.prefix
        );
    }
    let clients = AwsClients::load(&args.aws.options()).await;
    let mut spec = ProvisionSpec::new(&args.prefix);
    spec.video_buckets = true;
    let report = teardown(&clients, &spec, Duration::from_secs(args.wait_secs)).await?;
    println!("{report}");
    Ok(report)
}
