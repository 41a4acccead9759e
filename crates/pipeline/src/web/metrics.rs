//! Prometheus metrics (`GET /metrics`).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once (later calls, and
/// processes where another recorder is installed, keep the first).
pub(crate) fn install() {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0])
            .ok()?
            .build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).ok()?;
        Some(handle)
    });
}

/// `GET /metrics`: the Prometheus text exposition.
pub(crate) async fn render() -> ([(axum::http::HeaderName, &'static str); 1], String) {
    install();
    let body = match HANDLE.get().and_then(|h| h.as_ref()) {
        Some(h) => {
            h.run_upkeep();
            h.render()
        }
        None => "# metrics recorder unavailable in this process\n".to_string(),
    };
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
