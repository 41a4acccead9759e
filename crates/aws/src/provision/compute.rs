//! Security groups, the app-tier launch template, and teardown of the
//! instances of a prefix.

use std::time::Duration;

use aws_sdk_ec2::types::{
    Filter, InstanceType, IpPermission, IpRange, LaunchTemplateHttpTokensState,
    LaunchTemplateIamInstanceProfileSpecificationRequest,
    LaunchTemplateInstanceMetadataOptionsRequest, LaunchTemplateTagSpecificationRequest,
    RequestLaunchTemplateData, ResourceType, Tag, TagSpecification,
};
use facefleet_ports::PortError;

use super::{step_err, Action, ProvisionSpec, Report, StepResult};
use crate::config::AwsClients;
use crate::ec2::{live_instances, name_tag, FLEET_TAG, PREFIX_TAG};
use crate::error::classify;

/// Ids of the security groups provisioning made.
#[derive(Debug, Clone)]
pub(super) struct Groups {
    /// The app tier's group (no ingress).
    pub app_tier: String,
}

fn tag_spec(spec: &ProvisionSpec, kind: ResourceType, name: &str) -> TagSpecification {
    let mut b = TagSpecification::builder()
        .resource_type(kind)
        .tags(Tag::builder().key("Name").value(name).build());
    for (k, v) in spec.tags() {
        b = b.tags(Tag::builder().key(k).value(v).build());
    }
    b.build()
}

/// The VPC of the security groups: the spec's, else the default one.
async fn vpc(clients: &AwsClients, spec: &ProvisionSpec) -> Result<String, PortError> {
    if let Some(v) = &spec.vpc_id {
        return Ok(v.clone());
    }
    let out = clients
        .ec2
        .describe_vpcs()
        .filters(Filter::builder().name("isDefault").values("true").build())
        .send()
        .await
        .map_err(|e| classify(e).into_port("DescribeVpcs"))?;
    out.vpcs()
        .first()
        .and_then(|v| v.vpc_id())
        .map(str::to_string)
        .ok_or_else(|| {
            PortError::InvalidArgument(
                "this region has no default VPC; pass --vpc-id".to_string(),
            )
        })
}

/// `(group id, its ingress permissions)` of the group named `name`.
async fn find_group(
    clients: &AwsClients,
    vpc: &str,
    name: &str,
) -> Result<Option<(String, Vec<IpPermission>)>, PortError> {
    let out = clients
        .ec2
        .describe_security_groups()
        .filters(Filter::builder().name("group-name").values(name).build())
        .filters(Filter::builder().name("vpc-id").values(vpc).build())
        .send()
        .await
        .map_err(|e| classify(e).into_port("DescribeSecurityGroups"))?;
    Ok(out.security_groups().first().map(|g| {
        (
            g.group_id().unwrap_or_default().to_string(),
            g.ip_permissions().to_vec(),
        )
    }))
}

/// True if `perms` let `cidr` reach TCP `port`.
fn allows(perms: &[IpPermission], port: u16, cidr: &str) -> bool {
    perms.iter().any(|p| {
        p.ip_protocol() == Some("tcp")
            && p.from_port() == Some(i32::from(port))
            && p.to_port() == Some(i32::from(port))
            && p.ip_ranges().iter().any(|r| r.cidr_ip() == Some(cidr))
    })
}

/// One security group, with `ingress` (port, CIDR) if any.
async fn ensure_group(
    clients: &AwsClients,
    spec: &ProvisionSpec,
    vpc: &str,
    name: &str,
    description: &str,
    ingress: Option<(u16, &str)>,
    report: &mut Report,
) -> StepResult<String> {
    let err = |e| step_err("security-group", name)(e);
    let (id, existed, perms) = match find_group(clients, vpc, name).await.map_err(err)? {
        Some((id, perms)) => (id, true, perms),
        None => {
            let out = clients
                .ec2
                .create_security_group()
                .group_name(name)
                .description(description)
                .vpc_id(vpc)
                .tag_specifications(tag_spec(spec, ResourceType::SecurityGroup, name))
                .send()
                .await
                .map_err(|e| err(classify(e).into_port("CreateSecurityGroup")))?;
            (out.group_id().unwrap_or_default().to_string(), false, Vec::new())
        }
    };
    let mut changed = "";
    if let Some((port, cidr)) = ingress {
        if !allows(&perms, port, cidr) {
            clients
                .ec2
                .authorize_security_group_ingress()
                .group_id(&id)
                .ip_permissions(
                    IpPermission::builder()
                        .ip_protocol("tcp")
                        .from_port(i32::from(port))
                        .to_port(i32::from(port))
                        .ip_ranges(
                            IpRange::builder()
                                .cidr_ip(cidr)
                                .description("facefleet web tier")
                                .build(),
                        )
                        .build(),
                )
                .send()
                .await
                .map_err(|e| err(classify(e).into_port("AuthorizeSecurityGroupIngress")))?;
            changed = "ingress";
        }
    }
    let action = match (existed, changed.is_empty()) {
        (false, _) => Action::Created,
        (true, true) => Action::Unchanged,
        (true, false) => Action::Updated,
    };
    report.push("security-group", name, action, if existed { changed } else { "" });
    Ok(id)
}

/// The app tier's group (no ingress: workers only call out to S3/SQS) and
/// the web group (the web port open to the configured CIDR).
pub(super) async fn ensure_security_groups(
    clients: &AwsClients,
    spec: &ProvisionSpec,
    report: &mut Report,
) -> StepResult<Groups> {
    let vpc = vpc(clients, spec)
        .await
        .map_err(step_err("vpc", spec.vpc_id.as_deref().unwrap_or("default")))?;
    let app_tier = ensure_group(
        clients,
        spec,
        &vpc,
        &spec.app_tier_security_group(),
        "facefleet app-tier workers (no ingress)",
        None,
        report,
    )
    .await?;
    ensure_group(
        clients,
        spec,
        &vpc,
        &spec.web_security_group(),
        "facefleet web tier",
        Some((spec.web_port, &spec.web_ingress_cidr)),
        report,
    )
    .await?;
    Ok(Groups { app_tier })
}

/// The cloud-init user data of the workers: writes the deployment's values
/// (and [`ProvisionSpec::worker_env`]) into the env file the baked systemd
/// unit reads, then (re)starts it.
pub fn app_tier_user_data(spec: &ProvisionSpec, region: &str) -> String {
    let extra: String = spec.worker_env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    format!(
        "#!/bin/bash\n\
         # Written by `facefleet provision`: the deployment's settings for the\n\
         # app-tier unit baked into the AMI (credentials come from the instance role).\n\
         set -euo pipefail\n\
         install -d -m 0755 /etc/facefleet\n\
         cat > /etc/facefleet/app-tier.env <<'ENV'\n\
         FACEFLEET_BACKEND=aws\n\
         FACEFLEET_PREFIX={prefix}\n\
         AWS_REGION={region}\n\
         RUST_LOG=info\n\
         {extra}\
         ENV\n\
         systemctl restart facefleet-app-tier.service\n",
        prefix = spec.names.prefix,
    )
}

/// The launch template data wanted for the workers.
fn template_data(spec: &ProvisionSpec, ami: &str, sg: &str, user_data: &str) -> RequestLaunchTemplateData {
    let mut tags = LaunchTemplateTagSpecificationRequest::builder()
        .resource_type(ResourceType::Instance)
        .tags(Tag::builder().key(FLEET_TAG).value(spec.launch_template()).build());
    for (k, v) in spec.tags() {
        tags = tags.tags(Tag::builder().key(k).value(v).build());
    }
    RequestLaunchTemplateData::builder()
        .image_id(ami)
        .instance_type(InstanceType::from(spec.instance_type.as_str()))
        .iam_instance_profile(
            LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                .name(spec.app_tier_role())
                .build(),
        )
        .security_group_ids(sg)
        .user_data(aws_smithy_types::base64::encode(user_data))
        .metadata_options(
            LaunchTemplateInstanceMetadataOptionsRequest::builder()
                .http_tokens(LaunchTemplateHttpTokensState::Required)
                .build(),
        )
        .tag_specifications(tags.build())
        .build()
}

/// The app-tier launch template (a new version when a setting changed).
pub(super) async fn ensure_launch_template(
    clients: &AwsClients,
    spec: &ProvisionSpec,
    region: &str,
    groups: &Groups,
    report: &mut Report,
) -> StepResult<()> {
    let name = spec.launch_template();
    let Some(ami) = &spec.app_tier_ami else {
        report.push(
            "launch-template",
            &name,
            Action::Skipped,
            "no app-tier AMI given (--ami); bake one with ami/bake-app-tier.sh",
        );
        return Ok(());
    };
    let err = |e| step_err("launch-template", &name)(e);
    let user_data = app_tier_user_data(spec, region);
    let data = template_data(spec, ami, &groups.app_tier, &user_data);
    let current = match clients
        .ec2
        .describe_launch_template_versions()
        .launch_template_name(&name)
        .versions("$Latest")
        .send()
        .await
    {
        Ok(out) => out
            .launch_template_versions()
            .first()
            .and_then(|v| v.launch_template_data())
            .cloned(),
        Err(e) => {
            let f = classify(e);
            if f.code_is(&[
                "InvalidLaunchTemplateName.NotFoundException",
                "InvalidLaunchTemplateId.NotFound",
            ]) {
                None
            } else {
                return Err(err(f.into_port("DescribeLaunchTemplateVersions")));
            }
        }
    };
    match current {
        None => {
            clients
                .ec2
                .create_launch_template()
                .launch_template_name(&name)
                .version_description("facefleet provision")
                .launch_template_data(data)
                .tag_specifications(tag_spec(spec, ResourceType::LaunchTemplate, &name))
                .send()
                .await
                .map_err(|e| err(classify(e).into_port("CreateLaunchTemplate")))?;
            report.push("launch-template", &name, Action::Created, "");
        }
        Some(cur) => {
            let mut changed = Vec::new();
            if cur.image_id() != Some(ami.as_str()) {
                changed.push("image");
            }
            if cur.instance_type().map(|t| t.as_str()) != Some(spec.instance_type.as_str()) {
                changed.push("instance type");
            }
            if cur.iam_instance_profile().and_then(|p| p.name()) != Some(spec.app_tier_role().as_str()) {
                changed.push("instance profile");
            }
            if cur.security_group_ids() != [groups.app_tier.clone()] {
                changed.push("security group");
            }
            let ud = cur
                .user_data()
                .and_then(|u| aws_smithy_types::base64::decode(u).ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned());
            if ud.as_deref() != Some(user_data.as_str()) {
                changed.push("user data");
            }
            if changed.is_empty() {
                report.push("launch-template", &name, Action::Unchanged, "");
            } else {
                clients
                    .ec2
                    .create_launch_template_version()
                    .launch_template_name(&name)
                    .version_description("facefleet provision")
                    .launch_template_data(data)
                    .send()
                    .await
                    .map_err(|e| err(classify(e).into_port("CreateLaunchTemplateVersion")))?;
                report.push("launch-template", &name, Action::Updated, changed.join(", "));
            }
        }
    }
    Ok(())
}

/// True if the launch template `name` exists.
async fn launch_template_exists(clients: &AwsClients, name: &str) -> Result<bool, PortError> {
    match clients
        .ec2
        .describe_launch_templates()
        .launch_template_names(name)
        .send()
        .await
    {
        Ok(out) => Ok(!out.launch_templates().is_empty()),
        Err(e) => {
            let f = classify(e);
            if f.code_is(&[
                "InvalidLaunchTemplateName.NotFoundException",
                "InvalidLaunchTemplateId.NotFound",
            ]) {
                Ok(false)
            } else {
                Err(f.into_port("DescribeLaunchTemplates"))
            }
        }
    }
}

/// Ids of the prefix's instances that are not terminated.
async fn prefix_instances(clients: &AwsClients, spec: &ProvisionSpec) -> Result<Vec<(String, String)>, PortError> {
    let described = live_instances(&clients.ec2, PREFIX_TAG, &spec.names.prefix)
        .await
        .map_err(|e| e.into_port("DescribeInstances"))?;
    Ok(described
        .iter()
        .filter_map(|i| {
            let state = i.state().and_then(|s| s.name()).map(|n| n.as_str()).unwrap_or_default();
            Some((i.instance_id()?.to_string(), format!("{} ({state})", name_tag(i))))
        })
        .collect())
}

/// Terminates the prefix's instances, waits (up to `wait`) for them to go,
/// then deletes the launch template and the security groups.
pub(super) async fn teardown_compute(
    clients: &AwsClients,
    spec: &ProvisionSpec,
    wait: Duration,
    report: &mut Report,
) -> StepResult<()> {
    let prefix = &spec.names.prefix;
    let instances = prefix_instances(clients, spec)
        .await
        .map_err(step_err("instances", prefix))?;
    let terminating: Vec<String> = instances
        .iter()
        .filter(|(_, d)| !d.ends_with("(shutting-down)"))
        .map(|(id, _)| id.clone())
        .collect();
    if !terminating.is_empty() {
        clients
            .ec2
            .terminate_instances()
            .set_instance_ids(Some(terminating))
            .send()
            .await
            .map_err(|e| step_err("instances", prefix)(classify(e).into_port("TerminateInstances")))?;
    }
    for (id, desc) in &instances {
        report.push("instance", id, Action::Deleted, desc.clone());
    }
    // Security groups can only go once their instances are gone.
    let deadline = tokio::time::Instant::now() + wait;
    while !instances.is_empty() {
        let left = prefix_instances(clients, spec)
            .await
            .map_err(step_err("instances", prefix))?;
        if left.is_empty() || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    let name = spec.launch_template();
    let lt_err = |e| step_err("launch-template", &name)(e);
    // Look first: deleting a missing template is not reliably reported as
    // "not found" (the emulator answers MissingParameter).
    if launch_template_exists(clients, &name).await.map_err(lt_err)? {
        clients
            .ec2
            .delete_launch_template()
            .launch_template_name(&name)
            .send()
            .await
            .map_err(|e| lt_err(classify(e).into_port("DeleteLaunchTemplate")))?;
        report.push("launch-template", &name, Action::Deleted, "");
    } else {
        report.push("launch-template", &name, Action::Absent, "");
    }

    let vpc = vpc(clients, spec)
        .await
        .map_err(step_err("vpc", spec.vpc_id.as_deref().unwrap_or("default")))?;
    for group in [spec.app_tier_security_group(), spec.web_security_group()] {
        let err = |e| step_err("security-group", &group)(e);
        let Some((id, _)) = find_group(clients, &vpc, &group).await.map_err(err)? else {
            report.push("security-group", &group, Action::Absent, "");
            continue;
        };
        loop {
            match clients.ec2.delete_security_group().group_id(&id).send().await {
                Ok(_) => break,
                Err(e) => {
                    let f = classify(e);
                    // Still attached to an instance that is shutting down.
                    if f.code_is(&["DependencyViolation"]) && tokio::time::Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        continue;
                    }
                    return Err(err(f.into_port("DeleteSecurityGroup")));
                }
            }
        }
        report.push("security-group", &group, Action::Deleted, "");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_writes_the_worker_env_inside_the_env_file() {
        let mut spec = ProvisionSpec::new("p");
        spec.worker_env = vec![("FACEFLEET_RECOGNIZER".into(), "dlib-resnet".into()), ("FACEFLEET_MIN_FACE".into(), "40".into())];
        let ud = app_tier_user_data(&spec, "eu-west-3");
        let file = ud.split("<<'ENV'\n").nth(1).and_then(|rest| rest.split("\nENV\n").next()).expect("an env file heredoc");
        assert_eq!(
            file.lines().collect::<Vec<_>>(),
            ["FACEFLEET_BACKEND=aws", "FACEFLEET_PREFIX=p", "AWS_REGION=eu-west-3", "RUST_LOG=info", "FACEFLEET_RECOGNIZER=dlib-resnet", "FACEFLEET_MIN_FACE=40"],
            "{ud}"
        );
        assert!(ud.ends_with("systemctl restart facefleet-app-tier.service\n"), "{ud}");
        // Without model flags, the file is as before.
        let plain = app_tier_user_data(&ProvisionSpec::new("p"), "eu-west-3");
        assert!(plain.contains("RUST_LOG=info\nENV\n"), "{plain}");
    }
}
