//! Idempotent provisioning and teardown of every AWS resource of one
//! deployment: buckets, queues (dead-letter redrive included), IAM roles and
//! instance profiles with least-privilege policies, security groups and the
//! app-tier launch template. Each step compares what exists with what is
//! wanted and reports `created`, `updated` or `unchanged`, so a second run
//! reports no change.

mod compute;
mod iam;
mod storage;

use std::fmt;
use std::time::Duration;

use facefleet_ports::{Names, PortError};

use crate::config::AwsClients;
use crate::ec2::PREFIX_TAG;

/// What provisioning creates, named from one prefix.
#[derive(Debug, Clone)]
pub struct ProvisionSpec {
    /// Resource names.
    pub names: Names,
    /// Also create the video buckets (`<prefix>-input`, `-stage-1`,
    /// `-output`) of the serverless video path.
    pub video_buckets: bool,
    /// Largest request message (the course's 1 KiB).
    pub request_max_message_size: usize,
    /// Default visibility of request messages (workers extend it).
    pub request_visibility: Duration,
    /// Default visibility of response messages.
    pub response_visibility: Duration,
    /// Receives after which a request moves to the dead-letter queue.
    pub max_receives: u32,
    /// How long the dead-letter queue keeps messages.
    pub dead_letter_retention: Duration,
    /// AMI of the app tier (from `ami/bake-app-tier.sh`); without it the
    /// launch template is skipped.
    pub app_tier_ami: Option<String>,
    /// Instance type of the workers.
    pub instance_type: String,
    /// VPC of the security groups; `None`: the default VPC.
    pub vpc_id: Option<String>,
    /// CIDR allowed to reach the web tier's port.
    pub web_ingress_cidr: String,
    /// Port the web tier listens on.
    pub web_port: u16,
    /// Most app-tier instances running at once (written to the instances'
    /// environment for reference; the autoscaler enforces it).
    pub max_instances: usize,
    /// More `(variable, value)` lines for the workers' environment file:
    /// the deployment's model flags (`FACEFLEET_RECOGNIZER`, ...), so that
    /// EC2 workers run the model the deployment was set up with. Values are
    /// written as they are: one line each, no quotes or backslashes.
    pub worker_env: Vec<(String, String)>,
}

impl ProvisionSpec {
    /// The defaults for `prefix`: the pipeline's queue settings (1 KiB
    /// requests, 15 s request visibility, dead letter after 5 receives),
    /// `t3.micro` workers, web port 8000 open to the world.
    pub fn new(prefix: &str) -> Self {
        Self {
            names: Names::new(prefix),
            video_buckets: true,
            request_max_message_size: 1024,
            request_visibility: Duration::from_secs(15),
            response_visibility: Duration::from_secs(30),
            max_receives: 5,
            dead_letter_retention: Duration::from_secs(14 * 24 * 3600),
            app_tier_ami: None,
            instance_type: "t3.micro".to_string(),
            vpc_id: None,
            web_ingress_cidr: "0.0.0.0/0".to_string(),
            web_port: 8000,
            max_instances: 15,
            worker_env: Vec::new(),
        }
    }

    /// Every bucket of the deployment.
    pub fn buckets(&self) -> Vec<String> {
        let n = &self.names;
        let mut b = vec![n.in_bucket.clone(), n.out_bucket.clone(), n.gallery_bucket.clone()];
        if self.video_buckets {
            b.extend([n.video_input.clone(), n.video_stage1.clone(), n.video_output.clone()]);
        }
        b
    }

    /// Name of the app-tier IAM role and instance profile.
    pub fn app_tier_role(&self) -> String {
        self.names.app_tier.clone()
    }

    /// Name of the web-tier IAM role and instance profile.
    pub fn web_role(&self) -> String {
        self.names.web_role.clone()
    }

    /// Name of the app-tier launch template (and fleet tag value).
    pub fn launch_template(&self) -> String {
        self.names.app_tier.clone()
    }

    /// Name of the app-tier security group.
    pub fn app_tier_security_group(&self) -> String {
        self.names.app_tier_security_group.clone()
    }

    /// Name of the web security group.
    pub fn web_security_group(&self) -> String {
        self.names.web_security_group.clone()
    }

    /// The tags every resource carries.
    pub fn tags(&self) -> Vec<(String, String)> {
        vec![(PREFIX_TAG.to_string(), self.names.prefix.clone())]
    }
}

/// What a step did to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// It did not exist; now it does.
    Created,
    /// It existed with other settings; now it has the wanted ones.
    Updated,
    /// It existed as wanted.
    Unchanged,
    /// It existed; it is gone (teardown).
    Deleted,
    /// It did not exist (teardown).
    Absent,
    /// Not done (see the detail).
    Skipped,
}

impl Action {
    /// True if the step changed something.
    pub fn is_change(self) -> bool {
        matches!(self, Action::Created | Action::Updated | Action::Deleted)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Unchanged => "unchanged",
            Action::Deleted => "deleted",
            Action::Absent => "absent",
            Action::Skipped => "skipped",
        })
    }
}

/// One line of a [`Report`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportItem {
    /// Kind of resource (`bucket`, `queue`, `iam-role`...).
    pub kind: &'static str,
    /// Its name.
    pub name: String,
    /// What was done.
    pub action: Action,
    /// What changed, or why it was skipped.
    pub detail: String,
}

/// What a provisioning or teardown run did, resource by resource.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// One item per resource, in the order handled.
    pub items: Vec<ReportItem>,
}

impl Report {
    fn push(&mut self, kind: &'static str, name: &str, action: Action, detail: impl Into<String>) {
        let detail = detail.into();
        tracing::info!(kind, name, %action, detail = %detail, "provisioning");
        self.items.push(ReportItem {
            kind,
            name: name.to_string(),
            action,
            detail,
        });
    }

    /// Number of resources created, updated or deleted.
    pub fn changes(&self) -> usize {
        self.items.iter().filter(|i| i.action.is_change()).count()
    }

    /// The item of resource `name` of `kind`, if handled.
    pub fn item(&self, kind: &str, name: &str) -> Option<&ReportItem> {
        self.items.iter().find(|i| i.kind == kind && i.name == name)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kw = self.items.iter().map(|i| i.kind.len()).max().unwrap_or(4).max(4);
        let nw = self.items.iter().map(|i| i.name.len()).max().unwrap_or(4).max(4);
        writeln!(f, "{:kw$}  {:nw$}  {:9}  detail", "kind", "name", "action")?;
        for i in &self.items {
            writeln!(f, "{:kw$}  {:nw$}  {:9}  {}", i.kind, i.name, i.action.to_string(), i.detail)?;
        }
        write!(f, "{} change(s)", self.changes())
    }
}

/// A provisioning step failed.
#[derive(Debug, thiserror::Error)]
#[error("{kind} `{name}`: {source}")]
pub struct ProvisionError {
    /// Kind of resource.
    pub kind: &'static str,
    /// Its name.
    pub name: String,
    /// What went wrong.
    #[source]
    pub source: PortError,
}

/// Result of one provisioning step.
type StepResult<T> = std::result::Result<T, ProvisionError>;

/// Wraps a port error with the resource it concerns.
fn step_err<'a>(kind: &'static str, name: &'a str) -> impl FnOnce(PortError) -> ProvisionError + 'a {
    move |source| ProvisionError {
        kind,
        name: name.to_string(),
        source,
    }
}

/// Creates or updates every resource of `spec`; idempotent.
pub async fn provision(clients: &AwsClients, spec: &ProvisionSpec) -> StepResult<Report> {
    let mut report = Report::default();
    storage::ensure_buckets(clients, spec, &mut report).await?;
    let (region, account) = storage::ensure_queues(clients, spec, &mut report).await?;
    iam::ensure_roles(clients, spec, &region, &account, &mut report).await?;
    let groups = compute::ensure_security_groups(clients, spec, &mut report).await?;
    compute::ensure_launch_template(clients, spec, &region, &groups, &mut report).await?;
    Ok(report)
}

/// Deletes every resource of `spec` (instances of the prefix first, then
/// the launch template, security groups, roles, queues and buckets with
/// their objects); idempotent. `wait` bounds how long it waits for
/// instances to terminate before deleting their security groups.
pub async fn teardown(clients: &AwsClients, spec: &ProvisionSpec, wait: Duration) -> StepResult<Report> {
    let mut report = Report::default();
    compute::teardown_compute(clients, spec, wait, &mut report).await?;
    iam::teardown_roles(clients, spec, &mut report).await?;
    storage::teardown_storage(clients, spec, &mut report).await?;
    Ok(report)
}

/// Fills `${NAME}` placeholders of `template` from `vars`.
pub(crate) fn fill_template(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("${{{k}}}"), v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_counts_changes_and_prints_a_table() {
        let mut r = Report::default();
        r.push("bucket", "a", Action::Created, "");
        r.push("queue", "b", Action::Unchanged, "");
        r.push("queue", "c", Action::Updated, "MaximumMessageSize");
        assert_eq!(r.changes(), 2);
        let text = r.to_string();
        assert!(text.contains("bucket  a     created"), "{text}");
        assert!(text.ends_with("2 change(s)"));
    }

    #[test]
    fn templates_are_filled() {
        assert_eq!(fill_template("a ${X} ${Y}${X}", &[("X", "1"), ("Y", "2")]), "a 1 21");
    }
}
