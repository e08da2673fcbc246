//! Logs through `tracing`, as text or one JSON object per line, on stderr. Records of the
//! `log` crate (aya and aya-log, which relays the kernel programs' messages) are bridged in.
use tracing_subscriber::{EnvFilter, fmt};

use crate::cli::LogFormat;

pub fn init(level: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(level)?;
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}
