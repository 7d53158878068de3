//! Waiting for a controller's answer: poll the API, print each new state once, give up after
//! the timeout.

use std::future::Future;
use std::time::Duration;

use crate::Terminal;

/// How often the API is read while waiting.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// One look at the object.
#[derive(Debug)]
pub enum Poll<T> {
    /// The wait is over.
    Ready(T),
    /// Not yet; the text says where things are (printed when it changes).
    Pending(String),
}

/// Polls `check` until it is ready or `timeout` has passed; `Ok(None)` on timeout. Each new
/// pending text is printed once, prefixed with two spaces.
pub async fn until<T, F, Fut>(
    timeout: Duration,
    terminal: &mut Terminal<'_>,
    mut check: F,
) -> anyhow::Result<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Poll<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::new();
    loop {
        match check().await? {
            Poll::Ready(value) => return Ok(Some(value)),
            Poll::Pending(state) => {
                if state != last {
                    terminal.line(&format!("  {state}"))?;
                    last = state;
                }
            }
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
    }
}
