//! Log output: human-readable lines or JSON (journald, log shippers) on stderr, level
//! from `RUST_LOG` (default `info`, without `actix_http::h1`).
//!
//! The HTTP library logs some malformed client requests at ERROR (a request head past
//! its buffer, a stray payload chunk), one line each: any client could flood the log.
//! The library still answers them (400, 431); mica logs its own refusals of client
//! errors at debug, and by default the library's per-connection `h1` events are off
//! (`RUST_LOG` can turn them back on).

use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event.
    Json,
}

/// Installs the global subscriber. `quiet` lowers the default level to warnings (for
/// commands whose output is a report).
pub fn init(format: LogFormat, quiet: bool) {
    let default = if quiet {
        "warn,actix_http::h1=off"
    } else {
        "info,actix_http::h1=off"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Under systemd (stderr is the journal) journald stamps every line itself: plain
    // lines without time or colour codes.
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let _ = match format {
        LogFormat::Text if journal => builder.without_time().with_ansi(false).try_init(),
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
