//! What a cgroup v2 path says about its workload, by the conventions of the programs that
//! make cgroups. Segments are read by their shape wherever they are, so a hierarchy nested
//! under another (kind's `kubelet.slice/kubelet-kubepods.slice/...`, Docker in Docker's
//! `docker/<id>/kubepods/...`) parses the same.
//!
//! - systemd (systemd.unit(5), systemd.slice(5)): units end in `.service`, `.scope` or
//!   `.slice`; a slice's name repeats its parents' joined by `-`.
//! - The kubelet (kubernetes `pkg/kubelet/cm/`: `qos_container_manager_linux.go`,
//!   `pod_container_manager_linux.go`, `cgroup_manager_linux.go`): a pod's cgroup is
//!   `kubepods/[burstable|besteffort/]pod<uid>` (Guaranteed pods sit right under `kubepods`);
//!   with the systemd driver each level becomes a slice named after its ancestors
//!   (`kubepods-burstable-pod<uid>.slice`), the uid's `-` escaped as `_`.
//! - Container runtimes, one cgroup per container, inside the pod's or their own:
//!   with systemd, runc makes a scope `<prefix>-<id>.scope` (runc `libcontainer/cgroups/systemd`):
//!   `cri-containerd-` (containerd's CRI), `crio-` (CRI-O; `crio-conmon-` is its monitor's,
//!   no container), `docker-` (Docker, cri-dockerd), `libpod-` (Podman); with cgroupfs a
//!   directory: the bare id (containerd, cri-dockerd), `crio-<id>`, `docker/<id>` (Docker),
//!   `libpod-<id>` (Podman).
use super::Workload;

/// The prefixes of container scopes and directories, and the runtime each names.
const CONTAINER_PREFIXES: &[(&str, &str)] = &[
    ("cri-containerd-", "containerd"),
    ("crio-", "cri-o"),
    ("docker-", "docker"),
    ("libpod-", "podman"),
];

/// Parses `path` (relative to the v2 mount, with or without a leading `/`).
pub fn parse(path: &str) -> Workload {
    let mut w = Workload::default();
    let mut parent = "";
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        let unit = [".service", ".scope", ".slice"]
            .iter()
            .find_map(|suffix| segment.strip_suffix(suffix));
        if unit.is_some() {
            w.unit = Some(segment.to_owned());
        }
        let name = unit.unwrap_or(segment);
        if let Some(slice) = segment.strip_suffix(".slice") {
            kubepods_slice(slice, &mut w);
        } else if parent == "kubepods" || (w.qos.is_some() && w.pod_uid.is_none()) {
            kubepods_dir(segment, &mut w);
        }
        if let Some((id, runtime)) = container(name, parent) {
            w.container_id = Some(id.to_owned());
            w.runtime = runtime;
        } else if name.starts_with("crio-conmon-") {
            w.runtime = Some("cri-o");
        }
        if segment == "kubepods" || kubepods_root(segment) {
            // A kubelet's hierarchy (inside a container's, for Docker in Docker or kind):
            // what was read above it was the outer workload's.
            w = Workload {
                unit: w.unit,
                ..Workload::default()
            };
        }
        parent = segment;
    }
    if w.pod_uid.is_some() && w.qos.is_none() {
        w.qos = Some("guaranteed");
    }
    w
}

/// A kubelet slice with the systemd driver: `kubepods[-<qos>][-pod<uid>]`, possibly under a
/// prefix of its own parents (`kubelet-kubepods-...`).
fn kubepods_slice(slice: &str, w: &mut Workload) {
    let Some(at) = slice.find("kubepods") else {
        return;
    };
    let rest = &slice[at + "kubepods".len()..];
    if !(rest.is_empty() || rest.starts_with('-')) {
        return;
    }
    for part in rest.split('-').filter(|p| !p.is_empty()) {
        if let Some(qos) = qos(part) {
            w.qos = Some(qos);
        } else if let Some(uid) = part.strip_prefix("pod").filter(|u| is_uid(&u.replace('_', "-"))) {
            w.pod_uid = Some(uid.replace('_', "-"));
        }
    }
}

/// The root slice of a kubelet's hierarchy with the systemd driver: `kubepods.slice`, or
/// under a prefix of its parents (kind's `kubelet-kubepods.slice`).
fn kubepods_root(segment: &str) -> bool {
    segment
        .strip_suffix(".slice")
        .is_some_and(|slice| slice == "kubepods" || slice.ends_with("-kubepods"))
}

/// A kubelet directory with the cgroupfs driver, right under `kubepods` or its QoS level.
fn kubepods_dir(segment: &str, w: &mut Workload) {
    if let Some(qos) = qos(segment) {
        w.qos = Some(qos);
    } else if let Some(uid) = segment.strip_prefix("pod").filter(|u| is_uid(u)) {
        w.pod_uid = Some(uid.to_owned());
    }
}

fn qos(part: &str) -> Option<&'static str> {
    match part {
        "burstable" => Some("burstable"),
        "besteffort" => Some("besteffort"),
        _ => None,
    }
}

/// A container's id in `name` (a segment without its unit suffix), and the runtime its
/// prefix or `parent` names: `<prefix><id>`, or a bare id (under `docker` for Docker).
fn container<'a>(name: &'a str, parent: &str) -> Option<(&'a str, Option<&'static str>)> {
    if is_container_id(name) {
        return Some((name, (parent == "docker").then_some("docker")));
    }
    CONTAINER_PREFIXES.iter().find_map(|(prefix, runtime)| {
        let id = name.strip_prefix(prefix)?;
        is_container_id(id).then_some((id, Some(*runtime)))
    })
}

/// 64 lowercase hex digits, as every OCI runtime names containers here.
fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A pod's uid: an RFC 4122 UUID in its 8-4-4-4-12 hex form (what the API server gives), or
/// 32 hex digits, the hash a kubelet gives a static pod from its manifest file
/// (kubernetes `pkg/kubelet/config/common.go`, `generatePodName`/`applyDefaults`).
fn is_uid(s: &str) -> bool {
    let hex = |g: &str, n: usize| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit());
    let groups: Vec<&str> = s.split('-').collect();
    hex(s, 32) || (groups.len() == 5 && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| hex(g, n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "9a2b5f3c1d4e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";
    const UID: &str = "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f";
    const HASH: &str = "4b1e3c2a9d8f7e6a5b4c3d2e1f0a9b8c";

    /// Paths as each runtime makes them (`<id>`: a container id, `<uid>`: a pod uid, `<uid_>`
    /// as the systemd driver escapes it) and what they say: unit, container id, runtime, pod
    /// uid, QoS class ("" for none). `BUR`, `BE`: the QoS slices of the systemd driver.
    const ROWS: &[(&str, &str, &str, &str, &str, &str)] = &[
        // systemd services, sessions and nested slices
        ("system.slice/nginx.service", "nginx.service", "", "", "", ""),
        (
            "/system.slice/system-getty.slice/getty@tty1.service",
            "getty@tty1.service",
            "",
            "",
            "",
            "",
        ),
        (
            "user.slice/user-1000.slice/session-2.scope",
            "session-2.scope",
            "",
            "",
            "",
            "",
        ),
        (
            "user.slice/user-1000.slice/user@1000.service/app.slice/app-x.scope",
            "app-x.scope",
            "",
            "",
            "",
            "",
        ),
        ("init.scope", "init.scope", "", "", "", ""),
        ("system.slice", "system.slice", "", "", "", ""),
        // Docker and Podman, systemd and cgroupfs drivers
        (
            "system.slice/docker-<id>.scope",
            "docker-<id>.scope",
            "<id>",
            "docker",
            "",
            "",
        ),
        ("docker/<id>", "", "<id>", "docker", "", ""),
        (
            "machine.slice/libpod-<id>.scope",
            "libpod-<id>.scope",
            "<id>",
            "podman",
            "",
            "",
        ),
        ("libpod_parent/libpod-<id>", "", "<id>", "podman", "", ""),
        // containerd under kubepods, systemd driver, three QoS classes; a pod's and a QoS slice
        (
            "BUR/kubepods-burstable-pod<uid_>.slice/cri-containerd-<id>.scope",
            "cri-containerd-<id>.scope",
            "<id>",
            "containerd",
            "<uid>",
            "burstable",
        ),
        (
            "BE/kubepods-besteffort-pod<uid_>.slice/cri-containerd-<id>.scope",
            "cri-containerd-<id>.scope",
            "<id>",
            "containerd",
            "<uid>",
            "besteffort",
        ),
        (
            "kubepods.slice/kubepods-pod<uid_>.slice/cri-containerd-<id>.scope",
            "cri-containerd-<id>.scope",
            "<id>",
            "containerd",
            "<uid>",
            "guaranteed",
        ),
        (
            "BUR/kubepods-burstable-pod<uid_>.slice",
            "kubepods-burstable-pod<uid_>.slice",
            "",
            "",
            "<uid>",
            "burstable",
        ),
        ("BE", "kubepods-besteffort.slice", "", "", "", "besteffort"),
        // containerd under kubepods, cgroupfs driver, three QoS classes; a pod's directory
        ("kubepods/burstable/pod<uid>/<id>", "", "<id>", "", "<uid>", "burstable"),
        (
            "kubepods/besteffort/pod<uid>/<id>",
            "",
            "<id>",
            "",
            "<uid>",
            "besteffort",
        ),
        ("kubepods/pod<uid>/<id>", "", "<id>", "", "<uid>", "guaranteed"),
        ("kubepods/pod<uid>", "", "", "", "<uid>", "guaranteed"),
        // CRI-O, both drivers; its monitor's scope is no container
        (
            "BUR/kubepods-burstable-pod<uid_>.slice/crio-<id>.scope",
            "crio-<id>.scope",
            "<id>",
            "cri-o",
            "<uid>",
            "burstable",
        ),
        (
            "kubepods.slice/kubepods-pod<uid_>.slice/crio-conmon-<id>.scope",
            "crio-conmon-<id>.scope",
            "",
            "cri-o",
            "<uid>",
            "guaranteed",
        ),
        (
            "kubepods/besteffort/pod<uid>/crio-<id>",
            "",
            "<id>",
            "cri-o",
            "<uid>",
            "besteffort",
        ),
        // cri-dockerd under kubepods
        (
            "BE/kubepods-besteffort-pod<uid_>.slice/docker-<id>.scope",
            "docker-<id>.scope",
            "<id>",
            "docker",
            "<uid>",
            "besteffort",
        ),
        // kind: the node's kubelet nests its hierarchy under a slice of its own
        (
            "kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod<uid_>.slice/cri-containerd-<id>.scope",
            "cri-containerd-<id>.scope",
            "<id>",
            "containerd",
            "<uid>",
            "burstable",
        ),
        // Docker in Docker running a kubelet with cgroupfs: the inner workload
        (
            "docker/<id>/kubepods/besteffort/pod<uid>/<id>",
            "",
            "<id>",
            "",
            "<uid>",
            "besteffort",
        ),
        // kind's node in a Docker scope: the pod's slice is not the node container's
        (
            "system.slice/docker-<id>.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod<uid_>.slice",
            "kubelet-kubepods-besteffort-pod<uid_>.slice",
            "",
            "",
            "<uid>",
            "besteffort",
        ),
        // a static pod: its uid is a hash of its manifest
        (
            "kubepods/burstable/pod<hash>/<id>",
            "",
            "<id>",
            "",
            "<hash>",
            "burstable",
        ),
        // look-alikes: not a uid, not an id, not the kubelet's
        (
            "kubepods.slice/kubepods-podnotauid.slice",
            "kubepods-podnotauid.slice",
            "",
            "",
            "",
            "",
        ),
        (
            "system.slice/docker-notanid.scope",
            "docker-notanid.scope",
            "",
            "",
            "",
            "",
        ),
        ("mykubepodsapp.service", "mykubepodsapp.service", "", "", "", ""),
    ];

    fn expand(s: &str) -> String {
        s.replace("BUR", "kubepods.slice/kubepods-burstable.slice")
            .replace("BE", "kubepods.slice/kubepods-besteffort.slice")
            .replace("<id>", ID)
            .replace("<uid_>", &UID.replace('-', "_"))
            .replace("<uid>", UID)
            .replace("<hash>", HASH)
    }

    #[test]
    fn real_world_cgroup_paths_parse_to_their_workload() {
        assert!(ROWS.len() >= 20);
        let some = |s: &str| (!s.is_empty()).then(|| expand(s));
        for &(path, unit, id, runtime, uid, qos) in ROWS {
            let path = expand(path);
            let w = parse(&path);
            let got = (w.unit, w.container_id, w.runtime, w.pod_uid, w.qos);
            let want = (
                some(unit),
                some(id),
                (!runtime.is_empty()).then_some(runtime),
                some(uid),
                (!qos.is_empty()).then_some(qos),
            );
            assert_eq!(got, want, "{path}");
            assert_eq!(
                (w.namespace, w.pod, w.container),
                (None, None, None),
                "{path}: names come from files"
            );
        }
    }
}
