//! Timers on the service's `Clock`: the runtime's timer on the system clock, the
//! clock's own advance on a test's `ManualClock`.
//!
//! The dispatcher's wake-up, a batch's deadline, the drain time and a request's timeout
//! are instants on the service's clock; waiting for them goes through here so that a
//! test that advances a manual clock fires them exactly then, and never in wall time.
//! The sampling timers (`run_interval`, every `SAMPLE_INTERVAL`) stay on the runtime:
//! they measure that an actor's thread still runs, a wall-clock property.

use std::time::{Duration, Instant};

use actix::fut::{wrap_future, ActorFutureExt};
use actix::{Actor, AsyncContext, Context, SpawnHandle};
use mica_core::time::MAX_TIME;
use mica_core::Clock;

/// The instant `delay` from now on `clock`. `delay` is clamped to `MAX_TIME`, so that a
/// huge timeout or drain time from a client or a config cannot overflow the clock.
pub fn after(clock: &Clock, delay: Duration) -> Instant {
    clock.now() + delay.min(MAX_TIME)
}

/// Resolves once `clock` reads `deadline` or later.
pub async fn sleep_until(clock: Clock, deadline: Instant) {
    match clock.as_manual() {
        Some(manual) => manual.sleep_until(deadline).await,
        None => tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)).await,
    }
}

/// Runs `f` on the actor once `clock` reads `deadline` (`run_later` on the service's
/// clock); cancelled like any spawned future (`cancel_future`).
pub fn run_at<A, F>(ctx: &mut Context<A>, clock: &Clock, deadline: Instant, f: F) -> SpawnHandle
where
    A: Actor<Context = Context<A>>,
    F: FnOnce(&mut A, &mut Context<A>) + 'static,
{
    let sleep = wrap_future::<_, A>(sleep_until(clock.clone(), deadline));
    ctx.spawn(sleep.map(move |(), act, ctx| f(act, ctx)))
}
