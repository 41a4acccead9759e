//! Shared helpers of the AWS adapter tests: they run against the moto
//! emulator that `scripts/test` starts.
#![allow(dead_code)]

use std::sync::Arc;

use facefleet_aws::{AwsClients, AwsOptions, S3Store, SqsQueue};

/// The emulator's endpoint. Panics (the test fails) when the tests are not
/// run through `scripts/test`: they must never pass without the emulator.
pub fn endpoint() -> String {
    match std::env::var("FACEFLEET_TEST_AWS_ENDPOINT") {
        Ok(e) if !e.is_empty() => {
            assert!(
                std::env::var_os("AWS_ACCESS_KEY_ID").is_some(),
                "AWS_ACCESS_KEY_ID is not set: run the AWS tests through scripts/test \
                 (it exports test credentials for the emulator)"
            );
            e
        }
        _ => panic!(
            "FACEFLEET_TEST_AWS_ENDPOINT is not set: the AWS adapter tests need the moto \
             emulator; run them through scripts/test (e.g. `scripts/test -p facefleet-aws`)"
        ),
    }
}

/// Options for the emulator at `endpoint`.
pub fn options_for(endpoint: &str) -> AwsOptions {
    let mut o = AwsOptions::with_endpoint(endpoint);
    o.region = Some("us-east-1".to_string());
    o
}

/// Clients of the shared emulator.
pub async fn clients() -> AwsClients {
    AwsClients::load(&options_for(&endpoint())).await
}

/// An S3 store on the shared emulator.
pub async fn store() -> Arc<dyn facefleet_ports::ObjectStore> {
    let c = clients().await;
    Arc::new(S3Store::new(c.s3.clone(), c.region()))
}

/// An SQS queue on the shared emulator.
pub async fn queue() -> Arc<dyn facefleet_ports::MessageQueue> {
    let c = clients().await;
    Arc::new(SqsQueue::new(c.sqs.clone(), std::time::Duration::from_secs(30)))
}

/// A unique lowercase prefix for one test.
pub fn unique_prefix(case: &str) -> String {
    facefleet_ports::contract::unique_namespace(case)
}

/// The path of the moto server binary (for tests that run a private one).
pub fn moto_server() -> String {
    std::env::var("FACEFLEET_MOTO_SERVER").unwrap_or_else(|_| {
        panic!("FACEFLEET_MOTO_SERVER is not set: run the AWS tests through scripts/test")
    })
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private moto server (for tests that stop and restart it), killed on
/// drop.
pub struct PrivateMoto {
    /// Its port.
    pub port: u16,
    child: Option<std::process::Child>,
}

impl PrivateMoto {
    /// Starts moto on `port` (a free one if `None`) and waits until it
    /// answers.
    pub async fn start(port: Option<u16>) -> Self {
        let port = port.unwrap_or_else(free_port);
        let mut m = Self { port, child: None };
        m.restart().await;
        m
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the server (its state is lost).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port and waits until it answers.
    pub async fn restart(&mut self) {
        self.stop();
        let child = std::process::Command::new(moto_server())
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start moto_server");
        self.child = Some(child);
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("moto_server did not start on port {}", self.port);
    }
}

impl Drop for PrivateMoto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP proxy in front of the emulator that can cut the line (refusing and
/// dropping connections) without the emulator losing its state: an outage
/// as clients see it.
#[derive(Clone)]
pub struct Outage {
    port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    epoch: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Outage {
    /// Starts the proxy in front of loopback port `target`.
    pub async fn start(target: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let epoch = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (up2, epoch2) = (up.clone(), epoch.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                if !up2.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(inbound); // connection reset
                    continue;
                }
                let my_epoch = epoch2.load(std::sync::atomic::Ordering::SeqCst);
                let epoch3 = epoch2.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else { return };
                    let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                    let cut = async {
                        while epoch3.load(std::sync::atomic::Ordering::SeqCst) == my_epoch {
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! { _ = copy => {}, _ = cut => {} }
                });
            }
        });
        Self { port, up, epoch }
    }

    /// The proxy's endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Cuts the line: open connections drop, new ones are reset.
    pub fn down(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

