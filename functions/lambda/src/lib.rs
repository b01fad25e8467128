//! What the Lambda binaries share: serving an HTTP API handler, and the
//! time an invocation has left.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_runtime::{service_fn, Error};

/// An HTTP API function: payload 2.0 in, the handler's response out.
pub async fn http<F, R>(handler: F) -> Result<(), Error>
where
    F: Fn(lambda_http::Request) -> R,
    R: Future<Output = lambda_http::Response<lambda_http::Body>> + Send,
{
    lambda_http::run(service_fn(|req| {
        let answer = handler(req);
        async move { Ok::<_, Error>(Final(answer.await)) }
    }))
    .await
}

/// A response whose body the handler already made (JSON, problem+json or
/// CSV text, or empty), handed to the runtime as it is. lambda_http would
/// otherwise collect the body again and decode it by its charset, which
/// links encoding_rs and every legacy charset's tables into the binary.
struct Final(lambda_http::Response<lambda_http::Body>);

impl lambda_http::IntoResponse for Final {
    fn into_response(self) -> Pin<Box<dyn Future<Output = lambda_http::Response<lambda_http::Body>> + Send>> {
        Box::pin(std::future::ready(self.0))
    }
}

/// Logs to stdout as Lambda expects: JSON when the function's log format
/// is JSON, at the level of `AWS_LAMBDA_LOG_LEVEL` (Lambda's advanced
/// logging controls) or `RUST_LOG` (`info` by default). One level for
/// every module: per-module filters would bring a regex engine along.
pub fn init_logging() {
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|l| l.trim().parse::<tracing_subscriber::filter::LevelFilter>().ok())
        .unwrap_or(tracing_subscriber::filter::LevelFilter::INFO);
    let logs = tracing_subscriber::fmt()
        .with_target(false)
        .without_time()
        .with_ansi(false)
        .with_max_level(level);
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
}

/// Time left before the invocation's deadline (wall-clock milliseconds).
pub fn time_left(deadline_ms: u64) -> Duration {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    Duration::from_millis(deadline_ms.saturating_sub(now_ms))
}
