//! Everything that talks to the kernel programs: which probe families exist and what each
//! needs (`families`), the capabilities it needs and gives up (`capabilities`), the running kernel's layout from BTF
//! (`btf`), loading and attaching (`probes`, with the `--http-route` table in `http_routes`), typed map access (`maps`, with the generation
//! counter that keeps the syscall filter's cache current in `generation`), the event ring
//! buffer (`records`, `ring`), and the names of the kernel's numbers (`names`: syscalls,
//! errnos).
//!
//! This folder calls nothing else of the agent: the target set, telemetry and export sit on
//! top of it, and the ring-buffer reader hands its records to a closure the agent supplies.
pub mod btf;
pub mod capabilities;
pub mod families;
pub mod generation;
pub mod http_routes;
pub mod maps;
pub mod names;
pub mod probes;
pub mod records;
pub mod ring;
