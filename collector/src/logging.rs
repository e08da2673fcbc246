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

/// Relays the kernel programs' aya-log messages into our log.
pub fn relay_kernel_log(ebpf: &mut aya::Ebpf) {
    match aya_log::EbpfLogger::init(ebpf) {
        // SAFETY: the logger owns its ring-buffer fd, which stays open and unchanged for as
        // long as the AsyncFd (which owns the logger) lives.
        Ok(logger) => {
            match unsafe { tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) } {
                Ok(mut logger) => {
                    tokio::spawn(async move {
                        while let Ok(mut guard) = logger.readable_mut().await {
                            guard.get_inner_mut().flush();
                            guard.clear_ready();
                        }
                    });
                }
                Err(e) => tracing::warn!("kernel program logs unavailable: {e}"),
            }
        }
        Err(e) => tracing::warn!("kernel program logs unavailable: {e}"),
    }
}
