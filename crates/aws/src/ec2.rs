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
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, MutexGuard};

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
        let names = facefleet_ports::Names::new(prefix);
        Self {
            launch_template: names.app_tier.clone(),
            fleet: names.app_tier,
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
    /// The last view of the fleet (taken by `list` or a call that needed
    /// it) with our own launches and stops applied; serialises launches and
    /// stops of this process, so the max is never exceeded by concurrent
    /// calls.
    view: Mutex<Option<View>>,
}

/// How long a view of the fleet is trusted by `launch` and `stop` (a
/// controller calls `list` each tick right before acting on it).
const VIEW_TTL: Duration = Duration::from_secs(2);

/// A snapshot of the fleet.
#[derive(Debug, Clone)]
struct View {
    taken: Instant,
    instances: Vec<Seen>,
}

/// One instance of a [`View`].
#[derive(Debug, Clone)]
struct Seen {
    instance: Instance,
    /// Shutting down for good (does not count towards the pool).
    terminating: bool,
}

impl View {
    fn fresh(&self) -> bool {
        self.taken.elapsed() < VIEW_TTL
    }

    fn active(&self) -> usize {
        self.instances.iter().filter(|s| s.instance.state.is_active()).count()
    }

    /// Stopped or stopping instances that stay in the pool.
    fn pooled(&self) -> usize {
        self.instances
            .iter()
            .filter(|s| {
                !s.terminating
                    && matches!(s.instance.state, InstanceState::Stopped | InstanceState::Stopping)
            })
            .count()
    }

    fn get_mut(&mut self, id: &str) -> Option<&mut Seen> {
        self.instances.iter_mut().find(|s| s.instance.id == id)
    }
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

/// Every instance tagged `tag = value` that is not terminated, over all
/// pages of `DescribeInstances`.
pub(crate) async fn live_instances(
    client: &aws_sdk_ec2::Client,
    tag: &str,
    value: &str,
) -> std::result::Result<Vec<aws_sdk_ec2::types::Instance>, Failure> {
    let mut found = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut req = client
            .describe_instances()
            .filters(Filter::builder().name(format!("tag:{tag}")).values(value).build())
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
        let out = req.send().await.map_err(classify)?;
        found.extend(out.reservations().iter().flat_map(|r| r.instances().iter().cloned()));
        match out.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => return Ok(found),
        }
    }
}

/// The instance's `Name` tag, or "".
pub(crate) fn name_tag(i: &aws_sdk_ec2::types::Instance) -> &str {
    i.tags().iter().find(|t| t.key() == Some("Name")).and_then(|t| t.value()).unwrap_or_default()
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
            view: Mutex::new(None),
        }
    }

    /// The fleet's configuration.
    pub fn config(&self) -> &Ec2FleetConfig {
        &self.config
    }

    /// Our instances (not terminated), by id, freshly described.
    async fn describe(&self) -> Result<View> {
        let taken = Instant::now();
        let mut found = Vec::new();
        let described = live_instances(&self.client, FLEET_TAG, &self.config.fleet)
            .await
            .map_err(|e| map_ec2(e, "DescribeInstances", None))?;
        for i in described {
            let Some(id) = i.instance_id() else { continue };
            let raw = i.state().and_then(|s| s.name());
            let state = state_of(raw);
            if state == InstanceState::Terminated {
                continue;
            }
            found.push(Seen {
                instance: Instance {
                    id: id.to_string(),
                    name: name_tag(&i).to_string(),
                    state,
                },
                terminating: raw == Some(&InstanceStateName::ShuttingDown),
            });
        }
        found.sort_by(|a, b| a.instance.id.cmp(&b.instance.id));
        Ok(View {
            taken,
            instances: found,
        })
    }

    /// Locks the view, refreshing it unless it is fresh (or `force`).
    async fn view(&self, force: bool) -> Result<MutexGuard<'_, Option<View>>> {
        let mut guard = self.view.lock().await;
        if force || !guard.as_ref().is_some_and(View::fresh) {
            *guard = Some(self.describe().await?);
        }
        Ok(guard)
    }

    /// Number of instances pending or running.
    pub async fn running_count(&self) -> Result<usize> {
        Ok(self.list().await?.iter().filter(|i| i.state.is_active()).count())
    }

    /// Terminates every instance of the fleet (teardown). Returns their ids.
    pub async fn terminate_all(&self) -> Result<Vec<String>> {
        let mut guard = self.view(true).await?;
        let ids: Vec<String> = guard
            .take()
            .map(|v| v.instances.into_iter().map(|s| s.instance.id).collect())
            .unwrap_or_default();
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

    /// Launches `name` given the current `view`, which it updates.
    async fn launch_in(&self, view: &mut View, name: &str) -> Result<Instance> {
        // Launching a name that is already up is a no-op: a restarted
        // controller must not duplicate its workers.
        if let Some(s) = view
            .instances
            .iter()
            .find(|s| s.instance.name == name && s.instance.state.is_active())
        {
            return Ok(s.instance.clone());
        }
        let active = view.active();
        if active >= self.config.max_running {
            return Err(PortError::InvalidArgument(format!(
                "fleet `{}` already has {active} instances pending or running (max {})",
                self.config.fleet, self.config.max_running
            )));
        }
        // A stopped instance from the pool starts in seconds.
        if let Some(s) = view
            .instances
            .iter()
            .find(|s| s.instance.state == InstanceState::Stopped && !s.terminating)
        {
            let id = s.instance.id.clone();
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
            let started = Instance {
                id: id.clone(),
                name: name.to_string(),
                state: InstanceState::Pending,
            };
            if let Some(s) = view.get_mut(&id) {
                s.instance = started.clone();
            }
            return Ok(started);
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
        let instance = Instance {
            id,
            name: name.to_string(),
            state: match state_of(launched.state().and_then(|s| s.name())) {
                InstanceState::Running => InstanceState::Running,
                _ => InstanceState::Pending,
            },
        };
        view.instances.push(Seen {
            instance: instance.clone(),
            terminating: false,
        });
        Ok(instance)
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
        let guard = self.view(true).await?;
        Ok(guard
            .as_ref()
            .map(|v| v.instances.iter().map(|s| s.instance.clone()).collect())
            .unwrap_or_default())
    }

    async fn launch(&self, name: &str) -> Result<Instance> {
        if name.is_empty() || name.len() > 255 {
            return Err(PortError::InvalidArgument(format!(
                "instance name `{name}` must be 1..=255 characters"
            )));
        }
        let mut guard = self.view(false).await?;
        let result = self
            .launch_in(guard.as_mut().expect("view loaded"), name)
            .await;
        if result.is_err() {
            *guard = None; // unknown outcome: look again next time
        }
        result
    }

    async fn stop(&self, id: &str) -> Result<()> {
        let mut guard = self.view(false).await?;
        if guard
            .as_ref()
            .is_some_and(|v| !v.instances.iter().any(|s| s.instance.id == id))
        {
            // Not in a recent view: maybe launched by someone else since.
            *guard = Some(self.describe().await?);
        }
        let view = guard.as_mut().expect("view loaded");
        let pooled = view.pooled();
        let Some(target) = view.get_mut(id) else {
            return Err(PortError::NoSuchInstance(id.to_string()));
        };
        if !target.instance.state.is_active() {
            return Ok(()); // already stopping or stopped
        }
        let keep = pooled < self.config.pool_size;
        // Both StopInstances and TerminateInstances shut the OS down
        // cleanly: systemd sends the worker SIGTERM, it finishes the job in
        // hand; anything lost is redelivered by the queue.
        let result = if keep {
            self.client
                .stop_instances()
                .instance_ids(id)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| map_ec2(classify(e), "StopInstances", Some(id)))
        } else {
            self.client
                .terminate_instances()
                .instance_ids(id)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| map_ec2(classify(e), "TerminateInstances", Some(id)))
        };
        match result {
            Ok(()) => {
                target.instance.state = InstanceState::Stopping;
                target.terminating = !keep;
                if keep {
                    tracing::info!(instance = %id, "stopping instance (kept in the pool)");
                } else {
                    tracing::info!(instance = %id, "terminating instance (pool full)");
                }
                Ok(())
            }
            Err(e) => {
                *guard = None; // unknown outcome: look again next time
                Err(e)
            }
        }
    }
}
