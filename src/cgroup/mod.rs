//! cgroup v2: finding the hierarchy, creating a container's leaf, limits,
//! freezing, killing and removal.
//!
//! On hybrid hosts (v1 controllers plus a v2 tree, as on the development
//! machine) the v2 tree is mounted at /sys/fs/cgroup/unified; on pure v2
//! hosts at /sys/fs/cgroup. Neither is assumed: the mount table is read.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Errors of the cgroup module. Each names the cgroup it concerns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no cgroup v2 hierarchy is mounted (looked in /proc/self/mountinfo); mount one with `mount -t cgroup2 none /sys/fs/cgroup/unified`")]
    NoV2,
    #[error("cgroup {path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("the {controller} controller is not available in cgroup v2 at {root} (on this host it is bound to cgroup v1), so {option} can not be applied")]
    ControllerMissing {
        controller: &'static str,
        root: PathBuf,
        option: &'static str,
    },
    #[error(
        "cgroup {path}: the container made a cgroup of its own inside it ({child}); nested cgroups are not carried"
    )]
    Nested { path: PathBuf, child: PathBuf },
    #[error("cgroup {path}: timed out after {waited:?} waiting for {what}")]
    Timeout {
        path: PathBuf,
        what: &'static str,
        waited: Duration,
    },
}

type Result<T> = std::result::Result<T, Error>;

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// Where the cgroup v2 hierarchy is mounted, from the mount table.
pub fn v2_mount() -> Result<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").map_err(|_| Error::NoV2)?;
    find_v2_mount(&info).ok_or(Error::NoV2)
}

/// Parses mountinfo text and returns the first cgroup2 mount point.
pub fn find_v2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // Fields: id parent major:minor root mountpoint opts [optional...] - fstype source superopts
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        if fstype != "cgroup2" {
            return None;
        }
        let mountpoint = left.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_mountinfo(mountpoint)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal (\040 ...).
fn unescape_mountinfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v as char);
                i += 4;
                continue;
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

/// Resource limits that map onto cgroup v2 controller files.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// CPU bandwidth in CPUs (cpu.max), e.g. 0.5 or 2.
    pub cpus: Option<f64>,
    /// Memory ceiling in bytes (memory.max).
    pub memory: Option<u64>,
}

/// The cgroup.max value for `cpus` CPUs with the default 100 ms period.
pub fn cpu_max_value(cpus: f64) -> String {
    let period = 100_000u64;
    let quota = ((cpus * period as f64).round() as u64).max(1000);
    format!("{quota} {period}")
}

/// Parses a byte count: a number with an optional K, M, G or T suffix
/// (powers of 1024, an optional trailing `B` or `iB`).
pub fn parse_bytes(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let t = t.strip_suffix("iB").or_else(|| t.strip_suffix('B')).unwrap_or(t);
    let (num, shift) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 10),
        Some('M') => (&t[..t.len() - 1], 20),
        Some('G') => (&t[..t.len() - 1], 30),
        Some('T') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 4096, 512M, 2G)"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// One cgroup v2 directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    /// A handle for an existing or future cgroup at `path` (absolute, under
    /// the v2 mount).
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn exists(&self) -> bool {
        self.path.join("cgroup.procs").exists()
    }

    /// Creates the cgroup and its parents (mkdir -p).
    pub fn create(&self) -> Result<()> {
        fs::create_dir_all(&self.path).map_err(io_err(&self.path, "create"))
    }

    /// Applies limits. A controller that is not available in the v2 tree is
    /// an error naming it: a limit the user asked for is never dropped
    /// silently.
    pub fn apply(&self, limits: &Limits) -> Result<()> {
        let root = v2_mount()?;
        if let Some(cpus) = limits.cpus {
            self.enable_controller(&root, "cpu", "--cpus")?;
            self.write("cpu.max", &cpu_max_value(cpus))?;
        }
        if let Some(mem) = limits.memory {
            self.enable_controller(&root, "memory", "--memory")?;
            self.write("memory.max", &mem.to_string())?;
        }
        Ok(())
    }

    /// Enables `controller` in every ancestor's subtree_control, from the
    /// v2 root down to our parent.
    fn enable_controller(&self, root: &Path, controller: &'static str, option: &'static str) -> Result<()> {
        let missing = || Error::ControllerMissing {
            controller,
            root: root.to_path_buf(),
            option,
        };
        let available = fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        if !available.split_whitespace().any(|c| c == controller) {
            return Err(missing());
        }
        let rel = self.path.strip_prefix(root).map_err(|_| missing())?;
        let mut dir = root.to_path_buf();
        for part in rel.parent().into_iter().flat_map(|p| p.components()) {
            let ctl = dir.join("cgroup.subtree_control");
            fs::write(&ctl, format!("+{controller}")).map_err(io_err(&ctl, "enable controller"))?;
            dir.push(part);
        }
        let ctl = dir.join("cgroup.subtree_control");
        fs::write(&ctl, format!("+{controller}")).map_err(io_err(&ctl, "enable controller"))
    }

    /// Writes one control file.
    pub fn write(&self, file: &str, value: &str) -> Result<()> {
        let p = self.path.join(file);
        fs::write(&p, value).map_err(io_err(&p, "write"))
    }

    /// Reads one control file.
    pub fn read(&self, file: &str) -> Result<String> {
        let p = self.path.join(file);
        fs::read_to_string(&p).map_err(io_err(&p, "read"))
    }

    /// The value of `key` in cgroup.events (`populated`, `frozen`).
    fn event(&self, key: &str) -> Result<Option<bool>> {
        let text = self.read("cgroup.events")?;
        Ok(parse_flat_keyed(&text, key).map(|v| v == "1"))
    }

    /// Whether any process lives in the cgroup or below it.
    pub fn populated(&self) -> Result<bool> {
        Ok(self.event("populated")?.unwrap_or(false))
    }

    /// Whether the cgroup is frozen (cgroup.events says so).
    pub fn frozen(&self) -> Result<bool> {
        Ok(self.event("frozen")?.unwrap_or(false))
    }

    /// The PIDs (host view) of the processes in this cgroup.
    pub fn procs(&self) -> Result<Vec<i32>> {
        Ok(self
            .read("cgroup.procs")?
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect())
    }

    /// Moves process `pid` into this cgroup.
    pub fn add(&self, pid: i32) -> Result<()> {
        self.write("cgroup.procs", &pid.to_string())
    }

    /// Freezes (or thaws) the cgroup and waits until cgroup.events reports
    /// the new state.
    pub fn set_frozen(&self, frozen: bool, timeout: Duration) -> Result<()> {
        self.write("cgroup.freeze", if frozen { "1" } else { "0" })?;
        self.wait_event("frozen", frozen, if frozen { "frozen 1" } else { "frozen 0" }, timeout)
    }

    /// Kills every process in the cgroup (cgroup.kill, or SIGKILL to each
    /// listed process where cgroup.kill does not exist) and waits until it
    /// is empty.
    pub fn kill_all(&self, timeout: Duration) -> Result<()> {
        if !self.exists() || !self.populated()? {
            return Ok(());
        }
        if self.path.join("cgroup.kill").exists() {
            self.write("cgroup.kill", "1")?;
        } else {
            for pid in self.procs()? {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
        self.wait_event("populated", false, "populated 0", timeout)
    }

    /// Polls cgroup.events until `key` has `value`.
    pub fn wait_event(&self, key: &str, value: bool, what: &'static str, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        let mut nap = Duration::from_micros(200);
        loop {
            if self.event(key)?.unwrap_or(false) == value {
                return Ok(());
            }
            if start.elapsed() >= timeout {
                return Err(Error::Timeout {
                    path: self.path.clone(),
                    what,
                    waited: timeout,
                });
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(20));
        }
    }

    /// Removes the (empty) cgroup directory. Retries briefly, as the kernel
    /// can report EBUSY for a moment after the last process left.
    /// The cgroups made inside this one (directories, not recursive).
    pub fn children(&self) -> Result<Vec<PathBuf>> {
        let entries = match fs::read_dir(&self.path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            r => r.map_err(io_err(&self.path, "list child cgroups"))?,
        };
        let mut out: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        out.sort();
        Ok(out)
    }

    /// Refuses a cgroup that holds cgroups of its own (a container that
    /// mounted cgroup2 in its namespace and made one): they are not carried.
    pub fn refuse_nested(&self) -> Result<()> {
        match self.children()?.into_iter().next() {
            Some(child) => Err(Error::Nested {
                path: self.path.clone(),
                child,
            }),
            None => Ok(()),
        }
    }

    /// Removes the cgroup and every cgroup inside it, deepest first
    /// (their processes must be gone).
    pub fn remove(&self) -> Result<()> {
        for child in self.children()? {
            Cgroup::at(child).remove()?;
        }
        let start = Instant::now();
        loop {
            match fs::remove_dir(&self.path) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) if start.elapsed() < Duration::from_secs(2) && e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(io_err(&self.path, "remove")(e)),
            }
        }
    }

    /// Removes the cgroup's parent if it has become empty; a busy or
    /// non-empty parent is left as it is.
    pub fn remove_parent_if_empty(&self) {
        // Only a root's own parent (migrate-HASH), never another's: an
        // adopted container's cgroup sits elsewhere.
        let Some(parent) = self.path.parent() else { return };
        if parent
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("migrate-"))
        {
            let _ = fs::remove_dir(parent);
        }
    }
}

/// Reads `key value` lines (cgroup.events, memory.stat...).
pub fn parse_flat_keyed<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then_some(v.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hybrid_v2_mount() {
        let info = "\
24 1 0:22 / /sys rw,nosuid - sysfs sysfs rw
31 24 0:26 / /sys/fs/cgroup ro - tmpfs tmpfs ro,mode=755
32 31 0:27 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw
33 31 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
";
        assert_eq!(find_v2_mount(info), Some(PathBuf::from("/sys/fs/cgroup/unified")));
    }

    #[test]
    fn finds_pure_v2_mount_and_none() {
        let info = "30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(find_v2_mount(info), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(find_v2_mount("1 0 0:1 / / rw - ext4 /dev/vda rw\n"), None);
    }

    #[test]
    fn unescapes_mount_points() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/end\"), r"/end\");
    }

    #[test]
    fn flat_keyed() {
        let ev = "populated 1\nfrozen 0\n";
        assert_eq!(parse_flat_keyed(ev, "populated"), Some("1"));
        assert_eq!(parse_flat_keyed(ev, "frozen"), Some("0"));
        assert_eq!(parse_flat_keyed(ev, "nope"), None);
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("512M"), Ok(512 << 20));
        assert_eq!(parse_bytes("2g"), Ok(2 << 30));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("64KB"), Ok(64 << 10));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("99999999999T").is_err());
    }

    #[test]
    fn cpu_max() {
        assert_eq!(cpu_max_value(0.5), "50000 100000");
        assert_eq!(cpu_max_value(2.0), "200000 100000");
        assert_eq!(cpu_max_value(0.0001), "1000 100000");
    }
}
