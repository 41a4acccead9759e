//! [`ModelThread`]: the one thread a worker runs the model on.
//!
//! The model keeps its working memory warm from call to call: glibc's
//! allocator is told to keep freed buffers (`facefleet_model::memory`), and
//! kernels keep per-thread scratch buffers. Both are per thread: glibc
//! gives each thread an arena of its own, and a call on a thread that has
//! not run the model before faults its 10-20 MB in again. Tokio's blocking
//! pool hands each call to whichever of its threads is free, the same ones
//! that serve file reads and queue calls, so a worker's calls wandered over
//! several threads: in a fleet of 15 workers on 2 cores (1000 requests at
//! 100 concurrency) that was 240 k page faults per run, 71 k with glibc held
//! to one arena. Calls sent here run on one long-lived thread, one after
//! another, in the order they were sent.

use std::sync::mpsc;

use tokio::sync::oneshot;

/// A call to run on the thread.
type Call = Box<dyn FnOnce() + Send>;

/// One long-lived, named thread that runs the calls given to [`Self::run`]
/// in order. It ends when the `ModelThread` is dropped.
pub struct ModelThread {
    /// `None` when the thread could not be started: calls then run on
    /// tokio's blocking pool, as before.
    calls: Option<mpsc::Sender<Call>>,
}

impl ModelThread {
    /// Starts the thread, named `name`.
    pub fn new(name: &str) -> Self {
        let (tx, rx) = mpsc::channel::<Call>();
        let started = std::thread::Builder::new().name(name.to_string()).spawn(move || {
            for call in rx {
                call();
            }
        });
        match started {
            Ok(_) => Self { calls: Some(tx) },
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the model thread; the model runs on tokio's blocking threads");
                Self { calls: None }
            }
        }
    }

    /// Runs `f` on the thread once the calls sent before it are done, and
    /// returns its value; a panic in `f` comes back as `Err` with its
    /// message, and the thread goes on with the next call.
    pub async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
        let Some(calls) = &self.calls else {
            return tokio::task::spawn_blocking(f).await.map_err(|e| e.to_string());
        };
        let (tx, rx) = oneshot::channel();
        let call: Call = Box::new(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| panic_message(p.as_ref()));
            let _ = tx.send(result);
        });
        calls.send(call).map_err(|_| "the model thread has stopped".to_string())?;
        rx.await.unwrap_or_else(|_| Err("the model thread has stopped".to_string()))
    }
}

/// The text a panic carried (a `&str` or a `String`), or a placeholder.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_call_runs_on_the_same_named_thread_in_order() {
        let thread = ModelThread::new("facefleet-model-test");
        let here = std::thread::current().id();
        let mut seen = Vec::new();
        for i in 0..5 {
            let (id, name, value) =
                thread.run(move || (std::thread::current().id(), std::thread::current().name().map(str::to_string), i * 10)).await.unwrap();
            assert_ne!(id, here);
            assert_eq!(name.as_deref(), Some("facefleet-model-test"));
            assert_eq!(value, i * 10);
            seen.push(id);
        }
        assert!(seen.windows(2).all(|w| w[0] == w[1]), "calls ran on several threads: {seen:?}");

        // Calls sent together run one after another, in the order sent.
        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let calls = (0..4).map(|i| {
            let order = order.clone();
            thread.run(move || order.lock().unwrap().push(i))
        });
        for r in futures::future::join_all(calls).await {
            r.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3]);
    }

    #[tokio::test]
    async fn a_panic_is_an_error_and_the_thread_goes_on() {
        let thread = ModelThread::new("facefleet-model-test");
        let first = thread.run(std::thread::current).await.unwrap().id();
        let err = thread.run(|| -> u32 { panic!("bad image {}", 7) }).await.unwrap_err();
        assert_eq!(err, "bad image 7");
        let err = thread.run(|| -> u32 { std::panic::panic_any(3u8) }).await.unwrap_err();
        assert_eq!(err, "a panic without a message");
        assert_eq!(thread.run(|| 41 + 1).await, Ok(42));
        assert_eq!(thread.run(std::thread::current).await.unwrap().id(), first);
    }
}
