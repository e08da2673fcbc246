//! The kernels the end-to-end suite also runs on, in virtual machines: Debian's own kernel
//! packages, fetched with `apt-get download` and unpacked under `target/kernels/` (nothing is
//! installed on the host, and each release's package lists are read into `target/kernels/apt`,
//! never into the host's apt state), booted by virtme-ng with the host's root filesystem and QEMU
//! without KVM (nested guests fail under KVM on these machines).
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::{run, setup};

/// One kernel of the matrix: its label (the test's name for it) and where Debian has it.
pub struct Kernel {
    pub label: &'static str,
    /// The Debian suite whose `linux-image-amd64` names the image.
    pub suite: &'static str,
}

const METAPACKAGE: &str = "linux-image-amd64";
const MIRROR: &str = "http://deb.debian.org/debian";

/// Debian 11, 12 and 13's kernels.
pub const MATRIX: &[Kernel] = &[
    Kernel {
        label: "5.10",
        suite: "bullseye",
    },
    Kernel {
        label: "6.1",
        suite: "bookworm",
    },
    Kernel {
        label: "6.12",
        suite: "trixie",
    },
];

/// The end-to-end suites each guest runs (`tests/tests/<name>.rs`), beside the kernel
/// test's own guest half: those of the core and of every family a kernel may lack. Not
/// the http suite: its programs load (or are said off) at every collector start in every
/// guest, which the guest half checks, and its eight tests cost about 9 minutes per guest
/// (every start verifies all programs under TCG: 37 s on 5.10 on an AMD EPYC host), which
/// the whole command's 90 minutes cannot give on the slower CPU kind. Run it in a guest by
/// hand with `COLLECTOR_VM_SUITES` (tests/tests/kernels.rs) when the http programs change.
pub const GUEST_SUITES: &[&str] = &["syscalls", "process_events", "cgroups", "sockets", "resources"];

/// The tools that boot a guest: QEMU, depmod and busybox (virtme-ng builds the guest's
/// module list and its initramfs with them), and virtme-ng from PyPI (Debian has none).
const VM_TOOLS: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("depmod", "kmod"),
    ("busybox", "busybox-static"),
];
const VIRTME_NG: &str = "virtme-ng==1.42";

/// Installs what booting a guest needs (virtme-ng into `target/kernels/venv`) and fetches
/// every kernel of the matrix (or only the one labelled `only`), then returns
/// `LABEL=VMLINUZ,...` for the tests (`COLLECTOR_VM_KERNELS`); the venv's `bin` is where the
/// tests find `vng` (`COLLECTOR_VNG_BIN`).
pub fn ensure_kernels(root: &Path, only: Option<&str>) -> anyhow::Result<String> {
    if let Some(label) = only
        && !MATRIX.iter().any(|k| k.label == label)
    {
        let labels: Vec<&str> = MATRIX.iter().map(|k| k.label).collect();
        bail!(
            "--kernel {label}: not in the kernel matrix; choose one of {}",
            labels.join(", ")
        );
    }
    setup::ensure_tools(VM_TOOLS, "the kernel matrix")?;
    setup::ensure_pip(&root.join("target/kernels/venv"), VIRTME_NG, "the kernel matrix")?;
    let kernels = MATRIX
        .iter()
        .filter(|k| only.is_none_or(|label| k.label == label))
        .map(|k| Ok(format!("{}={}", k.label, fetch(root, k)?.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(kernels.join(","))
}

/// The kernel image of `kernel`, downloaded and unpacked once into `target/kernels/LABEL`.
fn fetch(root: &Path, kernel: &Kernel) -> anyhow::Result<PathBuf> {
    let dir = root.join("target/kernels").join(kernel.label);
    if let Some(image) = image_in(&dir) {
        return Ok(image);
    }
    // The standard flavour: the cloud one lacks 9p, which shares the host's root.
    let apt = AptSuite::read(&root.join("target/kernels/apt").join(kernel.suite), kernel.suite)?;
    let image = format!("{}-unsigned", apt.depends_on(METAPACKAGE)?);
    let download = dir.join("download");
    std::fs::create_dir_all(&download).with_context(|| format!("cannot create {}", download.display()))?;
    eprintln!(
        "setup: apt-get download {image} from {} (for the kernel matrix)",
        kernel.suite
    );
    run(apt.command("apt-get").args(["download", &image]).current_dir(&download))?;
    let deb = std::fs::read_dir(&download)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download left no .deb in {}", download.display()))?;
    // Unpacked beside and renamed into place, so an interrupted run leaves no half kernel
    // that a later one would take for whole.
    let unpacked = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&unpacked);
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    std::fs::remove_dir_all(&dir)?;
    std::fs::rename(&unpacked, &dir)?;
    image_in(&dir).with_context(|| format!("{image} has no /boot/vmlinuz-*"))
}

fn image_in(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir.join("boot"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
}

/// One Debian suite's package lists, kept in a directory of their own.
struct AptSuite {
    options: Vec<String>,
}

impl AptSuite {
    /// Reads `suite`'s package lists into `dir` (apt-get update with every path there).
    fn read(dir: &Path, suite: &str) -> anyhow::Result<AptSuite> {
        for sub in ["lists/partial", "cache/archives/partial"] {
            std::fs::create_dir_all(dir.join(sub)).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let sources = dir.join("sources.list");
        std::fs::write(&sources, format!("deb {MIRROR} {suite} main\n"))?;
        let options = [
            format!("Dir::Etc::SourceList={}", sources.display()),
            "Dir::Etc::SourceParts=/nonexistent".to_owned(),
            // Nor the host's apt.conf.d: its hooks and extra downloads are for the host.
            "Dir::Etc::Parts=/nonexistent".to_owned(),
            format!("Dir::State::Lists={}", dir.join("lists").display()),
            format!("Dir::Cache={}", dir.join("cache").display()),
            // The host's apt lock is not ours to take: these lists are private.
            "Debug::NoLocking=1".to_owned(),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_owned(), o])
        .collect();
        let apt = AptSuite { options };
        eprintln!("setup: apt-get update for {suite} (for the kernel matrix)");
        run(apt.command("apt-get").args(["update", "-qq"]))?;
        Ok(apt)
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(&self.options).stdin(Stdio::null());
        cmd
    }

    /// The package `metapackage` depends on (`linux-image-amd64` -> `linux-image-6.1.0-57-amd64`).
    fn depends_on(&self, metapackage: &str) -> anyhow::Result<String> {
        let out = self
            .command("apt-cache")
            .args(["depends", metapackage])
            .stderr(Stdio::null())
            .output()
            .context("cannot run apt-cache")?;
        let text = String::from_utf8_lossy(&out.stdout);
        match text.lines().find_map(|l| l.trim().strip_prefix("Depends: ")) {
            Some(package) => Ok(package.trim().to_owned()),
            None => bail!("apt-cache knows no {metapackage} in these lists"),
        }
    }
}
