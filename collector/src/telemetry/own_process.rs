//! The agent's own resource use, read from /proc/self: one reading serves both the
//! `collector.vm` poll event and the standard `process_*` metrics at scrape time.
use procfs::process::Process;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OwnProcess {
    pub resident_memory_bytes: u64,
    pub cpu_seconds: f64,
    pub open_fds: u64,
    /// Since the Unix epoch.
    pub start_time_seconds: f64,
}

pub fn read() -> procfs::ProcResult<OwnProcess> {
    let me = Process::myself()?;
    let stat = me.stat()?;
    let ticks = procfs::ticks_per_second() as f64;
    Ok(OwnProcess {
        resident_memory_bytes: stat.rss * procfs::page_size(),
        cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
        open_fds: me.fd_count()? as u64,
        start_time_seconds: procfs::boot_time_secs()? as f64 + stat.starttime as f64 / ticks,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        let me = super::read().unwrap();
        assert!(me.resident_memory_bytes > 0);
        assert!(me.open_fds >= 3, "stdin, stdout, stderr at least");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(me.start_time_seconds <= now + 1.0 && me.start_time_seconds > now - 3600.0);
    }
}
