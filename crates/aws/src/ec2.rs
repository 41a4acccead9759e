//! [`Fleet`] on Amazon EC2: app-tier workers launched from a launch
//! template, with an optional pool of stopped instances that are started
//! first.
//!
//! The fleet keeps no state of its own: every call rebuilds the view from
//! `DescribeInstances`, filtered on the fleet tag, so a restarted controller
//! adopts the instances it (or a previous run) launched, and never forgets or
//! duplicates them.

use async_trait::async_trait;
use aws_sdk_ec2::types::{
    Filter, InstanceStateName, LaunchTemplateSpecification, ResourceType, Tag, TagSpecification,
};
use facefleet_ports::{Fleet, Instance, InstanceState, PortError, Result};
use tokio::sync::Mutex;

use crate::error::{classify, Failure};

/// Tag key naming the fleet an instance belongs to.
pub const FLEET_TAG: &str = "facefleet:fleet";
/// Tag key naming the deployment prefix an instance belongs to.
pub const PREFIX_TAG: &str = "facefleet:prefix";

/// Error codes meaning "no such instance".
const NO_INSTANCE: &[&str] = &["InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"];

/// How an [`Ec2Fleet`] launches and sizes its workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ec2FleetConfig {
    /// Launch template the workers are launched from (its `$Latest`
    /// version: AMI, instance type, instance profile, security group, user
    /// data).
    pub launch_template: String,
    /// Value of the `facefleet:fleet` tag of the workers (e.g.
    /// `<prefix>-app-tier`); only instances carrying it are ours.
    pub fleet: String,
    /// Value of the `facefleet:prefix` tag.
    pub prefix: String,
    /// Most instances pending or running at once.
    pub max_running: usize,
    /// Most stopped instances kept for a fast restart; a worker stopped
    /// while the pool is full is terminated instead (0: always terminate).
    pub pool_size: usize,
}

impl Ec2FleetConfig {
    /// The configuration provisioning creates for `prefix`: template and
    /// fleet `<prefix>-app-tier`, at most `max_running` instances, a pool as
    /// large as the maximum.
    pub fn for_prefix(prefix: &str, max_running: usize) -> Self {
        Self {
            launch_template: format!("{prefix}-app-tier"),
            fleet: format!("{prefix}-app-tier"),
            prefix: prefix.to_string(),
            max_running,
            pool_size: max_running,
        }
    }
}

/// App-tier workers as EC2 instances.
#[derive(Debug)]
pub struct Ec2Fleet {
    client: aws_sdk_ec2::Client,
    config: Ec2FleetConfig,
    /// Serialises launches and stops of this process, so the max is never
    /// exceeded by concurrent calls.
    lock: Mutex<()>,
}

fn state_of(name: Option<&InstanceStateName>) -> InstanceState {
    match name {
        Some(InstanceStateName::Pending) => InstanceState::Pending,
        Some(InstanceStateName::Running) => InstanceState::Running,
        Some(InstanceStateName::Stopping) | Some(InstanceStateName::ShuttingDown) => {
            InstanceState::Stopping
        }
        Some(InstanceStateName::Stopped) => InstanceState::Stopped,
        _ => InstanceState::Terminated,
    }
}

fn map_ec2(f: Failure, what: &str, id: Option<&str>) -> PortError {
    if f.code_is(NO_INSTANCE) {
        PortError::NoSuchInstance(id.unwrap_or("?").to_string())
    } else if f.code_is(&[
        "InvalidLaunchTemplateName.NotFoundException",
        "InvalidLaunchTemplateId.NotFound",
        "InvalidLaunchTemplateName.MalformedException",
    ]) {
        PortError::InvalidArgument(format!(
            "{what}: launch template not found ({}); run `facefleet provision` first",
            f.message
        ))
    } else if f.code_is(&["InsufficientInstanceCapacity", "InstanceLimitExceeded"]) {
        PortError::Unavailable(format!("{what}: {}", f.message))
    } else if f.code_is(&["IncorrectInstanceState", "IncorrectState"]) {
        PortError::Unavailable(format!("{what}: instance is changing state: {}", f.message))
    } else {
        f.into_port(what)
    }
}

fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build()
}

impl Ec2Fleet {
    /// A fleet of `config` through `client`.
    pub fn new(client: aws_sdk_ec2::Client, config: Ec2FleetConfig) -> Self {
        Self {
            client,
            config,
            lock: Mutex::new(()),
        }
    }

    /// The fleet's configuration.
    pub fn config(&self) -> &Ec2FleetConfig {
        &self.config
    }

    /// Our instances (not terminated), by id.
    async fn describe(&self) -> Result<Vec<Instance>> {
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = self
                .client
                .describe_instances()
                .filters(
                    Filter::builder()
                        .name(format!("tag:{FLEET_TAG}"))
                        .values(&self.config.fleet)
                        .build(),
                )
                .filters(
                    Filter::builder()
                        .name("instance-state-name")
                        .values("pending")
                        .values("running")
                        .values("stopping")
                        .values("stopped")
                        .values("shutting-down")
                        .build(),
                );
            if let Some(t) = &token {
                req = req.next_token(t);
            }
            let out = req.send().await.map_err(|e| {
                map_ec2(classify(e), "DescribeInstances", None)
            })?;
            for reservation in out.reservations() {
                for i in reservation.instances() {
                    let Some(id) = i.instance_id() else { continue };
                    let name = i
                        .tags()
                        .iter()
                        .find(|t| t.key() == Some("Name"))
                        .and_then(|t| t.value())
                        .unwrap_or_default()
                        .to_string();
                    let state = state_of(i.state().and_then(|s| s.name()));
                    if state == InstanceState::Terminated {
                        continue;
                    }
                    found.push(Instance {
                        id: id.to_string(),
                        name,
                        state,
                    });
                }
            }
            match out.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        found.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(found)
    }

    /// Number of instances pending or running.
    pub async fn running_count(&self) -> Result<usize> {
        Ok(self.list().await?.iter().filter(|i| i.state.is_active()).count())
    }

    /// Terminates every instance of the fleet (teardown). Returns their ids.
    pub async fn terminate_all(&self) -> Result<Vec<String>> {
        let _guard = self.lock.lock().await;
        let ids: Vec<String> = self
            .describe()
            .await?
            .into_iter()
            .map(|i| i.id)
            .collect();
        if !ids.is_empty() {
            self.client
                .terminate_instances()
                .set_instance_ids(Some(ids.clone()))
                .send()
                .await
                .map_err(|e| map_ec2(classify(e), "TerminateInstances", None))?;
        }
        Ok(ids)
    }

    fn tag_specification(&self, name: &str) -> TagSpecification {
        TagSpecification::builder()
            .resource_type(ResourceType::Instance)
            .tags(tag("Name", name))
            .tags(tag(FLEET_TAG, &self.config.fleet))
            .tags(tag(PREFIX_TAG, &self.config.prefix))
            .build()
    }
}

#[async_trait]
impl Fleet for Ec2Fleet {
    async fn list(&self) -> Result<Vec<Instance>> {
        self.describe().await
    }

    async fn launch(&self, name: &str) -> Result<Instance> {
        if name.is_empty() || name.len() > 255 {
            return Err(PortError::InvalidArgument(format!(
                "instance name `{name}` must be 1..=255 characters"
            )));
        }
        let _guard = self.lock.lock().await;
        let current = self.describe().await?;
        // Launching a name that is already up is a no-op: a restarted
        // controller must not duplicate its workers.
        if let Some(d) = current
            .iter()
            .find(|d| d.name == name && d.state.is_active())
        {
            return Ok(d.clone());
        }
        let active = current.iter().filter(|d| d.state.is_active()).count();
        if active >= self.config.max_running {
            return Err(PortError::InvalidArgument(format!(
                "fleet `{}` already has {active} instances pending or running (max {})",
                self.config.fleet, self.config.max_running
            )));
        }
        // A stopped instance from the pool starts in seconds.
        if let Some(d) = current
            .iter()
            .find(|d| d.state == InstanceState::Stopped)
        {
            let id = d.id.clone();
            self.client
                .create_tags()
                .resources(&id)
                .tags(tag("Name", name))
                .send()
                .await
                .map_err(|e| map_ec2(classify(e), "CreateTags", Some(&id)))?;
            self.client
                .start_instances()
                .instance_ids(&id)
                .send()
                .await
                .map_err(|e| map_ec2(classify(e), "StartInstances", Some(&id)))?;
            tracing::info!(instance = %id, name, "started pooled instance");
            return Ok(Instance {
                id,
                name: name.to_string(),
                state: InstanceState::Pending,
            });
        }
        let out = self
            .client
            .run_instances()
            .launch_template(
                LaunchTemplateSpecification::builder()
                    .launch_template_name(&self.config.launch_template)
                    .version("$Latest")
                    .build(),
            )
            .min_count(1)
            .max_count(1)
            .tag_specifications(self.tag_specification(name))
            .send()
            .await
            .map_err(|e| map_ec2(classify(e), "RunInstances", None))?;
        let launched = out
            .instances()
            .first()
            .ok_or_else(|| PortError::Other("RunInstances returned no instance".to_string()))?;
        let id = launched.instance_id().unwrap_or_default().to_string();
        tracing::info!(instance = %id, name, "launched instance");
        Ok(Instance {
            id,
            name: name.to_string(),
            state: match state_of(launched.state().and_then(|s| s.name())) {
                InstanceState::Running => InstanceState::Running,
                _ => InstanceState::Pending,
            },
        })
    }

    async fn stop(&self, id: &str) -> Result<()> {
        let _guard = self.lock.lock().await;
        let current = self.describe().await?;
        let Some(target) = current.iter().find(|d| d.id == id) else {
            return Err(PortError::NoSuchInstance(id.to_string()));
        };
        if !target.state.is_active() {
            return Ok(()); // already stopping or stopped
        }
        let pooled = current
            .iter()
            .filter(|d| matches!(d.state, InstanceState::Stopped | InstanceState::Stopping))
            .count();
        // Both StopInstances and TerminateInstances shut the OS down
        // cleanly: systemd sends the worker SIGTERM, it finishes the job in
        // hand; anything lost is redelivered by the queue.
        if pooled < self.config.pool_size {
            self.client
                .stop_instances()
                .instance_ids(id)
                .send()
                .await
                .map_err(|e| map_ec2(classify(e), "StopInstances", Some(id)))?;
            tracing::info!(instance = %id, "stopped instance (kept in the pool)");
        } else {
            self.client
                .terminate_instances()
                .instance_ids(id)
                .send()
                .await
                .map_err(|e| map_ec2(classify(e), "TerminateInstances", Some(id)))?;
            tracing::info!(instance = %id, "terminated instance (pool full)");
        }
        Ok(())
    }
}
