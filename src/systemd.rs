//! systemd integration (`Type=notify` units): READY when every unit is warm, RELOADING
//! around a config reload, STOPPING at shutdown, WATCHDOG pings from a timer on the
//! actix system thread (the dispatcher's thread, so a stuck scheduler stops the pings
//! and systemd restarts the service) while the actors are alive, and STATUS lines for
//! `systemctl status`.
//!
//! Every call is a no-op when `NOTIFY_SOCKET` is not set (not started by systemd).

use std::time::Duration;

use sd_notify::NotifyState;
use tracing::{debug, info};

fn send(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(error) = sd_notify::notify(states) {
        debug!(%error, "sd_notify failed");
    }
}

/// Startup finished (or a reload did).
pub fn ready() {
    send(&[NotifyState::Ready, NotifyState::Status("serving")]);
}

/// A config reload began (with the monotonic timestamp systemd ≥ 253 requires).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// Shutdown began.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}

/// How much more start-up time each extension asks systemd for.
pub const START_EXTENSION: Duration = Duration::from_secs(90);

/// Keeps systemd from killing a start that is still loading units (a TensorRT engine
/// build takes minutes on an Orin, past `TimeoutStartSec=`): sends
/// `EXTEND_TIMEOUT_USEC` for [`START_EXTENSION`] every third of it, with a status line,
/// until `loading` resolves. Returns at once when not started by systemd.
pub fn extend_start_while(loading: impl std::future::Future<Output = ()> + 'static) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    actix_rt::spawn(async move {
        let every = START_EXTENSION / 3;
        let mut ticks = tokio::time::interval(every);
        tokio::pin!(loading);
        loop {
            tokio::select! {
                _ = &mut loading => return,
                _ = ticks.tick() => {
                    let usec = u32::try_from(START_EXTENSION.as_micros()).unwrap_or(u32::MAX);
                    send(&[
                        NotifyState::ExtendTimeoutUsec(usec),
                        NotifyState::Status("loading units (TensorRT engines may be building)"),
                    ]);
                }
            }
        }
    });
}

/// A free-form status line.
pub fn status(line: &str) {
    send(&[NotifyState::Status(line)]);
}

/// Starts the watchdog pings if systemd asked for them (`WatchdogSec=`): every half
/// period, from a timer on the current actix system, and only while `healthy()` says
/// the service makes progress (its dispatcher and unit actors alive). A service whose
/// actors died, or whose system thread is stuck, stops pinging, and systemd restarts it.
pub fn spawn_watchdog(healthy: impl Fn() -> bool + 'static) {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = (period / 2).max(Duration::from_millis(100));
    info!(?period, "systemd watchdog enabled");
    actix_rt::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        let mut pinging = true;
        loop {
            ticks.tick().await;
            let now_healthy = healthy();
            if now_healthy {
                send(&[NotifyState::Watchdog]);
            } else if pinging {
                tracing::error!("the service makes no progress: watchdog pings stopped");
            }
            pinging = now_healthy;
        }
    });
}
