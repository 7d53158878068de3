//! Bounded waiting: every wait in the suite has a timeout and, when it runs out, says what it
//! last saw. Time is injected ([`Clock`]) so the logic is unit-tested without sleeping.

use std::future::Future;
use std::time::{Duration, Instant};

/// What a check found this time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Poll<T> {
    /// Done, with the value the caller wanted.
    Ready(T),
    /// Not yet; what was seen instead (reported if the wait times out).
    Pending(String),
}

/// A source of time.
pub trait Clock {
    fn now(&self) -> Instant;
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()>;
}

/// Real time.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> {
        tokio::time::sleep(duration)
    }
}

/// How to poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub timeout: Duration,
    pub interval: Duration,
}

impl Schedule {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            interval: Duration::from_secs(2),
        }
    }
}

/// Calls `check` until it is ready, it fails, or `schedule.timeout` passes. A check error
/// ends the wait at once (a wrong answer, not a slow one). The check always runs at least
/// once, and once more at the deadline, so a short timeout cannot fail without looking.
pub async fn poll_until<C, F, Fut, T>(
    clock: &C,
    schedule: Schedule,
    what: &str,
    mut check: F,
) -> anyhow::Result<T>
where
    C: Clock,
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Poll<T>>>,
{
    let start = clock.now();
    let deadline = start + schedule.timeout;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let seen = match check().await? {
            Poll::Ready(value) => return Ok(value),
            Poll::Pending(seen) => seen,
        };
        let now = clock.now();
        if now >= deadline {
            anyhow::bail!(
                "timed out after {:?} ({attempts} checks) waiting for {what}; last seen: {seen}",
                now.duration_since(start)
            );
        }
        clock
            .sleep(schedule.interval.min(deadline.duration_since(now)))
            .await;
    }
}

/// [`poll_until`] on real time.
pub async fn wait_for<F, Fut, T>(timeout: Duration, what: &str, check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Poll<T>>>,
{
    poll_until(&SystemClock, Schedule::new(timeout), what, check).await
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// A clock that moves only when slept on.
    struct FakeClock {
        start: Instant,
        elapsed: Cell<Duration>,
        sleeps: Cell<u32>,
    }

    impl FakeClock {
        fn new() -> Self {
            Self {
                start: Instant::now(),
                elapsed: Cell::new(Duration::ZERO),
                sleeps: Cell::new(0),
            }
        }
    }

    impl Clock for FakeClock {
        fn now(&self) -> Instant {
            self.start + self.elapsed.get()
        }
        fn sleep(&self, duration: Duration) -> impl Future<Output = ()> {
            self.elapsed.set(self.elapsed.get() + duration);
            self.sleeps.set(self.sleeps.get() + 1);
            std::future::ready(())
        }
    }

    fn schedule(timeout: u64, interval: u64) -> Schedule {
        Schedule {
            timeout: Duration::from_secs(timeout),
            interval: Duration::from_secs(interval),
        }
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn returns_the_value_once_ready_without_waiting_longer() {
        let clock = FakeClock::new();
        let calls = Cell::new(0);
        let value = block_on(poll_until(&clock, schedule(60, 5), "x", || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move {
                Ok(if n == 3 {
                    Poll::Ready(n * 10)
                } else {
                    Poll::Pending(format!("try {n}"))
                })
            }
        }))
        .unwrap();
        assert_eq!(value, 30);
        assert_eq!(clock.sleeps.get(), 2);
        assert_eq!(clock.elapsed.get(), Duration::from_secs(10));
    }

    #[test]
    fn times_out_saying_what_it_waited_for_and_last_saw() {
        let clock = FakeClock::new();
        let calls = Cell::new(0);
        let error = block_on(poll_until(
            &clock,
            schedule(10, 3),
            "Cluster db Ready",
            || {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move {
                    Ok::<_, anyhow::Error>(Poll::<()>::Pending(format!("2/3 ready (check {n})")))
                }
            },
        ))
        .unwrap_err()
        .to_string();
        assert!(error.contains("Cluster db Ready"), "{error}");
        assert!(error.contains("2/3 ready (check 5)"), "{error}");
        // 0, 3, 6, 9, then a last look exactly at the deadline.
        assert_eq!(calls.get(), 5);
        assert_eq!(clock.elapsed.get(), Duration::from_secs(10));
    }

    #[test]
    fn a_check_error_ends_the_wait_at_once() {
        let clock = FakeClock::new();
        let error = block_on(poll_until(&clock, schedule(60, 1), "x", || async {
            Err::<Poll<()>, _>(anyhow::anyhow!("forbidden"))
        }))
        .unwrap_err();
        assert_eq!(error.to_string(), "forbidden");
        assert_eq!(clock.sleeps.get(), 0);
    }

    #[test]
    fn a_zero_timeout_still_looks_once() {
        let clock = FakeClock::new();
        let value = block_on(poll_until(&clock, schedule(0, 1), "x", || async {
            Ok(Poll::Ready("now"))
        }))
        .unwrap();
        assert_eq!(value, "now");
    }
}
