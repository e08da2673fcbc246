//! Workload names for cgroup targets: what a cgroup path says by the conventions of systemd,
//! Docker, containerd, CRI-O and the kubelet (`path`), the names the host's own files give
//! for its ids (`host`), and the target name made from both (`naming`). No Kubernetes API
//! server is asked: everything comes from the cgroup tree and files a node already has.
pub mod host;
pub mod naming;
pub mod path;

/// What is known of the workload a cgroup holds. Every field is optional: a cgroup says what
/// its runtime put in its path, and names come only once the host's files have them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    /// The deepest systemd unit in the path (`nginx.service`, `cri-containerd-<id>.scope`).
    pub unit: Option<String>,
    /// The container's id (64 hex digits), from its scope or directory name.
    pub container_id: Option<String>,
    /// Who made the container's cgroup, when its name says (`docker`, `containerd`, `cri-o`,
    /// `podman`); a bare id under a kubepods pod does not say.
    pub runtime: Option<&'static str>,
    /// The pod's uid, with dashes (the systemd driver writes them as `_`).
    pub pod_uid: Option<String>,
    /// `guaranteed`, `burstable` or `besteffort`.
    pub qos: Option<&'static str>,
    /// From the kubelet's log directories.
    pub namespace: Option<String>,
    pub pod: Option<String>,
    /// The Kubernetes container name, or a Docker container's name.
    pub container: Option<String>,
}

/// The fields that can be labels (`collector_target_info`, `--target-labels`), in order.
pub const FIELDS: &[&str] = &[
    "namespace",
    "pod",
    "container",
    "container_id",
    "pod_uid",
    "qos",
    "unit",
];

impl Workload {
    /// The field called `name` in [`FIELDS`], if known.
    pub fn field(&self, name: &str) -> Option<&str> {
        match name {
            "namespace" => self.namespace.as_deref(),
            "pod" => self.pod.as_deref(),
            "container" => self.container.as_deref(),
            "container_id" => self.container_id.as_deref(),
            "pod_uid" => self.pod_uid.as_deref(),
            "qos" => self.qos,
            "unit" => self.unit.as_deref(),
            _ => None,
        }
    }

    /// The known fields, in [`FIELDS`] order.
    pub fn known(&self) -> impl Iterator<Item = (&'static str, &str)> {
        FIELDS.iter().filter_map(|&f| Some((f, self.field(f)?)))
    }

    /// Whether the host's files may still name it: it has an id they are keyed by, and no
    /// name from them yet.
    pub fn unresolved(&self) -> bool {
        (self.container_id.is_some() && self.container.is_none()) || (self.pod_uid.is_some() && self.pod.is_none())
    }
}
