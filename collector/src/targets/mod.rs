//! The target lifecycle, behind one handle ([`Targets`]) and one error ([`TargetError`]):
//! what the user named (`spec`), the target set (`set`), what is read from /proc (`proc`),
//! the request checked at start (`request`), the owner of the set and the maps (`handle`),
//! putting existing processes into targets (`members`), cgroups (`cgroup/`), the one
//! thread that follows cgroups and expires removed targets (`watcher`), each target's memory
//! read at scrape (`memory`), and a reload's new
//! targets, checked and then applied by that thread (`retarget`); what a cgroup's workload is
//! called (`workload/`).
//!
//! The set and the kernel maps live under one lock: a target id in a map key means something
//! only together with the set that names it, so whoever reads aggregates (a scrape) holds
//! the set still, and whoever frees an id (expiry) deletes its map entries under the same
//! write. Only this folder takes the write side; everyone else gets a [`View`].
//!
//! Which target a process belongs to (documented in the README): an explicit `--pid` tree
//! first, then the deepest target cgroup at or above the process's cgroup v2.
pub mod cgroup;
pub mod error;
mod handle;
mod members;
pub mod memory;
pub mod proc;
mod request;
mod retarget;
pub mod set;
pub mod spec;
mod watcher;
pub mod workload;

pub use self::{
    error::TargetError,
    handle::{Following, Targets, View},
    request::{Checked, Request},
    retarget::{Plan, Retargeted, Retargeter},
    set::{Target, TargetKind, TargetSet},
    spec::{CgroupSpec, PidSpec},
    watcher::spawn_watcher,
};
