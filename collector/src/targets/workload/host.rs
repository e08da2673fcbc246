//! Names for a workload's ids from files a node already has, read under `--host-root`
//! (what a DaemonSet mounts the node's root at; `/` on a host):
//! - the kubelet's pod log directories, `/var/log/pods/<namespace>_<pod>_<uid>/`
//!   (kubernetes `pkg/kubelet/kuberuntime/helpers.go`, `BuildPodLogsDirectory`): a pod uid's
//!   namespace and name;
//! - its container log links, `/var/log/containers/<pod>_<namespace>_<container>-<id>.log`
//!   (`kuberuntime_container.go`, `logSymlink`; what log shippers read): a container id's
//!   pod, namespace and container name. Names and namespaces are DNS labels or subdomains,
//!   which have no `_`, so the split is unambiguous;
//! - Docker's `/var/lib/docker/containers/<id>/config.v2.json`: a container's `Name`.
//!
//! A kubelet makes a pod's directory and a container's link when it starts them, which may
//! be after their cgroups: what is not there yet is simply not known yet.
use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    time::SystemTime,
};

use super::Workload;

/// The host's files, under a root.
#[derive(Clone, Debug)]
pub struct HostFiles {
    root: PathBuf,
}

/// What the kubelet's log directories named at one moment.
#[derive(Debug, Default)]
pub struct Index {
    /// pod uid -> (namespace, pod)
    pods: HashMap<String, (String, String)>,
    /// container id -> (namespace, pod, container)
    containers: HashMap<String, (String, String, String)>,
    docker: PathBuf,
}

impl HostFiles {
    pub fn under(root: impl Into<PathBuf>) -> HostFiles {
        HostFiles { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// When the directories that name workloads last changed (`None` for one absent): a
    /// link or directory made or removed in them changes their mtime, so names that were
    /// not there may be now.
    pub fn stamp(&self) -> Vec<Option<SystemTime>> {
        ["var/log/pods", "var/log/containers", "var/lib/docker/containers"]
            .iter()
            .map(|dir| fs::metadata(self.root.join(dir)).and_then(|m| m.modified()).ok())
            .collect()
    }

    /// Reads the log directories now (two directory listings; nothing when absent).
    pub fn index(&self) -> Index {
        let mut index = Index {
            docker: self.root.join("var/lib/docker/containers"),
            ..Index::default()
        };
        for name in listing(&self.root.join("var/log/pods")) {
            if let [namespace, pod, uid] = name.splitn(3, '_').collect::<Vec<_>>()[..] {
                index
                    .pods
                    .insert(uid.to_owned(), (namespace.to_owned(), pod.to_owned()));
            }
        }
        for name in listing(&self.root.join("var/log/containers")) {
            let Some(stem) = name.strip_suffix(".log") else {
                continue;
            };
            let Some((rest, id)) = stem.rsplit_once('-') else {
                continue;
            };
            if let [pod, namespace, container] = rest.splitn(3, '_').collect::<Vec<_>>()[..] {
                let names = (namespace.to_owned(), pod.to_owned(), container.to_owned());
                index.containers.insert(id.to_owned(), names);
            }
        }
        index
    }
}

impl Index {
    /// Fills in the names `w`'s ids have here. Returns whether anything was added.
    pub fn resolve(&self, w: &mut Workload) -> bool {
        let before = w.clone();
        if let Some((namespace, pod, container)) = w.container_id.as_ref().and_then(|id| self.containers.get(id)) {
            w.namespace = Some(namespace.clone());
            w.pod = Some(pod.clone());
            w.container = Some(container.clone());
        }
        if w.pod.is_none()
            && let Some((namespace, pod)) = w.pod_uid.as_ref().and_then(|uid| self.pods.get(uid))
        {
            w.namespace = Some(namespace.clone());
            w.pod = Some(pod.clone());
        }
        // A Docker container outside Kubernetes: its name is in its config.
        if w.container.is_none()
            && w.pod_uid.is_none()
            && matches!(w.runtime, Some("docker") | None)
            && let Some(id) = &w.container_id
        {
            w.container = docker_name(&self.docker.join(id).join("config.v2.json"));
        }
        *w != before
    }
}

/// The file names in `dir` (none when it cannot be read: a host without Kubernetes).
fn listing(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// `Name` of a Docker container's `config.v2.json`, without its leading `/`.
fn docker_name(config: &Path) -> Option<String> {
    let text = fs::read_to_string(config).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let name = json.get("Name")?.as_str()?.trim_start_matches('/');
    (!name.is_empty()).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::{super::path::parse, *};

    #[test]
    fn pods_and_containers_are_named_from_the_kubelets_log_directories_and_dockers_config() {
        let root = tempfile::tempdir().unwrap();
        let id = "ab".repeat(32);
        let docker_id = "cd".repeat(32);
        let uid = "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f";
        fs::create_dir_all(root.path().join(format!("var/log/pods/shop_cart-7d9f-x2_{uid}/app"))).unwrap();
        fs::create_dir_all(root.path().join("var/log/containers")).unwrap();
        fs::write(
            root.path()
                .join(format!("var/log/containers/cart-7d9f-x2_shop_app-{id}.log")),
            "",
        )
        .unwrap();
        fs::create_dir_all(root.path().join(format!("var/lib/docker/containers/{docker_id}"))).unwrap();
        fs::write(
            root.path()
                .join(format!("var/lib/docker/containers/{docker_id}/config.v2.json")),
            r#"{"ID":"x","Name":"/redis"}"#,
        )
        .unwrap();
        let index = HostFiles::under(root.path()).index();
        let uid_ = uid.replace('-', "_");
        let mut container = parse(&format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{id}.scope"
        ));
        assert!(container.unresolved());
        assert!(index.resolve(&mut container));
        assert_eq!(
            (
                container.namespace.as_deref(),
                container.pod.as_deref(),
                container.container.as_deref()
            ),
            (Some("shop"), Some("cart-7d9f-x2"), Some("app"))
        );
        assert!(!container.unresolved());
        assert!(!index.resolve(&mut container), "nothing more to add");
        let mut pod = parse(&format!("kubepods/burstable/pod{uid}"));
        index.resolve(&mut pod);
        assert_eq!(
            (pod.namespace.as_deref(), pod.pod.as_deref(), pod.container),
            (Some("shop"), Some("cart-7d9f-x2"), None)
        );
        let mut sandbox = parse(&format!("kubepods/burstable/pod{uid}/{}", "ef".repeat(32)));
        index.resolve(&mut sandbox);
        assert_eq!(
            (sandbox.pod.as_deref(), sandbox.container.as_deref()),
            (Some("cart-7d9f-x2"), None),
            "no log: the pause container"
        );
        assert!(sandbox.unresolved(), "its name may still come");
        let mut docker = parse(&format!("system.slice/docker-{docker_id}.scope"));
        index.resolve(&mut docker);
        assert_eq!(docker.container.as_deref(), Some("redis"));
        let mut elsewhere = parse(&format!("system.slice/docker-{}.scope", "01".repeat(32)));
        assert!(!HostFiles::under("/nonexistent").index().resolve(&mut elsewhere));
    }
}
