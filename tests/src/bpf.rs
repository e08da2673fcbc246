//! The BPF objects a process holds, as the kernel reports them in /proc/PID/fdinfo, and
//! whether the kernel still has them.
use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// Ids of the BPF objects `pid` holds through its fds, read from the `field` line (`prog_id:`,
/// `map_id:`, `link_id:`) of /proc/PID/fdinfo/FD: the kernel writes `prog_id` for program and
/// link fds, `link_id` for link fds and `map_id` for map fds (kernel/bpf/syscall.c,
/// bpf_prog_show_fdinfo, bpf_link_show_fdinfo, bpf_map_show_fdinfo). Sorted, without repeats.
pub fn bpf_ids_held_by(pid: u32, field: &str) -> Vec<u64> {
    let mut ids: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter_map(|info| info.lines().find_map(|l| l.strip_prefix(field)?.trim().parse().ok()))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The BPF programs, maps and links a process holds, by id.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BpfObjects {
    /// Programs, its own and those its links attach.
    pub progs: Vec<u64>,
    pub maps: Vec<u64>,
    pub links: Vec<u64>,
}

impl BpfObjects {
    pub fn held_by(pid: u32) -> BpfObjects {
        BpfObjects {
            progs: bpf_ids_held_by(pid, "prog_id:"),
            maps: bpf_ids_held_by(pid, "map_id:"),
            links: bpf_ids_held_by(pid, "link_id:"),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.progs.is_empty() && self.maps.is_empty() && self.links.is_empty()
    }

    /// Those of them that `bpftool KIND show id N` still finds after waiting up to `within`
    /// for them to go. Closing the last fd of a link or a program frees it after an RCU grace
    /// period (kernel/bpf/syscall.c: bpf_link_put, __bpf_prog_put), and a map goes with the
    /// last program using it, so they can be listed for a moment after their holder exits.
    #[must_use]
    pub fn still_loaded(&self, within: Duration) -> BpfObjects {
        let deadline = Instant::now() + within;
        let mut left = self.clone();
        loop {
            left.progs.retain(|&id| bpftool_finds("prog", id));
            left.maps.retain(|&id| bpftool_finds("map", id));
            left.links.retain(|&id| bpftool_finds("link", id));
            if left.is_empty() || Instant::now() >= deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl std::fmt::Display for BpfObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "{} programs, {} maps, {} links",
            self.progs.len(),
            self.maps.len(),
            self.links.len()
        )
    }
}

/// Whether the kernel has the BPF object of `kind` (`prog`, `map`, `link`) with this id.
fn bpftool_finds(kind: &str, id: u64) -> bool {
    Command::new("bpftool")
        .args([kind, "show", "id", &id.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run bpftool")
        .success()
}

/// The entries of the map called `name` that process `pid` holds, as (key, value) bytes,
/// read with `bpftool -j map dump` (which prints each byte as `"0x2a"`, or a number as a
/// number: that comes back as its 8 little-endian bytes). Per-CPU maps are not decoded:
/// their values are a list per CPU.
pub fn map_entries(pid: u32, name: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let bpftool = |args: &[&str]| -> serde_json::Value {
        let out = Command::new("bpftool").args(args).output().expect("run bpftool");
        assert!(
            out.status.success(),
            "bpftool {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let id = bpf_ids_held_by(pid, "map_id:")
        .into_iter()
        .map(|id| id.to_string())
        .find(|id| bpftool(&["-j", "map", "show", "id", id])["name"] == name)
        .unwrap_or_else(|| panic!("process {pid} holds no map {name}"));
    let bytes = |v: &serde_json::Value| -> Vec<u8> {
        match v {
            serde_json::Value::Array(bytes) => bytes
                .iter()
                .filter_map(|b| u8::from_str_radix(b.as_str()?.trim_start_matches("0x"), 16).ok())
                .collect(),
            serde_json::Value::Number(n) => n.as_u64().unwrap_or_default().to_le_bytes().to_vec(),
            _ => Vec::new(),
        }
    };
    bpftool(&["-j", "map", "dump", "id", &id])
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| (bytes(&entry["key"]), bytes(&entry["value"])))
        .collect()
}
