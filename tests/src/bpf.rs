//! The BPF objects a process holds, as the kernel reports them in /proc/PID/fdinfo.

/// Ids of the BPF objects `pid` holds through its fds, read from the `field` line (`prog_id:`,
/// `map_id:`) of /proc/PID/fdinfo/FD: the kernel writes `prog_id` for program and link fds and
/// `map_id` for map fds (kernel/bpf/syscall.c, bpf_prog_show_fdinfo, bpf_link_show_fdinfo,
/// bpf_map_show_fdinfo). Sorted, without repeats.
pub fn bpf_ids_held_by(pid: u32, field: &str) -> Vec<u64> {
    let mut ids: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter_map(|info| info.lines().find_map(|l| l.strip_prefix(field)?.trim().parse().ok()))
        .collect();
    ids.sort();
    ids.dedup();
    ids
}
