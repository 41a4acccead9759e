//! Provisioning and teardown against the moto emulator: every resource with
//! the right attributes, a second run changes nothing, drift is repaired,
//! teardown removes everything and is idempotent too.

mod common;

use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use facefleet_aws::{
    parse_redrive, provision, teardown, Action, Ec2Fleet, Ec2FleetConfig, ProvisionSpec, Report,
    SqsQueue, FLEET_TAG, PREFIX_TAG,
};
use facefleet_ports::Fleet;

fn spec(case: &str) -> ProvisionSpec {
    let mut spec = ProvisionSpec::new(&common::unique_prefix(case));
    spec.app_tier_ami = Some("ami-12c6146b".to_string());
    spec.worker_env = vec![("FACEFLEET_RECOGNIZER".to_string(), "dlib-resnet".to_string())];
    spec
}

fn assert_all(report: &Report, action: Action) {
    for item in &report.items {
        assert_eq!(item.action, action, "{} `{}` ({})\n{report}", item.kind, item.name, item.detail);
    }
}

#[tokio::test]
async fn provisioning_creates_everything_then_changes_nothing() {
    let clients = common::clients().await;
    let spec = spec("prov");
    let n = &spec.names;

    let first = provision(&clients, &spec).await.expect("provision");
    eprintln!("{first}");
    assert_all(&first, Action::Created);
    // 6 buckets, 3 queues, 2 roles, 2 profiles, 2 groups, 1 template.
    assert_eq!(first.items.len(), 16, "{first}");

    // Buckets: tagged, public access blocked.
    for b in spec.buckets() {
        let tags = clients.s3.get_bucket_tagging().bucket(&b).send().await.unwrap();
        assert!(
            tags.tag_set().iter().any(|t| t.key() == PREFIX_TAG && t.value() == n.prefix),
            "bucket {b} tags"
        );
        let pab = clients.s3.get_public_access_block().bucket(&b).send().await.unwrap();
        let c = pab.public_access_block_configuration().unwrap();
        assert_eq!(c.block_public_acls(), Some(true), "{b}");
        assert_eq!(c.restrict_public_buckets(), Some(true), "{b}");
    }

    // Queues: request 1 KiB with redrive to the DLQ after 5 receives.
    let sqs = SqsQueue::new(clients.sqs.clone(), Duration::from_secs(30));
    let req = sqs.attributes(&n.req_queue).await.unwrap();
    assert_eq!(req[&QueueAttributeName::MaximumMessageSize], "1024");
    assert_eq!(req[&QueueAttributeName::VisibilityTimeout], "15");
    let dlq_arn = sqs.queue_arn(&n.req_dlq).await.unwrap();
    assert_eq!(
        parse_redrive(&req[&QueueAttributeName::RedrivePolicy]),
        Some((dlq_arn, 5))
    );
    let resp = sqs.attributes(&n.resp_queue).await.unwrap();
    assert_eq!(resp[&QueueAttributeName::MaximumMessageSize], "262144");
    let dlq = sqs.attributes(&n.req_dlq).await.unwrap();
    assert_eq!(dlq[&QueueAttributeName::MessageRetentionPeriod], "1209600");
    for q in [&n.req_queue, &n.resp_queue, &n.req_dlq] {
        let url = sqs.queue_url(q).await.unwrap();
        let tags = clients.sqs.list_queue_tags().queue_url(url).send().await.unwrap();
        assert_eq!(tags.tags().unwrap().get(PREFIX_TAG), Some(&n.prefix), "queue {q} tags");
    }

    // IAM: roles with their inline least-privilege policies, in profiles.
    for role in [spec.app_tier_role(), spec.web_role()] {
        let r = clients.iam.get_role().role_name(&role).send().await.unwrap();
        let trust = r.role().unwrap().assume_role_policy_document().unwrap();
        assert!(trust.contains("ec2.amazonaws.com"), "{role} trust: {trust}");
        let p = clients
            .iam
            .get_role_policy()
            .role_name(&role)
            .policy_name(&role)
            .send()
            .await
            .unwrap();
        assert!(p.policy_document().contains(&n.req_queue), "{role} policy names the queue");
        let prof = clients
            .iam
            .get_instance_profile()
            .instance_profile_name(&role)
            .send()
            .await
            .unwrap();
        assert!(prof.instance_profile().unwrap().roles().iter().any(|r| r.role_name() == role));
    }

    // Security groups: the web one lets the web port in.
    let groups = clients
        .ec2
        .describe_security_groups()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("group-name")
                .values(spec.web_security_group())
                .build(),
        )
        .send()
        .await
        .unwrap();
    let web = &groups.security_groups()[0];
    assert!(web
        .ip_permissions()
        .iter()
        .any(|p| p.from_port() == Some(8000) && p.ip_ranges().iter().any(|r| r.cidr_ip() == Some("0.0.0.0/0"))));

    // Launch template: AMI, type, profile, user data naming the prefix.
    let lt = clients
        .ec2
        .describe_launch_template_versions()
        .launch_template_name(spec.launch_template())
        .versions("$Latest")
        .send()
        .await
        .unwrap();
    let data = lt.launch_template_versions()[0].launch_template_data().unwrap();
    assert_eq!(data.image_id(), Some("ami-12c6146b"));
    assert_eq!(data.instance_type().map(|t| t.as_str()), Some("t3.micro"));
    assert_eq!(
        data.iam_instance_profile().and_then(|p| p.name()),
        Some(spec.app_tier_role().as_str())
    );
    let ud = aws_smithy_types::base64::decode(data.user_data().unwrap()).unwrap();
    let ud = String::from_utf8(ud).unwrap();
    assert!(ud.contains(&format!("FACEFLEET_PREFIX={}", n.prefix)), "{ud}");
    // The deployment's model flags, for the workers.
    assert!(ud.contains("\nFACEFLEET_RECOGNIZER=dlib-resnet\n"), "{ud}");
    assert!(!ud.to_lowercase().contains("secret"), "no credentials in user data");

    // Second run: nothing changes.
    let second = provision(&clients, &spec).await.expect("second provision");
    eprintln!("{second}");
    assert_eq!(second.changes(), 0, "{second}");
    assert_all(&second, Action::Unchanged);

    // Drift is repaired, then again nothing changes.
    let url = sqs.queue_url(&n.req_queue).await.unwrap();
    clients
        .sqs
        .set_queue_attributes()
        .queue_url(url)
        .attributes(QueueAttributeName::MaximumMessageSize, "4096")
        .send()
        .await
        .unwrap();
    let mut changed_spec = spec.clone();
    changed_spec.instance_type = "t3.small".to_string();
    let third = provision(&clients, &changed_spec).await.unwrap();
    eprintln!("{third}");
    assert_eq!(third.changes(), 2, "{third}");
    let q = third.item("queue", &n.req_queue).unwrap();
    assert_eq!(q.action, Action::Updated);
    assert!(q.detail.contains("MaximumMessageSize"), "{}", q.detail);
    let t = third.item("launch-template", &spec.launch_template()).unwrap();
    assert_eq!(t.action, Action::Updated);
    assert!(t.detail.contains("instance type"), "{}", t.detail);
    assert_eq!(provision(&clients, &changed_spec).await.unwrap().changes(), 0);

    // The fleet launches from the provisioned template, tagged.
    let fleet = Ec2Fleet::new(clients.ec2.clone(), Ec2FleetConfig::for_prefix(&n.prefix, 2));
    let inst = fleet.launch(&n.worker(1)).await.unwrap();
    let d = clients.ec2.describe_instances().instance_ids(&inst.id).send().await.unwrap();
    let i = &d.reservations()[0].instances()[0];
    let tag = |k: &str| i.tags().iter().find(|t| t.key() == Some(k)).and_then(|t| t.value()).map(str::to_string);
    assert_eq!(tag("Name").as_deref(), Some("app-tier-instance-1"));
    assert_eq!(tag(FLEET_TAG), Some(spec.launch_template()));
    assert_eq!(tag(PREFIX_TAG), Some(n.prefix.clone()));
    assert_eq!(i.instance_type().map(|t| t.as_str()), Some("t3.small"));

    // Teardown removes everything (the instance included), then is a no-op.
    let down = teardown(&clients, &spec, Duration::from_secs(30)).await.expect("teardown");
    eprintln!("{down}");
    assert!(down.items.iter().all(|i| i.action == Action::Deleted), "{down}");
    assert!(down.item("instance", &inst.id).is_some(), "{down}");
    assert!(fleet.list().await.unwrap().is_empty());
    let fresh = SqsQueue::new(clients.sqs.clone(), Duration::from_secs(30));
    assert!(fresh.try_queue_url(&n.req_queue).await.unwrap().is_none());
    assert!(!facefleet_ports::ObjectStore::bucket_exists(
        &facefleet_aws::S3Store::new(clients.s3.clone(), clients.region()),
        &n.in_bucket
    )
    .await
    .unwrap());
    let again = teardown(&clients, &spec, Duration::from_secs(30)).await.unwrap();
    assert_eq!(again.changes(), 0, "{again}");
    assert_all(&again, Action::Absent);
}

#[tokio::test]
async fn provisioning_without_an_ami_skips_the_launch_template() {
    let clients = common::clients().await;
    let mut spec = spec("noami");
    spec.app_tier_ami = None;
    spec.video_buckets = false;
    let report = provision(&clients, &spec).await.unwrap();
    let t = report.item("launch-template", &spec.launch_template()).unwrap();
    assert_eq!(t.action, Action::Skipped);
    assert!(t.detail.contains("--ami"));
    assert_eq!(report.items.iter().filter(|i| i.kind == "bucket").count(), 3);
    teardown(&clients, &spec, Duration::from_secs(10)).await.unwrap();
}
