//! The AWS flags (connection, `provision`, `teardown`) of the binaries built
//! with the `aws` feature.

use std::time::Duration;

use facefleet_aws::{provision, teardown, AwsClients, AwsOptions, ProvisionSpec, Report, RetryMode};
use facefleet_ports::Names;
use serde::{Deserialize, Serialize};

use crate::settings::{parse_prefix, to_env, ModelArgs};

/// How to reach AWS. Unset flags fall back to the standard AWS chain
/// (`AWS_REGION`, `AWS_PROFILE`, `AWS_ENDPOINT_URL`, instance role...).
#[derive(Debug, Clone, PartialEq, clap::Args, Serialize, Deserialize)]
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
    /// Attempts per AWS call, the first included (1 to 20).
    #[arg(long = "aws-max-attempts", env = "FACEFLEET_AWS_MAX_ATTEMPTS", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=20))]
    pub max_attempts: u32,
    /// Retry mode: standard or adaptive (client-side rate limiting).
    #[arg(long = "aws-retry-mode", env = "FACEFLEET_AWS_RETRY_MODE", default_value = "standard")]
    #[serde(with = "display_fromstr")]
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

/// A value through its `Display` and `FromStr` forms (the flag's form).
mod display_fromstr {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<T: std::fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
        D: Deserializer<'de>,
    {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// `facefleet provision`: create or update every resource of a deployment.
#[derive(Debug, Clone, clap::Args)]
pub struct ProvisionArgs {
    /// AWS connection.
    #[command(flatten)]
    pub aws: AwsArgs,
    /// Prefix every resource is named from.
    #[arg(long, env = "FACEFLEET_PREFIX", default_value = Names::DEFAULT_PREFIX, value_parser = parse_prefix)]
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
    /// The face model of the EC2 workers (`--recognizer`, `--threshold`,
    /// `--min-face`): the same flags as `facefleet up`, written into the
    /// workers' environment file by the launch template's user data.
    #[command(flatten)]
    pub model: ModelArgs,
}

impl ProvisionArgs {
    /// The provisioning spec these flags describe. Refuses `--weights-dir`:
    /// EC2 workers use the weights built into the AMI's `app-tier`.
    pub fn spec(&self) -> anyhow::Result<ProvisionSpec> {
        anyhow::ensure!(
            self.model.weights_dir.is_none(),
            "--weights-dir is not for provision: EC2 workers use the weights built into the AMI's app-tier"
        );
        let mut spec = ProvisionSpec::new(&self.prefix);
        spec.app_tier_ami = self.ami.clone();
        spec.instance_type = self.instance_type.clone();
        spec.vpc_id = self.vpc_id.clone();
        spec.web_ingress_cidr = self.web_cidr.clone();
        spec.web_port = self.web_port;
        spec.video_buckets = !self.no_video_buckets;
        // Validated flags: a recognizer name and numbers, one line each.
        spec.worker_env = to_env(&self.model)?;
        Ok(spec)
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
    #[arg(long, env = "FACEFLEET_PREFIX", default_value = Names::DEFAULT_PREFIX, value_parser = parse_prefix)]
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
    let report = provision(&clients, &args.spec()?).await?;
    println!("{report}");
    Ok(report)
}

/// Runs `teardown` and prints its report.
pub async fn run_teardown(args: &TeardownArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(
        args.yes,
        "teardown deletes every bucket of prefix `{}` with its objects; add --yes to confirm",
        args.prefix
    );
    let clients = AwsClients::load(&args.aws.options()).await;
    let mut spec = ProvisionSpec::new(&args.prefix);
    spec.video_buckets = true;
    let report = teardown(&clients, &spec, Duration::from_secs(args.wait_secs)).await?;
    println!("{report}");
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Provision {
        #[command(flatten)]
        args: ProvisionArgs,
    }

    fn parse(flags: &[&str]) -> ProvisionArgs {
        let mut argv = vec!["provision", "--prefix", "p"];
        argv.extend_from_slice(flags);
        Provision::try_parse_from(argv).unwrap().args
    }

    #[test]
    fn the_model_flags_reach_the_ec2_workers_environment() {
        let spec = parse(&["--recognizer", "dlib-resnet", "--threshold", "0.9", "--min-face", "40"]).spec().unwrap();
        let get = |k: &str| spec.worker_env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("FACEFLEET_RECOGNIZER"), Some("dlib-resnet"));
        assert_eq!(get("FACEFLEET_THRESHOLD"), Some("0.9"));
        assert_eq!(get("FACEFLEET_MIN_FACE"), Some("40"));
        // Unset flags stay unset: the workers' own defaults.
        let spec = parse(&[]).spec().unwrap();
        assert_eq!(spec.worker_env, [("FACEFLEET_RECOGNIZER".to_string(), "mobilefacenet".to_string())]);
        // A weights folder on this machine means nothing to an EC2 worker.
        let e = parse(&["--weights-dir", "/w"]).spec().unwrap_err().to_string();
        assert!(e.contains("--weights-dir"), "{e}");
    }
}
