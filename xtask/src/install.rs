//! `cargo xtask install`: puts the release binary, the systemd unit and a first config on
//! this host (or under `--root`, for a package or an image), as `deploy/systemd/` describes.
//! A config or environment file already there is kept: it is the user's.
use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;

use crate::run;

/// Where each file goes, relative to the root, and whether an existing one is replaced.
const FILES: &[(&str, &str, u32, bool)] = &[
    // Where local packages put units: /etc/systemd/system stays the admin's (`systemctl edit`).
    (
        "deploy/systemd/collector.service",
        "usr/local/lib/systemd/system/collector.service",
        0o644,
        true,
    ),
    (
        "deploy/systemd/collector.toml",
        "etc/collector/collector.toml",
        0o644,
        false,
    ),
    ("deploy/systemd/collector.env", "etc/default/collector", 0o644, false),
    ("README.md", "usr/local/share/doc/collector/README.md", 0o644, true),
];

const BINARY: &str = "usr/local/bin/collector";

pub fn install(workspace: &Path, bin: &Path, root: &Path) -> anyhow::Result<()> {
    // Beside the target, then renamed over it: a running collector keeps its old binary
    // (writing into it would fail with ETXTBSY).
    let binary = root.join(BINARY);
    place(bin, &binary, 0o755)?;
    for (from, to, mode, replace) in FILES {
        let to = root.join(to);
        if !replace && to.exists() {
            eprintln!("install: kept {} (yours)", to.display());
            continue;
        }
        place(&workspace.join(from), &to, *mode)?;
    }
    if root == Path::new("/") && Path::new("/run/systemd/system").is_dir() {
        run(Command::new("systemctl").arg("daemon-reload"))?;
        let active = Command::new("systemctl")
            .args(["is-active", "--quiet", "collector"])
            .status()
            .is_ok_and(|s| s.success());
        if active {
            eprintln!("install: done; the running collector has the old binary: `systemctl restart collector`");
        } else {
            eprintln!("install: done; start it with `systemctl enable --now collector`");
        }
    } else {
        eprintln!("install: done under {}; systemd is not running here", root.display());
    }
    Ok(())
}

fn place(from: &Path, to: &Path, mode: u32) -> anyhow::Result<()> {
    let dir = to.parent().context("an install path has a parent")?;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut staged = PathBuf::from(to);
    staged.as_mut_os_string().push(".new");
    fs::copy(from, &staged).with_context(|| format!("cannot copy {} to {}", from.display(), staged.display()))?;
    fs::set_permissions(&staged, fs::Permissions::from_mode(mode))?;
    fs::rename(&staged, to).with_context(|| format!("cannot put {} in place", to.display()))?;
    eprintln!("install: {}", to.display());
    Ok(())
}
