//! Faults: the emulator going away and coming back, missing buckets,
//! queues and keys, oversized messages. Each names what is missing.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use facefleet_aws::{S3Store, SqsQueue};
use facefleet_ports::{MessageQueue, ObjectStore, PortError, QueueConfig};

async fn adapters(endpoint: &str) -> (S3Store, SqsQueue) {
    let mut opts = common::options_for(endpoint);
    opts.connect_timeout = Duration::from_secs(1);
    let c = facefleet_aws::AwsClients::load(&opts).await;
    (S3Store::new(c.s3.clone(), c.region()), SqsQueue::new(c.sqs.clone(), Duration::from_secs(10)))
}

#[tokio::test]
async fn outage_fails_fast_as_unavailable_and_loses_nothing() {
    let shared = common::endpoint();
    let target: u16 = shared.rsplit(':').next().unwrap().parse().unwrap();
    let proxy = common::Outage::start(target).await;
    let (store, queue) = adapters(&proxy.endpoint()).await;
    let ns = common::unique_prefix("outage");
    let (bucket, q) = (format!("{ns}-b"), format!("{ns}-q"));
    store.create_bucket(&bucket).await.unwrap();
    queue.create_queue(&q, &QueueConfig::default()).await.unwrap();
    for i in 0..5 {
        store.put(&bucket, &format!("k{i}"), Bytes::from(vec![i as u8; 10])).await.unwrap();
        queue.send(&q, &format!("m{i}")).await.unwrap();
    }

    proxy.down();
    let t = Instant::now();
    let e = queue.send(&q, "during").await.unwrap_err();
    eprintln!("send during the outage failed after {:?}: {e}", t.elapsed());
    assert!(e.is_transient(), "{e:?}");
    let t = Instant::now();
    let e = queue.receive(&q, 10, Duration::from_secs(1), None).await.unwrap_err();
    eprintln!("receive during the outage failed after {:?}: {e}", t.elapsed());
    assert!(matches!(e, PortError::Unavailable(_)), "{e:?}");
    let e = store.get(&bucket, "k0").await.unwrap_err();
    assert!(matches!(e, PortError::Unavailable(_)), "{e:?}");
    let e = store.put(&bucket, "k9", Bytes::from_static(b"x")).await.unwrap_err();
    assert!(matches!(e, PortError::Unavailable(_)), "{e:?}");

    proxy.restore();
    // Everything sent before the outage is still there.
    let mut bodies = Vec::new();
    while bodies.len() < 5 {
        let got = queue.receive(&q, 10, Duration::from_secs(1), None).await.unwrap();
        assert!(!got.is_empty() || bodies.len() == 5, "messages lost: have {bodies:?}");
        for m in got {
            queue.delete(&q, &m.receipt).await.unwrap();
            bodies.push(m.body);
        }
    }
    bodies.sort();
    assert_eq!(bodies, vec!["m0", "m1", "m2", "m3", "m4"]);
    assert_eq!(store.count(&bucket, "").await.unwrap(), 5);
    assert_eq!(store.get(&bucket, "k3").await.unwrap(), Bytes::from(vec![3u8; 10]));
}

#[tokio::test]
async fn emulator_restart_is_survived_by_the_adapters() {
    // A private emulator: killing it must not disturb other tests.
    let mut moto = common::PrivateMoto::start(None).await;
    let (store, queue) = adapters(&moto.endpoint()).await;
    let (bucket, q) = ("restart-bucket", "restart-queue");
    store.create_bucket(bucket).await.unwrap();
    queue.create_queue(q, &QueueConfig::default()).await.unwrap();
    queue.send(q, "before").await.unwrap();

    moto.stop();
    let t = Instant::now();
    let e = queue.send(q, "while down").await.unwrap_err();
    eprintln!("send with the emulator down failed after {:?}: {e}", t.elapsed());
    assert!(e.is_transient(), "{e:?}");
    assert!(store.bucket_exists(bucket).await.unwrap_err().is_transient());

    moto.restart().await;
    // moto keeps its state in memory: a restarted emulator is empty. The
    // adapters report it clearly, naming the resource...
    let e = queue.send(q, "after").await.unwrap_err();
    assert_eq!(e, PortError::NoSuchQueue(q.to_string()));
    assert!(e.to_string().contains(q));
    assert_eq!(
        store.put(bucket, "k", Bytes::from_static(b"v")).await.unwrap_err(),
        PortError::NoSuchBucket(bucket.to_string())
    );
    // ...and recover once the resources exist again (what the binaries'
    // start-up `ensure_resources` does), with no stale cached URL.
    store.create_bucket(bucket).await.unwrap();
    queue.create_queue(q, &QueueConfig::default()).await.unwrap();
    queue.send(q, "after").await.unwrap();
    let got = queue.receive(q, 10, Duration::from_secs(1), None).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, "after");
    store.put(bucket, "k", Bytes::from_static(b"v")).await.unwrap();
}

#[tokio::test]
async fn missing_resources_are_named_in_errors() {
    let store = common::store().await;
    let queue = common::queue().await;
    let ns = common::unique_prefix("missing");
    let bucket = format!("{ns}-nobucket");
    let q = format!("{ns}-noqueue");

    for e in [
        store.get(&bucket, "a.jpg").await.unwrap_err(),
        store.put(&bucket, "a.jpg", Bytes::from_static(b"x")).await.unwrap_err(),
        store.head(&bucket, "a.jpg").await.unwrap_err(),
        store.list(&bucket, "", None, 10).await.unwrap_err(),
    ] {
        assert_eq!(e, PortError::NoSuchBucket(bucket.clone()));
        assert!(e.to_string().contains(&bucket), "{e}");
    }
    for e in [
        queue.send(&q, "x").await.unwrap_err(),
        queue.receive(&q, 1, Duration::ZERO, None).await.unwrap_err(),
        queue.depth(&q).await.unwrap_err(),
        queue.purge(&q).await.unwrap_err(),
    ] {
        assert_eq!(e, PortError::NoSuchQueue(q.clone()));
        assert!(e.to_string().contains(&q), "{e}");
    }
    // A dead-letter queue that does not exist is named too.
    let config = QueueConfig {
        dead_letter: Some((format!("{ns}-nodlq"), 3)),
        ..QueueConfig::default()
    };
    assert_eq!(
        queue.create_queue(&q, &config).await.unwrap_err(),
        PortError::NoSuchQueue(format!("{ns}-nodlq"))
    );

    // A key that does not exist, in a bucket that does.
    store.create_bucket(&bucket).await.unwrap();
    let e = store.get(&bucket, "test_00.jpg").await.unwrap_err();
    assert_eq!(
        e,
        PortError::NoSuchKey { bucket: bucket.clone(), key: "test_00.jpg".to_string() }
    );
    assert!(e.to_string().contains("test_00.jpg") && e.to_string().contains(&bucket));
    assert_eq!(store.head(&bucket, "test_00.jpg").await.unwrap(), None);
}

#[tokio::test]
async fn oversized_and_unsendable_messages_are_refused_client_side() {
    let queue = common::queue().await;
    let q = format!("{}-req", common::unique_prefix("big"));
    let config = QueueConfig { max_message_size: 1024, ..QueueConfig::default() };
    queue.create_queue(&q, &config).await.unwrap();
    queue.send(&q, &"a".repeat(1024)).await.unwrap();
    match queue.send(&q, &"a".repeat(1025)).await {
        Err(PortError::MessageTooLarge { queue: name, size, limit }) => {
            assert_eq!((name.as_str(), size, limit), (q.as_str(), 1025, 1024));
        }
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }
    // Multi-byte characters count in bytes.
    assert!(matches!(
        queue.send(&q, &"é".repeat(513)).await,
        Err(PortError::MessageTooLarge { size: 1026, .. })
    ));
    assert!(matches!(queue.send(&q, "nul\u{0}").await, Err(PortError::InvalidArgument(_))));
    assert_eq!(queue.depth(&q).await.unwrap().visible, 1);
}
