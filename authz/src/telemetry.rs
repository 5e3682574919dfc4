//! Log setup: JSON lines to stdout by default, one object per event.

use tracing_subscriber::{EnvFilter, fmt};

use crate::config::{Log, LogFormat};

pub fn init(log: &Log) {
    // The level was validated with the config; an invalid one cannot reach here.
    let filter = EnvFilter::try_new(&log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stdout);
    let _ = match log.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
