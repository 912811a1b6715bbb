//! /proc read in one place: a process's or thread's status file, and the
//! process tree under a process. Below every other module: the kinds, the
//! engine and the runtime all read processes through it.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("process {pid}: read {what}: {source}")]
    Read {
        pid: i32,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("process {pid}: no {field} in /proc/{pid}/status")]
    Field { pid: i32, field: &'static str },
}

pub type Result<T> = std::result::Result<T, Error>;

/// The parts of /proc/PID/status (or /proc/PID/task/TID/status) migrate
/// uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// IDs in the innermost PID namespace.
    pub ns_pid: i32,
    pub ns_pgid: i32,
    pub ns_sid: i32,
    pub host_ppid: i32,
    /// The process a thread belongs to.
    pub tgid: i32,
    pub umask: u32,
    pub state: char,
    pub name: String,
    /// TracerPid: who ptraces it (0: nobody).
    pub tracer: i32,
    /// Credentials; a field that is missing reads as zero (or empty).
    /// Real, effective, saved, fs.
    pub uids: [u32; 4],
    pub gids: [u32; 4],
    pub groups: Vec<u32>,
    pub cap_inh: u64,
    pub cap_prm: u64,
    pub cap_eff: u64,
    pub cap_bnd: u64,
    pub cap_amb: u64,
    pub no_new_privs: bool,
    /// The seccomp mode: 0 none, 1 strict, 2 filter.
    pub seccomp: u32,
    /// Signals ignored and caught (bit N-1 for signal N): SigIgn, SigCgt.
    pub sig_ign: u64,
    pub sig_cgt: u64,
}

/// Field `key` of a status file's text, trimmed.
pub fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
        .map(str::trim)
}

fn last_id(v: &str) -> Option<i32> {
    v.split_whitespace().last()?.parse().ok()
}

fn ids<const N: usize>(v: &str) -> [u32; N] {
    let mut out = [0u32; N];
    for (o, x) in out.iter_mut().zip(v.split_whitespace()) {
        *o = x.parse().unwrap_or(0);
    }
    out
}

/// Parses the status file of process (or thread) `pid`. Its place in the
/// process tree (NSpid, NSpgid, NSsid, PPid, State) must be there.
pub fn parse_status(pid: i32, text: &str) -> Result<Status> {
    let get = |key: &str| field(text, key);
    let need = |field: &'static str| get(field).ok_or(Error::Field { pid, field });
    let or_empty = |key: &str| get(key).unwrap_or("");
    let hex = |key: &str| u64::from_str_radix(or_empty(key), 16).unwrap_or(0);
    Ok(Status {
        ns_pid: last_id(need("NSpid")?).ok_or(Error::Field { pid, field: "NSpid" })?,
        ns_pgid: last_id(need("NSpgid")?).ok_or(Error::Field { pid, field: "NSpgid" })?,
        ns_sid: last_id(need("NSsid")?).ok_or(Error::Field { pid, field: "NSsid" })?,
        host_ppid: need("PPid")?.parse().unwrap_or(0),
        tgid: get("Tgid").and_then(|v| v.parse().ok()).unwrap_or(pid),
        umask: get("Umask")
            .and_then(|u| u32::from_str_radix(u, 8).ok())
            .unwrap_or(0o022),
        state: need("State")?.chars().next().unwrap_or('?'),
        tracer: get("TracerPid").and_then(|v| v.parse().ok()).unwrap_or(0),
        name: or_empty("Name").to_string(),
        uids: ids(or_empty("Uid")),
        gids: ids(or_empty("Gid")),
        groups: or_empty("Groups")
            .split_whitespace()
            .filter_map(|g| g.parse().ok())
            .collect(),
        cap_inh: hex("CapInh"),
        cap_prm: hex("CapPrm"),
        cap_eff: hex("CapEff"),
        cap_bnd: hex("CapBnd"),
        cap_amb: hex("CapAmb"),
        no_new_privs: or_empty("NoNewPrivs") == "1",
        seccomp: or_empty("Seccomp").parse().unwrap_or(0),
        sig_ign: hex("SigIgn"),
        sig_cgt: hex("SigCgt"),
    })
}

/// The status of process `pid` (of its main thread).
pub fn read_status(pid: i32) -> Result<Status> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|source| Error::Read {
        pid,
        what: "status",
        source,
    })?;
    parse_status(pid, &text)
}

/// The status of thread `tid` of process `pid`.
pub fn read_task_status(pid: i32, tid: i32) -> Result<Status> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).map_err(|source| Error::Read {
        pid: tid,
        what: "thread status",
        source,
    })?;
    parse_status(tid, &text)
}

/// Whether process `pid` still runs: it exists, is not a zombie, and is not
/// on its way to becoming one (PF_EXITING, which pidfd_getfd, for one,
/// already answers with ESRCH).
pub fn running(pid: i32) -> bool {
    exit_flag(pid) == Some(false) && not_dead(pid)
}

/// Whether process `pid` is on its way out (PF_EXITING) but not a zombie
/// yet: its address space may be gone already.
pub fn exiting(pid: i32) -> bool {
    exit_flag(pid) == Some(true) && not_dead(pid)
}

/// Whether process `pid` has PF_EXITING set; None if it can not be read.
fn exit_flag(pid: i32) -> Option<bool> {
    const PF_EXITING: u64 = 0x4;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_flags(&stat).map(|f| f & PF_EXITING != 0)
}

/// Whether process `pid` exists and is neither a zombie nor dead.
fn not_dead(pid: i32) -> bool {
    read_status(pid).is_ok_and(|s| !matches!(s.state, 'Z' | 'X'))
}

/// The task flags (PF_*) of a /proc/PID/stat line: the ninth field, the
/// seventh after the command name (which may hold spaces and parentheses).
fn stat_flags(stat: &str) -> Option<u64> {
    stat.rsplit_once(')')?.1.split_whitespace().nth(6)?.parse().ok()
}

/// The host PIDs of the tree under `init`, parents before children.
pub fn walk(init: i32) -> Result<Vec<i32>> {
    let mut out = vec![init];
    let mut i = 0;
    while i < out.len() {
        let pid = out[i];
        let tasks = match std::fs::read_dir(format!("/proc/{pid}/task")) {
            Ok(t) => t,
            // A child that ended since its parent's list was read has
            // no children left to walk.
            Err(e) if pid != init && e.kind() == std::io::ErrorKind::NotFound => {
                i += 1;
                continue;
            }
            Err(source) => {
                return Err(Error::Read {
                    pid,
                    what: "task list",
                    source,
                })
            }
        };
        let mut kids = Vec::new();
        for t in tasks.flatten() {
            let text = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            kids.extend(text.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
        }
        kids.sort_unstable();
        out.extend(kids);
        i += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_task_flags_after_any_name() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194564 120 0 0 0";
        assert_eq!(stat_flags(stat), Some(4194564));
        assert!(running(std::process::id() as i32));
        assert_eq!(stat_flags("garbage"), None);
    }

    #[test]
    fn parses_status() {
        let text = "Name:\tbash\nUmask:\t0027\nState:\tS (sleeping)\nTgid:\t900\nPid:\t900\nPPid:\t899\nNStgid:\t900\t5\nNSpid:\t900\t5\nNSpgid:\t898\t1\nNSsid:\t898\t1\n";
        let s = parse_status(900, text).unwrap();
        assert_eq!((s.ns_pid, s.ns_pgid, s.ns_sid, s.host_ppid), (5, 1, 1, 899));
        assert_eq!(s.umask, 0o027);
        assert_eq!(s.state, 'S');
        assert_eq!(s.name, "bash");
        assert_eq!(s.tgid, 900);
        assert!(parse_status(1, "Name:\tx\n").is_err());
    }

    #[test]
    fn parses_credentials() {
        let tree = "State:\tS (sleeping)\nPPid:\t1\nNSpid:\t7\nNSpgid:\t7\nNSsid:\t7\n";
        let text = format!("{tree}Uid:\t65534\t65534\t65534\t65534\nGid:\t65534\t65534\t65534\t65534\nGroups:\t65534 \nCapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\nNoNewPrivs:\t0\nSeccomp:\t0\n");
        let s = parse_status(7, &text).unwrap();
        assert_eq!(s.uids, [65534; 4]);
        assert_eq!(s.gids, [65534; 4]);
        assert_eq!(s.groups, vec![65534]);
        assert_eq!(s.cap_bnd, 0x1ff_ffff_ffff);
        assert_eq!(s.cap_eff, 0);
        assert!(!s.no_new_privs);
        assert_eq!(s.seccomp, 0);
        // Credentials that are not there read as none.
        let bare = parse_status(7, tree).unwrap();
        assert_eq!(
            (bare.uids, bare.groups.len(), bare.cap_bnd, bare.seccomp),
            ([0; 4], 0, 0, 0)
        );
    }

    #[test]
    fn reads_own_status_and_tree() {
        let me = std::process::id() as i32;
        let s = read_status(me).unwrap();
        assert_eq!(s.tgid, me);
        assert_eq!(read_task_status(me, me).unwrap().tgid, me);
        assert_eq!(walk(me).unwrap()[0], me);
    }
}
