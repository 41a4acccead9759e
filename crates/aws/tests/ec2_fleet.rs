//! The EC2 fleet adapter against the moto emulator: the fleet contract, the
//! max, the pool of stopped instances, and adoption after a restart.

mod common;

use std::sync::Arc;
use std::time::Instant;

use aws_sdk_ec2::types::{RequestLaunchTemplateData, ResourceType, Tag, TagSpecification};
use facefleet_aws::{Ec2Fleet, Ec2FleetConfig, FLEET_TAG};
use facefleet_ports::{Fleet, InstanceState, Names, PortError};

/// A fleet with its own launch template on the shared emulator.
async fn fleet(case: &str, max_running: usize, pool_size: usize) -> Ec2Fleet {
    let clients = common::clients().await;
    let prefix = common::unique_prefix(case);
    let config = Ec2FleetConfig {
        pool_size,
        ..Ec2FleetConfig::for_prefix(&prefix, max_running)
    };
    clients
        .ec2
        .create_launch_template()
        .launch_template_name(&config.launch_template)
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                // One of the images moto ships.
                .image_id("ami-12c6146b")
                .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                .build(),
        )
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::LaunchTemplate)
                .tags(Tag::builder().key(FLEET_TAG).value(&config.fleet).build())
                .build(),
        )
        .send()
        .await
        .expect("create launch template on the emulator");
    Ec2Fleet::new(clients.ec2.clone(), config)
}

async fn contract_fleet() -> Arc<dyn Fleet> {
    Arc::new(fleet("contract", 10, 2).await)
}

mod contract {
    use super::*;
    facefleet_ports::fleet_contract!(contract_fleet().await);
}

async fn running(fleet: &Ec2Fleet) -> usize {
    fleet
        .list()
        .await
        .unwrap()
        .iter()
        .filter(|i| i.state == InstanceState::Running)
        .count()
}

#[tokio::test]
async fn scales_to_max_never_above_and_back_to_zero() {
    let max = 5;
    let fleet = fleet("scale", max, 0).await;
    let names = Names::default();
    assert_eq!(running(&fleet).await, 0);
    let start = Instant::now();
    for n in 1..=max {
        fleet.launch(&names.worker(n)).await.unwrap();
        assert!(fleet.running_count().await.unwrap() <= max);
    }
    // Every further launch is refused: never above max.
    for n in max + 1..=max + 3 {
        match fleet.launch(&names.worker(n)).await {
            Err(PortError::InvalidArgument(msg)) => assert!(msg.contains("max"), "{msg}"),
            other => panic!("launch beyond max: {other:?}"),
        }
    }
    let listed = fleet.list().await.unwrap();
    assert_eq!(listed.iter().filter(|i| i.state.is_active()).count(), max);
    let mut seen: Vec<String> = listed.iter().map(|i| i.name.clone()).collect();
    seen.sort();
    let mut expected: Vec<String> = (1..=max).map(|n| names.worker(n)).collect();
    expected.sort();
    assert_eq!(seen, expected, "names are app-tier-instance-<n>");
    eprintln!("scale-out 0 -> {max}: {:?}", start.elapsed());

    let decision = Instant::now();
    for i in listed {
        fleet.stop(&i.id).await.unwrap();
    }
    assert_eq!(fleet.running_count().await.unwrap(), 0);
    eprintln!("scale-in {max} -> 0 after the decision: {:?}", decision.elapsed());
    // Pool size 0: stopped workers are terminated, nothing lingers.
    assert!(fleet.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn stopped_pool_is_reused_before_launching_new_instances() {
    let fleet = fleet("pool", 4, 2).await;
    let names = Names::default();
    let mut ids = Vec::new();
    for n in 1..=3 {
        ids.push(fleet.launch(&names.worker(n)).await.unwrap().id);
    }
    for id in &ids {
        fleet.stop(id).await.unwrap();
    }
    // Two kept stopped (the pool), the third terminated.
    let list = fleet.list().await.unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(list.iter().all(|i| i.state == InstanceState::Stopped), "{list:?}");
    let pooled: Vec<String> = list.iter().map(|i| i.id.clone()).collect();

    // Relaunching starts pooled instances first, renamed.
    let a = fleet.launch(&names.worker(7)).await.unwrap();
    let b = fleet.launch(&names.worker(8)).await.unwrap();
    assert!(pooled.contains(&a.id) && pooled.contains(&b.id) && a.id != b.id);
    let c = fleet.launch(&names.worker(9)).await.unwrap();
    assert!(!pooled.contains(&c.id), "a new instance once the pool is empty");
    let list = fleet.list().await.unwrap();
    let by_id = |id: &str| list.iter().find(|i| i.id == id).unwrap().clone();
    assert_eq!(by_id(&a.id).name, names.worker(7));
    assert!(by_id(&a.id).state.is_active());
    assert_eq!(list.iter().filter(|i| i.state.is_active()).count(), 3);
}

#[tokio::test]
async fn restarted_controller_adopts_instances_without_duplicating() {
    let first = fleet("adopt", 3, 0).await;
    let config = first.config().clone();
    let names = Names::default();
    let launched: Vec<_> = {
        let mut v = Vec::new();
        for n in 1..=2 {
            v.push(first.launch(&names.worker(n)).await.unwrap());
        }
        v
    };
    drop(first);

    // A new process: same configuration, no memory of the first.
    let clients = common::clients().await;
    let second = Ec2Fleet::new(clients.ec2.clone(), config);
    let mut seen = second.list().await.unwrap();
    seen.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(seen.len(), 2);
    for (s, l) in seen.iter().zip(&launched) {
        assert_eq!(s.id, l.id);
        assert_eq!(s.name, l.name);
    }
    // Launching a name that is already up returns it, no duplicate.
    let again = second.launch(&names.worker(1)).await.unwrap();
    assert_eq!(again.id, launched[0].id);
    assert_eq!(second.list().await.unwrap().len(), 2);
    // The max counts the adopted instances.
    second.launch(&names.worker(3)).await.unwrap();
    assert!(second.launch(&names.worker(4)).await.is_err());
    assert_eq!(second.running_count().await.unwrap(), 3);
}

#[tokio::test]
async fn missing_launch_template_is_a_clear_error() {
    let clients = common::clients().await;
    let prefix = common::unique_prefix("notemplate");
    let fleet = Ec2Fleet::new(clients.ec2.clone(), Ec2FleetConfig::for_prefix(&prefix, 2));
    match fleet.launch("app-tier-instance-1").await {
        Err(PortError::InvalidArgument(msg)) => {
            assert!(msg.contains("launch template"), "{msg}");
            assert!(msg.contains("provision"), "{msg}");
        }
        other => panic!("expected a clear error, got {other:?}"),
    }
}
