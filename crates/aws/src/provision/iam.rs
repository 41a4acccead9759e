//! IAM roles and instance profiles with least-privilege inline policies
//! (the policy documents live in `crates/aws/policy/`).

use aws_sdk_iam::types::Tag;
use facefleet_ports::PortError;

use super::{fill_template, step_err, Action, ProvisionSpec, Report, StepResult};
use crate::config::AwsClients;
use crate::error::classify;

/// Policy of the app-tier workers: read inputs and the gallery, write
/// results, consume requests, send responses.
pub const APP_TIER_POLICY: &str = include_str!("../../policy/app-tier.json");
/// Policy of the web instance (web tier + autoscaler): store uploads, send
/// requests, consume responses, size the worker fleet.
pub const WEB_POLICY: &str = include_str!("../../policy/web.json");
/// Trust policy letting EC2 instances assume the roles.
pub const EC2_ASSUME_ROLE_POLICY: &str = include_str!("../../policy/ec2-assume-role.json");

/// Decodes `%XX` escapes (IAM returns policy documents URL-encoded).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// True if two policy documents (either possibly URL-encoded) mean the same.
fn same_policy(current: &str, wanted: &str) -> bool {
    let parse = |s: &str| -> Option<serde_json::Value> {
        serde_json::from_str(s)
            .ok()
            .or_else(|| serde_json::from_str(&percent_decode(s)).ok())
    };
    match (parse(current), parse(wanted)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// The filled policy documents of `spec`: `(role, policy)` pairs.
pub fn policies(spec: &ProvisionSpec, region: &str, account: &str) -> Vec<(String, String)> {
    let n = &spec.names;
    let app_role = spec.app_tier_role();
    let fleet = spec.launch_template();
    let vars: Vec<(&str, &str)> = vec![
        ("IN_BUCKET", &n.in_bucket),
        ("OUT_BUCKET", &n.out_bucket),
        ("GALLERY_BUCKET", &n.gallery_bucket),
        ("VIDEO_INPUT_BUCKET", &n.video_input),
        ("VIDEO_OUTPUT_BUCKET", &n.video_output),
        ("REQ_QUEUE", &n.req_queue),
        ("RESP_QUEUE", &n.resp_queue),
        ("REQ_DLQ", &n.req_dlq),
        ("REGION", region),
        ("ACCOUNT", account),
        ("FLEET", &fleet),
        ("APP_TIER_ROLE", &app_role),
    ];
    vec![
        (app_role.clone(), fill_template(APP_TIER_POLICY, &vars)),
        (spec.web_role(), fill_template(WEB_POLICY, &vars)),
    ]
}

fn iam_tags(spec: &ProvisionSpec) -> Result<Vec<Tag>, PortError> {
    spec.tags()
        .into_iter()
        .map(|(k, v)| {
            Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(|e| PortError::InvalidArgument(e.to_string()))
        })
        .collect()
}

fn is_missing(f: &crate::error::Failure) -> bool {
    f.code_is(&["NoSuchEntity", "NoSuchEntityException"]) || f.status == Some(404)
}

/// Both roles, their inline policies and their instance profiles.
pub(super) async fn ensure_roles(
    clients: &AwsClients,
    spec: &ProvisionSpec,
    region: &str,
    account: &str,
    report: &mut Report,
) -> StepResult<()> {
    let iam = &clients.iam;
    let tags = iam_tags(spec).map_err(step_err("iam-role", "?"))?;
    for (role, policy) in policies(spec, region, account) {
        let err = |e| step_err("iam-role", &role)(e);
        // The role and its trust policy.
        let mut changed = Vec::new();
        let existed = match iam.get_role().role_name(&role).send().await {
            Ok(out) => {
                let r = out.role();
                if !r
                    .and_then(|r| r.assume_role_policy_document())
                    .is_some_and(|d| same_policy(d, EC2_ASSUME_ROLE_POLICY))
                {
                    iam.update_assume_role_policy()
                        .role_name(&role)
                        .policy_document(EC2_ASSUME_ROLE_POLICY)
                        .send()
                        .await
                        .map_err(|e| err(classify(e).into_port("UpdateAssumeRolePolicy")))?;
                    changed.push("trust policy");
                }
                let current: Vec<(String, String)> = r
                    .map(|r| {
                        r.tags()
                            .iter()
                            .map(|t| (t.key().to_string(), t.value().to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                if spec.tags().iter().any(|t| !current.contains(t)) {
                    iam.tag_role()
                        .role_name(&role)
                        .set_tags(Some(tags.clone()))
                        .send()
                        .await
                        .map_err(|e| err(classify(e).into_port("TagRole")))?;
                    changed.push("tags");
                }
                true
            }
            Err(e) => {
                let f = classify(e);
                if !is_missing(&f) {
                    return Err(err(f.into_port("GetRole")));
                }
                iam.create_role()
                    .role_name(&role)
                    .description(format!("facefleet {} instances", spec.names.prefix))
                    .assume_role_policy_document(EC2_ASSUME_ROLE_POLICY)
                    .set_tags(Some(tags.clone()))
                    .send()
                    .await
                    .map_err(|e| err(classify(e).into_port("CreateRole")))?;
                false
            }
        };
        // Its inline policy.
        let policy_ok = match iam
            .get_role_policy()
            .role_name(&role)
            .policy_name(&role)
            .send()
            .await
        {
            Ok(out) => same_policy(out.policy_document(), &policy),
            Err(e) => {
                let f = classify(e);
                if !is_missing(&f) {
                    return Err(err(f.into_port("GetRolePolicy")));
                }
                false
            }
        };
        if !policy_ok {
            iam.put_role_policy()
                .role_name(&role)
                .policy_name(&role)
                .policy_document(&policy)
                .send()
                .await
                .map_err(|e| err(classify(e).into_port("PutRolePolicy")))?;
            changed.push("policy");
        }
        let action = match (existed, changed.is_empty()) {
            (false, _) => Action::Created,
            (true, true) => Action::Unchanged,
            (true, false) => Action::Updated,
        };
        let detail = if existed { changed.join(", ") } else { String::new() };
        report.push("iam-role", &role, action, detail);

        // The instance profile holding the role.
        let perr = |e| step_err("instance-profile", &role)(e);
        let (existed, has_role) = match iam
            .get_instance_profile()
            .instance_profile_name(&role)
            .send()
            .await
        {
            Ok(out) => (
                true,
                out.instance_profile()
                    .is_some_and(|p| p.roles().iter().any(|r| r.role_name() == role)),
            ),
            Err(e) => {
                let f = classify(e);
                if !is_missing(&f) {
                    return Err(perr(f.into_port("GetInstanceProfile")));
                }
                iam.create_instance_profile()
                    .instance_profile_name(&role)
                    .set_tags(Some(tags.clone()))
                    .send()
                    .await
                    .map_err(|e| perr(classify(e).into_port("CreateInstanceProfile")))?;
                (false, false)
            }
        };
        if !has_role {
            iam.add_role_to_instance_profile()
                .instance_profile_name(&role)
                .role_name(&role)
                .send()
                .await
                .map_err(|e| perr(classify(e).into_port("AddRoleToInstanceProfile")))?;
        }
        let action = match (existed, has_role) {
            (false, _) => Action::Created,
            (true, true) => Action::Unchanged,
            (true, false) => Action::Updated,
        };
        report.push(
            "instance-profile",
            &role,
            action,
            if existed && !has_role { "role" } else { "" },
        );
    }
    Ok(())
}

/// Deletes the instance profiles and roles (with their inline policies).
pub(super) async fn teardown_roles(
    clients: &AwsClients,
    spec: &ProvisionSpec,
    report: &mut Report,
) -> StepResult<()> {
    let iam = &clients.iam;
    for role in [spec.app_tier_role(), spec.web_role()] {
        let perr = |e| step_err("instance-profile", &role)(e);
        match iam
            .get_instance_profile()
            .instance_profile_name(&role)
            .send()
            .await
        {
            Ok(out) => {
                let roles: Vec<String> = out
                    .instance_profile()
                    .map(|p| p.roles().iter().map(|r| r.role_name().to_string()).collect())
                    .unwrap_or_default();
                for r in roles {
                    iam.remove_role_from_instance_profile()
                        .instance_profile_name(&role)
                        .role_name(&r)
                        .send()
                        .await
                        .map_err(|e| perr(classify(e).into_port("RemoveRoleFromInstanceProfile")))?;
                }
                iam.delete_instance_profile()
                    .instance_profile_name(&role)
                    .send()
                    .await
                    .map_err(|e| perr(classify(e).into_port("DeleteInstanceProfile")))?;
                report.push("instance-profile", &role, Action::Deleted, "");
            }
            Err(e) => {
                let f = classify(e);
                if !is_missing(&f) {
                    return Err(perr(f.into_port("GetInstanceProfile")));
                }
                report.push("instance-profile", &role, Action::Absent, "");
            }
        }

        let err = |e| step_err("iam-role", &role)(e);
        match iam.list_role_policies().role_name(&role).send().await {
            Ok(out) => {
                for p in out.policy_names() {
                    iam.delete_role_policy()
                        .role_name(&role)
                        .policy_name(p)
                        .send()
                        .await
                        .map_err(|e| err(classify(e).into_port("DeleteRolePolicy")))?;
                }
                iam.delete_role()
                    .role_name(&role)
                    .send()
                    .await
                    .map_err(|e| err(classify(e).into_port("DeleteRole")))?;
                report.push("iam-role", &role, Action::Deleted, "");
            }
            Err(e) => {
                let f = classify(e);
                if !is_missing(&f) {
                    return Err(err(f.into_port("ListRolePolicies")));
                }
                report.push("iam-role", &role, Action::Absent, "");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_are_valid_json_naming_only_our_resources() {
        let spec = ProvisionSpec::new("cse546");
        for (role, doc) in policies(&spec, "us-east-1", "123456789012") {
            let v: serde_json::Value = serde_json::from_str(&doc).unwrap_or_else(|e| panic!("{role}: {e}"));
            assert!(!doc.contains("${"), "{role}: unfilled placeholder");
            for st in v["Statement"].as_array().unwrap() {
                let actions: Vec<String> = match &st["Action"] {
                    serde_json::Value::String(s) => vec![s.clone()],
                    serde_json::Value::Array(a) => a.iter().map(|x| x.as_str().unwrap().to_string()).collect(),
                    _ => panic!("bad action"),
                };
                for a in &actions {
                    assert!(!a.contains('*'), "{role}: wildcard action {a}");
                }
            }
            if role == "cse546-app-tier" {
                assert!(!doc.contains("ec2:"), "workers need no EC2 rights");
                assert!(doc.contains("arn:aws:sqs:us-east-1:123456789012:cse546-req-queue"));
            }
        }
    }

    #[test]
    fn encoded_policies_compare_by_meaning() {
        let doc = r#"{"a": [1, 2]}"#;
        assert!(same_policy("%7B%22a%22%3A%5B1%2C2%5D%7D", doc));
        assert!(same_policy(r#"{ "a":[1,2] }"#, doc));
        assert!(!same_policy(r#"{"a":[2,1]}"#, doc));
    }
}
