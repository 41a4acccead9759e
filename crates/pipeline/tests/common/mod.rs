//! Test doubles for the pipeline's tests: in-memory ports, a fake face
//! engine and an in-process fleet. They live only in tests.
#![allow(dead_code)]

pub mod fakes;

use std::sync::Arc;
use std::time::Duration;

use facefleet_pipeline::backend::{ensure_resources, Deployment, QueueTimings};
use facefleet_pipeline::web::{build_router, serve, WebConfig, WebState};
use facefleet_ports::Names;
use tokio_util::sync::CancellationToken;

pub use fakes::*;

/// A deployment on fresh in-memory adapters, resources created.
pub async fn memory_deployment() -> (Deployment, Arc<MemStore>, Arc<MemQueue>) {
    let store = Arc::new(MemStore::default());
    let queue = Arc::new(MemQueue::default());
    let dep = Deployment { names: Names::new("t"), store: store.clone(), queue: queue.clone(), fleet: None };
    ensure_resources(&dep, QueueTimings { request_visibility: Duration::from_secs(5) }).await.unwrap();
    (dep, store, queue)
}

/// A running web tier.
pub struct WebTier {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// Stops it.
    pub stop: CancellationToken,
    /// The server task.
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Starts a web tier over `dep` on a free port, with the fake enroller.
pub async fn start_web(dep: Deployment, config: WebConfig) -> WebTier {
    start_web_with(dep, config, true, vec![]).await
}

/// Starts a web tier with access rules: open while no key exists or not,
/// and routes open to everyone.
pub async fn start_web_with(dep: Deployment, config: WebConfig, open_without_keys: bool, open_routes: Vec<String>) -> WebTier {
    let factory: facefleet_pipeline::web::EngineFactory = Arc::new(|| Ok(Arc::new(FakeEngine::default()) as _));
    let state = WebState::new(dep, config, Some(factory)).with_access(open_without_keys, open_routes);
    let app = build_router(state.clone(), vec![]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let s = stop.clone();
    let task = tokio::spawn(async move { serve(listener, &state, app, s).await });
    WebTier { url, stop, task }
}

/// Encodes a `w`×`h` image whose pixels all have red channel `red` as PNG.
pub fn png(red: u8, w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(w, h, image::Rgb([red, 10, 20]));
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
    out
}

/// The same as JPEG.
pub fn jpeg(red: u8, w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(w, h, image::Rgb([red, 10, 20]));
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Jpeg).unwrap();
    out
}

/// Posts `bytes` as multipart `field` named `file_name` to `url`.
pub async fn post_file(client: &reqwest::Client, url: &str, field: &str, file_name: &str, bytes: Vec<u8>) -> (u16, String) {
    let part = reqwest::multipart::Part::bytes(bytes).file_name(file_name.to_string());
    let form = reqwest::multipart::Form::new().part(field.to_string(), part);
    let resp = client.post(url).multipart(form).send().await.expect("request sent");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// Enrolls person `name` whose photos have red channel `red` (the fake
/// engine's notion of identity) straight into the gallery bucket.
pub async fn enroll_direct(dep: &Deployment, name: &str, red: u8) {
    let gallery = facefleet_gallery::store::Gallery::new(dep.store.clone(), &dep.names.gallery_bucket);
    let face = facefleet_gallery::store::NewFace { embedding: fake_embedding(red), model: "fake".into(), thumbnail: None };
    gallery.add_faces(facefleet_gallery::DEFAULT_COLLECTION, name, vec![face]).await.unwrap();
}
