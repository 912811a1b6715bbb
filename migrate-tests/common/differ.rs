//! A state differ: what the kernel shows of every process of a container
//! (/proc), captured before a checkpoint and after a restore, compared
//! item by item.
//!
//! Processes are keyed by their PID inside the container (the last field
//! of NSpid), threads by their TID inside it: host PIDs change on restore.
//! Values that name kernel objects by number (pipe and socket inodes,
//! dev:inode of mappings, open file descriptions, namespaces, mount peer
//! groups) are replaced by a canonical index in order of first appearance
//! over the whole container, so that sharing is still compared (two fds on
//! one pipe, a page shared by a parent and its child) while the numbers
//! themselves may change. Host PIDs are translated to container PIDs.
//!
//! What is left out, and why, is said where it is left out; what a restore
//! is known to change (defects not fixed yet) is in [`KNOWN_DIFFERENCES`],
//! and what a workload changes by itself while it runs in [`VOLATILE`].

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{beats, TestRoot};

/// Restore defects the differ finds that are not fixed yet, each as: the
/// comparisons it is allowed in ("restore", which includes a resume, or
/// "migration"), a glob (`*` matches anything) over `COMM (STATE): ITEM
/// [CONTEXT]: BEFORE -> AFTER (DELTA)`, and what it is. COMM (STATE) is
/// the process's name and state letter, as "tree (Z)"; DELTA, for sets of
/// words (VmFlags, signals), what was lost and gained, as "(-nr +sd)". A
/// difference matching one is printed, not failed on. None apply to
/// [`diff_same_host`]: a failed checkpoint must change nothing.
pub const KNOWN_DIFFERENCES: &[(&[&str], &str, &str)] = &[(
    RESTORED,
    "*: sessionid []: * -> *",
    "the audit session id of a process whose login uid is set again is a new one: the kernel numbers sessions \
         itself, and none can be chosen (documented)",
)];

const RESTORED: &[&str] = &["restore", "migration"];

/// What workloads change by themselves while they run, so that no two
/// captures agree on it (found by [`capture_quiet`]'s second capture):
/// globs over `COMM: ITEM [CONTEXT]`, and why.
pub const VOLATILE: &[(&str, &str)] = &[(
    "files: fd * pos [*/shared.txt]",
    "the files workload appends 2 bytes a beat through these fds (that they share one offset is compared as their open file)",
)];

/// What /proc shows of a container.
#[derive(Debug, Clone)]
pub struct State {
    /// Per process, by container PID.
    pub procs: BTreeMap<i32, Proc>,
    /// The container as a whole: its mounts (as PID 1 sees them), its host
    /// and domain name.
    pub container: Vec<Item>,
}

/// One process.
#[derive(Debug, Clone)]
pub struct Proc {
    pub host_pid: i32,
    pub comm: String,
    /// Its state letter (S for running or sleeping, T, t, Z).
    pub state: String,
    pub items: Vec<Item>,
}

/// One compared value.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// What it is: "status SigBlk", "fd 3 pos", "map 7f00a000"...
    pub key: String,
    pub value: String,
    /// What it is about, for messages and for matching: an fd's target, a
    /// mapping's path.
    pub ctx: String,
    /// A host-side value (host PIDs, inode numbers, mount IDs): compared
    /// only between captures of the same processes ([`diff_same_host`]).
    pub host: bool,
    /// The value is a set of words (VmFlags, signal numbers): a difference
    /// also says which were lost and gained ("-nr +sd").
    pub set: bool,
}

/// Captures the state of the container whose PID 1 is host PID `pid1`.
pub fn capture(pid1: i32) -> Result<State> {
    let mut s = capture_raw(pid1)?;
    canonicalize(&mut s);
    Ok(s)
}

/// Captures container `name` of `root` at a quiet point: just after a
/// beat of its log (the workloads nap for 100 ms after each), twice, one
/// beat apart. Processes that are not in both (a shell's short-lived
/// children) are left out; what else differs between the two is a value
/// that changes while the container runs, and is an error until it is
/// excluded ([`VOLATILE`] or a normalization here).
pub fn capture_quiet(root: &TestRoot, name: &str) -> Result<State> {
    let pid1 = root.pid(name)?;
    let mut last_err = None;
    for _ in 0..3 {
        after_beat(root, name)?;
        let start = Instant::now();
        let mut a = capture_raw(pid1)?;
        let took = start.elapsed();
        after_beat(root, name)?;
        let mut b = capture_raw(pid1)?;
        let same = |x: &Proc, y: Option<&Proc>| y.is_some_and(|y| y.host_pid == x.host_pid && y.comm == x.comm);
        let keep: Vec<i32> = a
            .procs
            .iter()
            .filter(|(k, p)| same(p, b.procs.get(k)))
            .map(|(k, _)| *k)
            .collect();
        a.procs.retain(|k, _| keep.contains(k));
        b.procs.retain(|k, _| keep.contains(k));
        canonicalize(&mut a);
        canonicalize(&mut b);
        let diffs: Vec<String> = differences(&a, &b, true).into_iter().map(|d| d.to_string()).collect();
        if diffs.is_empty() {
            if let Ok(dir) = std::env::var("MIGRATE_DIFFER_DUMP") {
                // For a look at what is compared: one file per capture.
                let n = DUMPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let _ = std::fs::write(
                    format!("{dir}/{name}-{}-{n}.txt", std::process::id()),
                    format!("# captured in {took:?}\n{a}"),
                );
            }
            return Ok(a);
        }
        last_err = Some(diffs);
    }
    let diffs = last_err.unwrap_or_default();
    bail!(
        "{} values of {name} change while it runs (exclude them in differ.rs):\n{}",
        diffs.len(),
        shorten(&diffs)
    )
}

static DUMPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut show = |whose: &str, items: &[Item]| -> std::fmt::Result {
            for i in items {
                writeln!(f, "{whose}: {} [{}] = {}", i.key, i.ctx, i.value)?;
            }
            Ok(())
        };
        show("container", &self.container)?;
        for (pid, p) in &self.procs {
            show(&format!("{pid} {} ({})", p.comm, p.state), &p.items)?;
        }
        Ok(())
    }
}

/// Waits for the next beat in `name`'s log, then a little longer (a
/// shell forks its sleep after the echo).
fn after_beat(root: &TestRoot, name: &str) -> Result<()> {
    let last = |r: &TestRoot| beats(&r.log(name)).last().copied().unwrap_or(0);
    let n = last(root);
    let start = Instant::now();
    while last(root) <= n {
        if start.elapsed() > Duration::from_secs(10) {
            bail!("{name} did not beat after beat {n}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(10));
    Ok(())
}

/// Compares a capture before a checkpoint with one after the restore (or
/// a resume): fails naming every process and item that differs with both
/// values, but for [`KNOWN_DIFFERENCES`] (printed).
pub fn diff(before: &State, after: &State) -> Result<()> {
    report(before, after, "restore", false)
}

/// [`diff`] after a live migration (which brings pages in its own way).
pub fn diff_migrated(before: &State, after: &State) -> Result<()> {
    report(before, after, "migration", false)
}

/// [`diff`] for two captures of the same processes (a checkpoint that
/// failed must leave them exactly as they were): host PIDs, inode numbers
/// and mount IDs are compared too.
pub fn diff_same_host(before: &State, after: &State) -> Result<()> {
    report(before, after, "same host", true)
}

fn report(before: &State, after: &State, phase: &str, host: bool) -> Result<()> {
    let mut failed = Vec::new();
    for d in differences(before, after, host) {
        match known(phase, &d) {
            Some(why) => eprintln!("differ: known difference after {phase} ({why}): {d}"),
            None => failed.push(d.to_string()),
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    bail!("{} differences:\n{}", failed.len(), shorten(&failed))
}

fn shorten(lines: &[String]) -> String {
    let mut s = lines.iter().take(40).cloned().collect::<Vec<_>>().join("\n");
    if lines.len() > 40 {
        let _ = write!(s, "\n... and {} more", lines.len() - 40);
    }
    s
}

/// One difference.
struct Difference {
    /// "process 3 (tree)" or "container".
    whose: String,
    /// The process's name and state letter, "tree (Z)".
    comm: String,
    key: String,
    ctx: String,
    before: String,
    after: String,
    /// For a set: " (-lost +gained)".
    delta: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.whose, self.key)?;
        if !self.ctx.is_empty() {
            write!(f, " [{}]", self.ctx)?;
        }
        write!(f, ": {:?} became {:?}{}", self.before, self.after, self.delta)
    }
}

impl Difference {
    /// What the globs of KNOWN_DIFFERENCES match.
    fn subject(&self) -> String {
        format!(
            "{}: {} [{}]: {} -> {}{}",
            self.comm, self.key, self.ctx, self.before, self.after, self.delta
        )
    }
}

/// " (-lost +gained)" between two sets of words.
fn delta(a: &str, b: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.split_whitespace().collect(), b.split_whitespace().collect());
    let lost = a.iter().filter(|w| !b.contains(w)).map(|w| format!("-{w}"));
    let gained = b.iter().filter(|w| !a.contains(w)).map(|w| format!("+{w}"));
    format!(" ({})", lost.chain(gained).collect::<Vec<_>>().join(" "))
}

/// Why a difference is allowed, if it is.
fn known(phase: &str, d: &Difference) -> Option<&'static str> {
    let subject = d.subject();
    KNOWN_DIFFERENCES
        .iter()
        .find(|(when, g, _)| when.contains(&phase) && glob(g, &subject))
        .map(|(_, _, why)| *why)
}

fn volatile(comm: &str, item: &Item) -> bool {
    let subject = format!("{comm}: {} [{}]", item.key, item.ctx);
    VOLATILE.iter().any(|(g, _)| glob(g, &subject))
}

const ABSENT: &str = "<absent>";

fn differences(before: &State, after: &State, host: bool) -> Vec<Difference> {
    let mut out = Vec::new();
    let mut items = |whose: &str, subject: &str, comm: &str, a: &[Item], b: &[Item]| {
        let want = |i: &&Item| (host || !i.host) && !volatile(comm, i);
        let bmap: HashMap<&str, &Item> = b.iter().filter(want).map(|i| (i.key.as_str(), i)).collect();
        let amap: HashMap<&str, &Item> = a.iter().filter(want).map(|i| (i.key.as_str(), i)).collect();
        let mut push = |i: &Item, x: &str, y: &str| {
            out.push(Difference {
                whose: whose.to_string(),
                comm: subject.to_string(),
                key: i.key.clone(),
                ctx: i.ctx.clone(),
                before: x.to_string(),
                after: y.to_string(),
                delta: if i.set && x != ABSENT && y != ABSENT {
                    delta(x, y)
                } else {
                    String::new()
                },
            })
        };
        for i in a.iter().filter(want) {
            match bmap.get(i.key.as_str()) {
                Some(j) if j.value == i.value => {}
                Some(j) => push(i, &i.value, &j.value),
                None => push(i, &i.value, ABSENT),
            }
        }
        for j in b.iter().filter(want) {
            if !amap.contains_key(j.key.as_str()) {
                push(j, ABSENT, &j.value);
            }
        }
    };
    // Mounts the host has too, in either capture, are the host's business.
    let hosts: Vec<&str> = (before.container.iter().chain(&after.container))
        .filter(|i| i.ctx == HOST_MOUNT)
        .map(|i| i.key.as_str())
        .collect();
    let own = |c: &[Item]| -> Vec<Item> {
        let host = |i: &&Item| hosts.contains(&i.key.strip_prefix("host ").unwrap_or(&i.key));
        c.iter().filter(|i| !host(i)).cloned().collect()
    };
    items(
        "container",
        "container",
        "container",
        &own(&before.container),
        &own(&after.container),
    );
    for (pid, p) in &before.procs {
        let whose = format!("process {pid} ({})", p.comm);
        let subject = format!("{} ({})", p.comm, p.state);
        match after.procs.get(pid) {
            Some(q) => items(&whose, &subject, &p.comm, &p.items, &q.items),
            None => items(&whose, &subject, &p.comm, &[proc_item(p)], &[]),
        }
    }
    for (pid, q) in &after.procs {
        if !before.procs.contains_key(pid) {
            let whose = format!("process {pid} ({})", q.comm);
            let subject = format!("{} ({})", q.comm, q.state);
            items(&whose, &subject, &q.comm, &[], &[proc_item(q)]);
        }
    }
    out
}

/// A whole process as one item, for a process on one side only.
fn proc_item(p: &Proc) -> Item {
    item("process", &p.comm, "")
}

/// `*` matches any run of characters; all else is literal.
fn glob(pattern: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pattern.chars().collect(), s.chars().collect());
    let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
    while si < s.len() {
        if pi < p.len() && p[pi] != '*' && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

fn item(key: &str, value: &str, ctx: &str) -> Item {
    Item {
        key: key.to_string(),
        value: value.to_string(),
        ctx: ctx.to_string(),
        host: false,
        set: false,
    }
}

fn set_item(key: &str, value: &str, ctx: &str) -> Item {
    Item {
        set: true,
        ..item(key, value, ctx)
    }
}

fn host_item(key: &str, value: &str) -> Item {
    Item {
        key: format!("host {key}"),
        value: value.to_string(),
        ctx: String::new(),
        host: true,
        set: false,
    }
}

// Object identities are written as tokens, TOKEN_START kind SPACE id
// TOKEN_END, then replaced by "kind#N" in order of first appearance once
// the processes to compare are known.
const TOKEN_START: char = '\u{1}';
const TOKEN_END: char = '\u{2}';

fn token(kind: &str, id: &str) -> String {
    format!("{TOKEN_START}{kind} {id}{TOKEN_END}")
}

/// Replaces every token by its kind and its index in order of first
/// appearance (per kind), over the container, then its processes in
/// container PID order.
fn canonicalize(s: &mut State) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut per_kind: HashMap<String, usize> = HashMap::new();
    let mut fix = |v: &mut String| {
        if !v.contains(TOKEN_START) {
            return;
        }
        let mut out = String::new();
        let mut rest = v.as_str();
        while let Some(i) = rest.find(TOKEN_START) {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            let j = after.find(TOKEN_END).unwrap_or(after.len());
            let tok = &after[..j];
            let kind = tok.split(' ').next().unwrap_or_default().to_string();
            let n = *seen.entry(tok.to_string()).or_insert_with(|| {
                let c = per_kind.entry(kind.clone()).or_default();
                *c += 1;
                *c - 1
            });
            let _ = write!(out, "{kind}#{n}");
            rest = after.get(j + 1..).unwrap_or_default();
        }
        out.push_str(rest);
        *v = out;
    };
    for i in &mut s.container {
        fix(&mut i.value);
        fix(&mut i.ctx);
    }
    for p in s.procs.values_mut() {
        for i in &mut p.items {
            fix(&mut i.value);
            fix(&mut i.ctx);
        }
    }
}

/// Reads a /proc file; an error is a value too (a zombie has no cwd).
fn read(path: &str) -> String {
    match std::fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => format!("<{}>", e.kind()),
    }
}

fn readlink(path: &str) -> String {
    match std::fs::read_link(path) {
        Ok(p) => p.to_string_lossy().into_owned(),
        Err(e) => format!("<{}>", e.kind()),
    }
}

/// `Key:\tvalue` lines.
fn fields(text: &str) -> Vec<(&str, &str)> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect()
}

/// The last (innermost namespace's) number of an NSpid-style value.
fn last_field(v: &str) -> &str {
    v.split_whitespace().last().unwrap_or_default()
}

/// Host PIDs and TIDs of the container, to container ones.
struct Pids(HashMap<i32, i32>);

impl Pids {
    /// A host PID as the container sees it; 0 stays 0 (none), a PID outside
    /// the container (the PPid of PID 1) is "outside".
    fn show(&self, host: &str) -> String {
        match host.trim().parse::<i32>() {
            Ok(p) if p <= 0 => p.to_string(),
            Ok(p) => self.0.get(&p).map_or_else(|| "outside".to_string(), |c| c.to_string()),
            Err(_) => host.to_string(),
        }
    }
}

/// The processes of the tree under `pid1`, parents first.
fn tree(pid1: i32) -> Vec<i32> {
    let mut pids = vec![pid1];
    let mut i = 0;
    while i < pids.len() {
        let p = pids[i];
        let mut tasks: Vec<i32> = std::fs::read_dir(format!("/proc/{p}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
            .collect();
        tasks.sort();
        for t in tasks {
            for c in read(&format!("/proc/{p}/task/{t}/children")).split_whitespace() {
                if let Ok(c) = c.parse::<i32>() {
                    if !pids.contains(&c) {
                        pids.push(c);
                    }
                }
            }
        }
        i += 1;
    }
    pids
}

/// Tasks (threads) of `pid`, with their container TIDs.
fn tasks(pid: i32) -> Vec<(i32, i32)> {
    let mut out: Vec<(i32, i32)> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .filter_map(|t: i32| {
            let status = read(&format!("/proc/{pid}/task/{t}/status"));
            let ns = fields(&status).into_iter().find(|(k, _)| *k == "NSpid")?.1.to_string();
            Some((t, last_field(&ns).parse().ok()?))
        })
        .collect();
    out.sort_by_key(|(_, c)| *c);
    out
}

fn capture_raw(pid1: i32) -> Result<State> {
    let hosts = tree(pid1);
    let mut pids = HashMap::new();
    let mut order = Vec::new();
    for &h in &hosts {
        let t = tasks(h);
        let Some(&(_, c)) = t.iter().find(|(tid, _)| *tid == h) else {
            continue; // gone meanwhile
        };
        pids.extend(t.iter().copied());
        order.push((c, h, t));
    }
    let pids = Pids(pids);
    order.sort_by_key(|(c, _, _)| *c);
    let mut files = Files::default();
    let mut procs = BTreeMap::new();
    let cgroup1 = read(&format!("/proc/{pid1}/cgroup"));
    for (c, h, t) in &order {
        let p = capture_proc(*h, t, &pids, &mut files, &cgroup1)
            .with_context(|| format!("capture process {c} (host {h})"))?;
        procs.insert(*c, p);
    }
    let container = capture_container(pid1)?;
    Ok(State { procs, container })
}

/// Open file descriptions seen so far: for each, the first fd of it seen
/// (host pid, fd), in kcmp's order of files, to look new fds up with a
/// binary search (a process may hold thousands).
#[derive(Default)]
struct Files {
    reps: Vec<(i32, i32)>,
}

impl Files {
    /// A token naming the open file description of `pid`'s fd `fd`.
    fn token(&mut self, pid: i32, fd: i32) -> String {
        const KCMP_FILE: libc::c_long = 0;
        let found = self.reps.binary_search_by(|&(rp, rfd)| {
            // SAFETY: kcmp only compares two tasks' fds.
            match unsafe { libc::syscall(libc::SYS_kcmp, rp, pid, KCMP_FILE, rfd, fd) } {
                0 => std::cmp::Ordering::Equal,
                1 => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            }
        });
        match found {
            Ok(i) => token("file", &format!("{}:{}", self.reps[i].0, self.reps[i].1)),
            Err(at) => {
                self.reps.insert(at, (pid, fd));
                token("file", &format!("{pid}:{fd}"))
            }
        }
    }
}

/// A token naming an inode: (device as major:minor, inode number).
fn obj_token(major: u64, minor: u64, ino: u64) -> String {
    token("obj", &format!("{major}:{minor}:{ino}"))
}

// /proc/PID/status lines that are not compared.
const STATUS_SKIP: &[(&str, &str)] = &[
    // Memory accounting: resident and peak sizes, page tables, swap
    // follow what was touched, which a restore does not reproduce.
    ("VmPeak", "memory accounting"),
    ("VmSize", "memory accounting (mappings are compared one by one)"),
    ("VmRSS", "memory accounting"),
    ("VmHWM", "memory accounting"),
    ("RssAnon", "memory accounting"),
    ("RssFile", "memory accounting"),
    ("RssShmem", "memory accounting"),
    ("VmData", "memory accounting (mappings are compared one by one)"),
    ("VmStk", "memory accounting (mappings are compared one by one)"),
    ("VmPTE", "memory accounting"),
    ("VmSwap", "memory accounting"),
    ("HugetlbPages", "memory accounting"),
    ("voluntary_ctxt_switches", "a counter"),
    ("nonvoluntary_ctxt_switches", "a counter"),
    (
        "SigQ",
        "counts the signals queued for the whole user, not the process's",
    ),
    ("Pid", "a host PID (the key is NSpid's last field)"),
    ("Tgid", "a host PID"),
    ("NStgid", "the key (NSpid) says it"),
    ("NSpid", "the key"),
    ("Ngid", "a host PID (NUMA balancing group)"),
    ("TracerPid", "compared translated"),
    ("PPid", "compared translated"),
    ("NSpgid", "compared as its last field"),
    ("NSsid", "compared as its last field"),
    ("Cpus_allowed", "the host's CPUs"),
    ("Cpus_allowed_list", "the host's CPUs"),
    ("Mems_allowed", "the host's memory nodes"),
    ("Mems_allowed_list", "the host's memory nodes"),
    ("Kthread", "never a kernel thread"),
    // The size the fd table was allocated to: it grows when higher fds
    // are used (as the restorer's own, for a while) and never shrinks
    // (seen: 64 became 256). The fds themselves are compared one by one.
    ("FDSize", "allocation size of the fd table"),
];

/// A hex signal mask as the signals it holds: "10 14", or "none".
fn signals(mask: &str) -> String {
    let Ok(m) = u64::from_str_radix(mask, 16) else {
        return mask.to_string();
    };
    let v: Vec<String> = (0..64)
        .filter(|b| m & (1 << b) != 0)
        .map(|b| (b + 1).to_string())
        .collect();
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join(" ")
    }
}

/// Status lines as items: `prefix` + key.
fn status_items(prefix: &str, status: &str, pids: &Pids, out: &mut Vec<Item>) {
    for (k, v) in fields(status) {
        match k {
            "State" => {
                // Running, sleeping or in disk sleep is not state a
                // checkpoint keeps; stopped (T, t) and zombie (Z) are.
                let s = v.chars().next().unwrap_or('?');
                let s = if matches!(s, 'R' | 'D') { 'S' } else { s };
                out.push(item(&format!("{prefix}state"), &s.to_string(), ""));
            }
            "PPid" | "TracerPid" => {
                out.push(item(&format!("{prefix}{k}"), &pids.show(v), ""));
                out.push(host_item(&format!("{prefix}{k}"), v));
            }
            "Pid" => out.push(host_item(&format!("{prefix}{k}"), v)),
            "NSpgid" | "NSsid" => out.push(item(&format!("{prefix}{k}"), last_field(v), "")),
            // Masks as the signal numbers they hold.
            "SigPnd" | "ShdPnd" | "SigBlk" => out.push(set_item(&format!("{prefix}status {k}"), &signals(v), "")),
            // A disposition per signal: ignored or caught (default is left
            // out), so that a difference names the signal.
            "SigIgn" | "SigCgt" => {
                let how = if k == "SigIgn" { "ignored" } else { "caught" };
                for sig in signals(v).split(' ').filter(|s| *s != "none") {
                    out.push(item(&format!("{prefix}signal {sig}"), how, ""));
                }
            }
            _ if STATUS_SKIP.iter().any(|(s, _)| *s == k) => {}
            _ => out.push(item(&format!("{prefix}status {k}"), v, "")),
        }
    }
}

// PF_* bits of /proc/PID/stat's flags that are not compared (found by
// running the workloads; the others are compared, PF_EXITING of a zombie,
// PF_RANDOMIZE...).
const PF_SKIP: &[(u64, &str)] = &[
    // Restored tasks are forked copies that never exec, whether or not the
    // originals did (seen: PID 1 of every workload gains it).
    (0x40, "PF_FORKNOEXEC"),
    // "Used super-user privileges" (for process accounting): set by what
    // the restorer does as root in the task (seen: forked children, which
    // had not used any, gain it).
    (0x100, "PF_SUPERPRIV"),
    // Set for the time of an allocation or I/O only.
    (0x800, "PF_MEMALLOC: transient"),
    (0x40000, "PF_MEMALLOC_NOFS: transient"),
    (0x80000, "PF_MEMALLOC_NOIO: transient"),
    (0x100000, "PF_LOCAL_THROTTLE: transient"),
    (0x10000000, "PF_MEMALLOC_PIN: transient"),
    (0x20000000, "PF_BLOCK_TS: transient"),
];

const PF_NAMES: &[(u64, &str)] = &[
    (0x1, "VCPU"),
    (0x2, "IDLE"),
    (0x4, "EXITING"),
    (0x8, "POSTCOREDUMP"),
    (0x10, "IO_WORKER"),
    (0x20, "WQ_WORKER"),
    (0x40, "FORKNOEXEC"),
    (0x80, "MCE_PROCESS"),
    (0x100, "SUPERPRIV"),
    (0x200, "DUMPCORE"),
    (0x400, "SIGNALED"),
    (0x800, "MEMALLOC"),
    (0x1000, "NPROC_EXCEEDED"),
    (0x2000, "USED_MATH"),
    (0x4000, "USER_WORKER"),
    (0x8000, "NOFREEZE"),
    (0x200000, "KTHREAD"),
    (0x400000, "RANDOMIZE"),
    (0x4000000, "NO_SETAFFINITY"),
    (0x8000000, "MCE_EARLY"),
];

fn pf_flags(v: &str) -> String {
    let Ok(mut f) = v.parse::<u64>() else {
        return v.to_string();
    };
    for (bit, _) in PF_SKIP {
        f &= !bit;
    }
    let mut names: Vec<String> = PF_NAMES
        .iter()
        .filter(|(b, _)| f & b != 0)
        .map(|(_, n)| n.to_string())
        .collect();
    let rest = PF_NAMES.iter().fold(f, |f, (b, _)| f & !b);
    if rest != 0 {
        names.push(format!("{rest:#x}"));
    }
    names.join("|")
}

/// Fields of /proc/PID/stat (after the comm), numbered from 3 as in
/// proc(5) (pid and comm being 1 and 2), compared, by name.
const STAT_FIELDS: &[(usize, &str)] = &[
    // pgrp and session are compared as NSpgid and NSsid (container
    // PIDs); ppid as PPid.
    (7, "tty_nr"),
    (9, "flags"),
    (18, "priority"),
    (19, "nice"),
    (20, "num_threads"),
    // The layout of the address space (prctl PR_SET_MM).
    (26, "startcode"),
    (27, "endcode"),
    (28, "startstack"),
    (38, "exit_signal"),
    (40, "rt_priority"),
    (41, "policy"),
    (45, "start_data"),
    (46, "end_data"),
    (47, "start_brk"),
    (48, "arg_start"),
    (49, "arg_end"),
    (50, "env_start"),
    (51, "env_end"),
    // A zombie's exit status.
    (52, "exit_code"),
];

/// Per-thread fields of stat.
const THREAD_STAT_FIELDS: &[(usize, &str)] = &[
    (9, "flags"),
    (18, "priority"),
    (19, "nice"),
    (40, "rt_priority"),
    (41, "policy"),
];

fn stat_items(prefix: &str, stat: &str, which: &[(usize, &str)], pids: &Pids, out: &mut Vec<Item>) {
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        out.push(item(&format!("{prefix}stat"), stat, ""));
        return;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| f.get(n - 3).copied().unwrap_or("<absent>");
    for &(n, name) in which {
        let v = if name == "flags" {
            pf_flags(field(n))
        } else {
            field(n).to_string()
        };
        out.push(item(&format!("{prefix}stat {name}"), &v, ""));
    }
    if which.len() > THREAD_STAT_FIELDS.len() {
        // The foreground process group of the terminal, if any.
        out.push(item(&format!("{prefix}stat tpgid"), &pids.show(field(8)), ""));
    }
}

fn capture_proc(pid: i32, tasks: &[(i32, i32)], pids: &Pids, files: &mut Files, cgroup1: &str) -> Result<Proc> {
    let base = format!("/proc/{pid}");
    let mut items = Vec::new();
    let status = read(&format!("{base}/status"));
    let comm = fields(&status)
        .into_iter()
        .find(|(k, _)| *k == "Name")
        .map(|(_, v)| v.to_string())
        .unwrap_or_default();
    status_items("", &status, pids, &mut items);
    stat_items("", &read(&format!("{base}/stat")), STAT_FIELDS, pids, &mut items);
    for f in [
        "comm",
        "oom_score_adj",
        "loginuid",
        "sessionid",
        "personality",
        "timerslack_ns",
        "coredump_filter",
    ] {
        items.push(item(f, read(&format!("{base}/{f}")).trim_end(), ""));
    }
    for f in ["cmdline", "environ"] {
        let v: Vec<String> = read(&format!("{base}/{f}"))
            .split_terminator('\0')
            .map(String::from)
            .collect();
        items.push(item(f, &format!("{v:?}"), ""));
    }
    for l in read(&format!("{base}/limits")).lines().skip(1) {
        // "Max open files            1024                 1024                 files"
        let name = l.get(..26).unwrap_or(l).trim();
        let rest: Vec<&str> = l.get(26..).unwrap_or_default().split_whitespace().collect();
        items.push(item(&format!("limit {name}"), &rest.join(" "), ""));
    }
    for f in ["cwd", "root", "exe"] {
        items.push(item(f, &readlink(&format!("{base}/{f}")), ""));
    }
    for ns in [
        "cgroup",
        "ipc",
        "mnt",
        "net",
        "pid",
        "pid_for_children",
        "time",
        "time_for_children",
        "user",
        "uts",
    ] {
        let l = readlink(&format!("{base}/ns/{ns}"));
        items.push(item(&format!("ns {ns}"), &token("ns", &l), ""));
        items.push(host_item(&format!("ns {ns}"), &l));
    }
    // The cgroup, relative to the container's (PID 1's): the host's path
    // to it is another one on another state root.
    // "ID:CONTROLLERS:PATH" per hierarchy.
    let cg = read(&format!("{base}/cgroup"));
    for l in cg.lines() {
        let (h, path) = l.rsplit_once(':').unwrap_or((l, ""));
        let top = cgroup1
            .lines()
            .find_map(|t| t.rsplit_once(':').filter(|(th, _)| *th == h).map(|(_, p)| p));
        let rel = top
            .and_then(|t| path.strip_prefix(t))
            .map_or_else(|| path.to_string(), |r| format!(".{r}"));
        items.push(item(&format!("cgroup {h}"), &rel, ""));
        items.push(host_item(&format!("cgroup {h}"), path));
    }
    // The scheduling policy, priority and time slice of each thread, and
    // the NUMA memory policies of the mappings (a mapping without its own
    // shows the process's), but the default one.
    for &(tid, ctid) in tasks {
        for l in read(&format!("{base}/task/{tid}/sched")).lines() {
            if let Some((k, v)) = l.split_once(':').map(|(k, v)| (k.trim(), v.trim())) {
                if ["policy", "prio", "se.slice"].contains(&k) {
                    items.push(item(&format!("thread {ctid} sched {k}"), v, ""));
                }
            }
        }
    }
    // (As a set: a migration may split a mapping in pieces.)
    let mut policies: Vec<&str> = Vec::new();
    let numa = read(&format!("{base}/numa_maps"));
    for policy in numa.lines().filter_map(|l| l.split_whitespace().nth(1)) {
        if !policies.contains(&policy) {
            policies.push(policy);
        }
    }
    policies.sort_unstable();
    items.push(item("numa policies", &policies.join(" "), ""));
    auxv_items(&base, &mut items);
    timers_items(&base, pids, &mut items);
    fd_items(pid, pids, files, &mut items);
    map_items(&base, &mut items);
    for &(tid, ctid) in tasks {
        if tid == pid {
            continue; // the main thread: its values are the process's
        }
        let tb = format!("{base}/task/{tid}");
        let prefix = format!("thread {ctid} ");
        items.push(item(
            &format!("{prefix}comm"),
            read(&format!("{tb}/comm")).trim_end(),
            "",
        ));
        let st = read(&format!("{tb}/status"));
        let mut t = Vec::new();
        status_items(&prefix, &st, pids, &mut t);
        // Only what is the thread's own: its state, pending and blocked
        // signals (dispositions are the process's), credentials,
        // seccomp, speculation controls (the rest is the process's).
        t.retain(|i| {
            [
                "state",
                "status SigPnd",
                "status SigBlk",
                "status Cap",
                "status Uid",
                "status Gid",
                "status Groups",
                "status NoNewPrivs",
                "status Seccomp",
                "status Speculation",
                "status untag_mask",
                "status x86_",
            ]
            .iter()
            .any(|k| i.key.strip_prefix(&prefix).is_some_and(|r| r.starts_with(k)))
        });
        items.extend(t);
        stat_items(
            &prefix,
            &read(&format!("{tb}/stat")),
            THREAD_STAT_FIELDS,
            pids,
            &mut items,
        );
    }
    let state = items
        .iter()
        .find(|i| i.key == "state")
        .map(|i| i.value.clone())
        .unwrap_or_default();
    Ok(Proc {
        host_pid: pid,
        comm,
        state,
        items,
    })
}

/// The auxiliary vector the kernel keeps for the process (what
/// /proc/PID/auxv shows, as the process's own copy on its stack is
/// memory, compared by the workloads).
fn auxv_items(base: &str, out: &mut Vec<Item>) {
    let Ok(b) = std::fs::read(format!("{base}/auxv")) else {
        return;
    };
    let mut v = Vec::new();
    for pair in b.chunks_exact(16) {
        let k = u64::from_ne_bytes(pair[..8].try_into().unwrap());
        let x = u64::from_ne_bytes(pair[8..].try_into().unwrap());
        if k == 0 {
            break;
        }
        v.push(format!("{k}={x:#x}"));
    }
    out.push(item("auxv", &v.join(" "), ""));
}

/// POSIX timers (/proc/PID/timers): id, signal, notification, clock.
fn timers_items(base: &str, pids: &Pids, out: &mut Vec<Item>) {
    let text = read(&format!("{base}/timers"));
    let mut cur = Vec::new();
    let mut id = String::new();
    let mut flush = |id: &str, cur: &mut Vec<String>| {
        if !id.is_empty() {
            out.push(item(&format!("timer {id}"), &cur.join(" "), ""));
        }
        cur.clear();
    };
    for (k, v) in fields(&text) {
        match k {
            "ID" => {
                flush(&id, &mut cur);
                id = v.to_string();
            }
            // "signal/pid.1234": the PID as the container sees it.
            "notify" => {
                let v = match v.rsplit_once('.') {
                    Some((how, p)) => format!("{how}.{}", pids.show(p)),
                    None => v.to_string(),
                };
                cur.push(format!("notify {v}"));
            }
            _ => cur.push(format!("{k} {v}")),
        }
    }
    flush(&id, &mut cur);
}

fn fd_items(pid: i32, pids: &Pids, files: &mut Files, out: &mut Vec<Item>) {
    let mut fds: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect();
    fds.sort();
    for fd in fds {
        let path = format!("/proc/{pid}/fd/{fd}");
        let link = readlink(&path);
        let Ok(md) = std::fs::metadata(&path) else {
            continue; // closed meanwhile
        };
        // Pipes, sockets and anon inodes are named by inode number: an
        // index in order of first appearance instead.
        let is_log = link.ends_with("/log");
        let target = if is_log {
            // The container's log: its path is under the state root,
            // another one after a migration.
            "<container log>".to_string()
        } else if let Some((kind, _)) = link
            .strip_suffix(']')
            .and_then(|l| l.split_once(":["))
            .filter(|(_, n)| n.bytes().all(|b| b.is_ascii_digit()))
        {
            format!(
                "{kind}:[{}]",
                obj_token(libc::major(md.dev()) as u64, libc::minor(md.dev()) as u64, md.ino())
            )
        } else {
            link.clone()
        };
        let ctx = target.clone();
        let key = format!("fd {fd}");
        out.push(item(&key, &target, &ctx));
        out.push(item(
            &format!("{key} object"),
            &obj_token(libc::major(md.dev()) as u64, libc::minor(md.dev()) as u64, md.ino()),
            &ctx,
        ));
        out.push(item(&format!("{key} open file"), &files.token(pid, fd), &ctx));
        out.push(host_item(&format!("{key} link"), &link));
        let info = read(&format!("/proc/{pid}/fdinfo/{fd}"));
        let mut epoll: Vec<(String, String)> = Vec::new();
        let mut locks = 0;
        let mut wds = 0;
        for line in info.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim();
            match k {
                // The log's position moves as the container writes.
                "pos" if is_log => {}
                // A new mount namespace: new mount IDs.
                "mnt_id" => out.push(host_item(&format!("{key} mnt_id"), v)),
                // Inode numbers: the object is compared as an index.
                "ino" => out.push(host_item(&format!("{key} ino"), v)),
                // A global ID (ida) given when the eventfd is made.
                "eventfd-id" => {}
                // Expirations not read yet, and the time to the next: they
                // follow the clock.
                "ticks" | "it_value" => {}
                "tfd" => {
                    // epoll: "tfd:        5 events:       19 data: ... pos:0 ino:.. sdev:.."
                    // The target's fd, events and data; its pos, inode and
                    // device are the target file's (compared as its fd).
                    // Listed in the order of the files' addresses: keyed
                    // by the target fd instead.
                    let mut w = line.split_whitespace();
                    let (mut t, mut kept) = (String::new(), Vec::new());
                    while let Some(x) = w.next() {
                        match x {
                            "tfd:" => t = w.next().unwrap_or_default().to_string(),
                            "events:" | "data:" => kept.push(format!("{x} {}", w.next().unwrap_or_default())),
                            _ => {}
                        }
                    }
                    epoll.push((t, kept.join(" ")));
                }
                "inotify wd" | "fanotify ino" | "fanotify flags" => {
                    // "inotify wd:1 ino:1a2b sdev:800001 mask:.. ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:..."
                    // The watched inode as an object index; the file handle
                    // encodes the same inode.
                    let mut kv: BTreeMap<&str, &str> = BTreeMap::new();
                    for t in line.split_whitespace() {
                        if let Some((a, b)) = t.split_once(':') {
                            kv.insert(a, b);
                        }
                    }
                    let dev = u64::from_str_radix(kv.get("sdev").unwrap_or(&"0"), 16).unwrap_or(0);
                    let ino = u64::from_str_radix(kv.get("ino").unwrap_or(&"0"), 16).unwrap_or(0);
                    let watched = obj_token(dev >> 20, dev & 0xfffff, ino);
                    let rest: Vec<String> = kv
                        .iter()
                        .filter(|(a, _)| !matches!(**a, "ino" | "sdev" | "fhandle-bytes" | "fhandle-type" | "f_handle"))
                        .map(|(a, b)| format!("{a}:{b}"))
                        .collect();
                    out.push(item(
                        &format!("{key} watch {wds}"),
                        &format!("{} on {watched}", rest.join(" ")),
                        &ctx,
                    ));
                    wds += 1;
                }
                "lock" => {
                    // "1: POSIX  ADVISORY  WRITE 1234 08:01:5678 10 19":
                    // the owner's PID as the container sees it, the inode as
                    // an object index.
                    let mut t: Vec<String> = v.split_whitespace().map(String::from).collect();
                    if t.len() >= 6 {
                        t[4] = pids.show(&t[4]);
                        let d: Vec<&str> = t[5].split(':').collect();
                        if d.len() == 3 {
                            let maj = u64::from_str_radix(d[0], 16).unwrap_or(0);
                            let min = u64::from_str_radix(d[1], 16).unwrap_or(0);
                            t[5] = obj_token(maj, min, d[2].parse().unwrap_or(0));
                        }
                    }
                    out.push(item(&format!("{key} lock {locks}"), &t.join(" "), &ctx));
                    locks += 1;
                }
                // pidfd: the PID it refers to, as the container sees it.
                "Pid" | "NSpid" => out.push(item(&format!("{key} {k}"), &pids.show(last_field(v)), &ctx)),
                _ => out.push(item(&format!("{key} {k}"), v, &ctx)),
            }
        }
        epoll.sort();
        let mut last = String::new();
        let mut n = 0;
        for (t, v) in epoll {
            // The same fd number twice: files registered by two processes.
            n = if t == last { n + 1 } else { 0 };
            let k = if n == 0 {
                format!("{key} epoll tfd {t}")
            } else {
                format!("{key} epoll tfd {t} ({n})")
            };
            out.push(item(&k, &v, &ctx));
            last = t;
        }
    }
}

/// /proc/PID/smaps: each mapping's range, protection, offset, backing
/// object (an index: inode numbers of anonymous shared memory change) and
/// path, and its VmFlags.
fn map_items(base: &str, out: &mut Vec<Item>) {
    let smaps = read(&format!("{base}/smaps"));
    let mut cur: Option<(String, String, String)> = None;
    let mut flush = |cur: &mut Option<(String, String, String)>, flags: &str| {
        if let Some((key, v, ctx)) = cur.take() {
            out.push(item(&key, &v, &ctx));
            out.push(set_item(&format!("{key} flags"), flags, &ctx));
        }
    };
    for line in smaps.lines() {
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            let flags: Vec<&str> = flags
                .split_whitespace()
                // VM_ACCOUNT: whether the mapping is charged to the commit
                // limit, which follows how it was made (a RELRO page mapped
                // writable, then made read-only, keeps it; the restore maps
                // it read-only at once). Accounting, not state.
                .filter(|f| *f != "ac")
                .collect();
            flush(&mut cur, &flags.join(" "));
            continue;
        }
        let first = line.split_whitespace().next().unwrap_or_default();
        let Some((start, end)) = first.split_once('-') else {
            continue;
        };
        if u64::from_str_radix(start, 16).is_err() || u64::from_str_radix(end, 16).is_err() {
            continue;
        }
        flush(&mut cur, "?");
        // start-end perms offset dev inode path (the path may hold spaces)
        let mut w = line.splitn(6, char::is_whitespace);
        let range = w.next().unwrap_or_default();
        let perms = w.next().unwrap_or_default();
        let offset = w.next().unwrap_or_default();
        let dev = w.next().unwrap_or_default();
        let ino = w.next().unwrap_or_default();
        let path = w.next().unwrap_or_default().trim().to_string();
        let object = match (dev.split_once(':'), ino.parse::<u64>()) {
            (_, Ok(0)) => "-".to_string(),
            (Some((a, b)), Ok(i)) => obj_token(
                u64::from_str_radix(a, 16).unwrap_or(0),
                u64::from_str_radix(b, 16).unwrap_or(0),
                i,
            ),
            _ => format!("{dev} {ino}"),
        };
        let start = u64::from_str_radix(start, 16).unwrap_or(0);
        cur = Some((
            format!("map {start:x}"),
            format!("{range} {perms} {offset} {object} {path}"),
            path,
        ));
    }
    flush(&mut cur, "?");
}

/// The context of a mount of the container that the host has too.
const HOST_MOUNT: &str = "the host's";

/// What a mountinfo line says of a mount but its IDs, device and
/// propagation: mount point, root, options, type, source, super options.
fn mount_identity(line: &str) -> Option<String> {
    let (head, tail) = line.split_once(" - ")?;
    let h: Vec<&str> = head.split(' ').collect();
    (h.len() >= 6).then(|| format!("{} {} {} - {tail}", h[4], h[3], h[5]))
}

/// The container as a whole: mounts (as PID 1 sees them), host and domain
/// name (read in its UTS namespace, by a thread that enters it).
/// What `read` returns on a thread that entered namespace `ns` of process
/// `pid` (only that thread enters it, and it ends there).
fn in_namespace<T: Send>(
    pid: i32,
    ns: &str,
    kind: nix::sched::CloneFlags,
    read: impl FnOnce() -> Result<T> + Send,
) -> Result<T> {
    let f = std::fs::File::open(format!("/proc/{pid}/ns/{ns}"))?;
    std::thread::scope(|s| {
        s.spawn(move || {
            nix::sched::setns(f, kind)?;
            read()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the {ns} namespace's thread panicked"))?
    })
}

fn capture_container(pid1: i32) -> Result<Vec<Item>> {
    let mut out = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let host: std::collections::HashSet<String> = read("/proc/self/mountinfo")
        .lines()
        .filter_map(mount_identity)
        .collect();
    for line in read(&format!("/proc/{pid1}/mountinfo")).lines() {
        // ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER
        let (head, tail) = line.split_once(" - ").unwrap_or((line, ""));
        let h: Vec<&str> = head.split(' ').collect();
        if h.len() < 6 {
            out.push(item("mount ?", line, ""));
            continue;
        }
        // Mount IDs and devices are new in a new mount namespace; peer
        // groups are compared as indexes (which mounts share one).
        let optional: Vec<String> = h[6..]
            .iter()
            .map(|o| match o.split_once(':') {
                Some((k, n)) => format!("{k}:{}", token("peer", n)),
                None => o.to_string(),
            })
            .collect();
        let point = h[4];
        let n = seen.entry(point.to_string()).or_default();
        *n += 1;
        let key = if *n == 1 {
            format!("mount {point}")
        } else {
            format!("mount {point} ({n})")
        };
        // A container without a root of its own starts with a copy of the
        // host's mounts, and a restore copies them again: what the host
        // mounted or unmounted meanwhile (other tests' tmpfs and netns
        // mounts) differs. A mount the host has too is marked so, and left
        // out when either capture marks it.
        let ctx = if mount_identity(line).is_some_and(|m| host.contains(&m)) {
            HOST_MOUNT
        } else {
            point
        };
        out.push(item(
            &key,
            &format!("root {} {} {} - {tail}", h[3], h[5], optional.join(" ")),
            ctx,
        ));
        out.push(host_item(&key, &format!("{} {} {}", h[0], h[1], h[2])));
    }
    let names = in_namespace(pid1, "uts", nix::sched::CloneFlags::CLONE_NEWUTS, || {
        let u = nix::sys::utsname::uname()?;
        Ok((
            u.nodename().to_string_lossy().into_owned(),
            u.domainname().to_string_lossy().into_owned(),
        ))
    })?;
    out.push(item("hostname", &names.0, ""));
    out.push(item("domainname", &names.1, ""));
    // The IPC namespace's limits, and its SysV objects as /proc/sysvipc
    // shows them, but what a restore can not set: the PIDs of the last
    // sender, receiver or attacher, the times, and how many of a
    // segment's pages are in memory.
    let limits = in_namespace(pid1, "ipc", nix::sched::CloneFlags::CLONE_NEWIPC, || {
        let mut limits = Vec::new();
        const UNSET: [&str; 12] = [
            "cpid", "lpid", "lspid", "lrpid", "atime", "dtime", "ctime", "stime", "rtime", "otime", "rss", "swap",
        ];
        for file in ["msg", "sem", "shm"] {
            let text = read(&format!("/proc/sysvipc/{file}"));
            let mut lines = text.lines();
            let names: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
            for line in lines {
                let cols: Vec<(&&str, &str)> = names.iter().zip(line.split_whitespace()).collect();
                let id = cols.get(1).map_or("?", |c| c.1);
                let kept: Vec<String> = cols
                    .iter()
                    .filter(|(n, _)| !UNSET.contains(n))
                    .map(|(n, v)| format!("{n}={v}"))
                    .collect();
                limits.push((format!("/proc/sysvipc/{file} {id}"), kept.join(" ")));
            }
        }
        for dir in ["/proc/sys/kernel", "/proc/sys/fs/mqueue"] {
            for e in std::fs::read_dir(dir)? {
                let path = e?.path();
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                let ipc = ["msg", "sem", "shm"].iter().any(|p| name.starts_with(p));
                if (ipc || dir.ends_with("mqueue")) && path.is_file() {
                    limits.push((path.display().to_string(), read(&path.display().to_string())));
                }
            }
        }
        Ok(limits)
    })?;
    for (path, value) in limits {
        out.push(item(&path, &value.split_whitespace().collect::<Vec<_>>().join(" "), ""));
    }
    // The network namespace's own sysctls (but per interface, not carried).
    let sysctls = in_namespace(pid1, "net", nix::sched::CloneFlags::CLONE_NEWNET, || {
        use std::os::unix::fs::PermissionsExt;
        let mut out = Vec::new();
        let mut dirs = vec![std::path::PathBuf::from("/proc/sys/net")];
        while let Some(dir) = dirs.pop() {
            for e in std::fs::read_dir(&dir)?.flatten() {
                let (path, meta) = (e.path(), e.metadata()?);
                let per_interface = ["conf", "neigh"].iter().any(|d| path.ends_with(d));
                if meta.is_dir() && !per_interface {
                    dirs.push(path);
                } else if meta.is_file() && meta.permissions().mode() & 0o600 == 0o600 {
                    if let Ok(v) = std::fs::read_to_string(&path) {
                        out.push((path.display().to_string(), v));
                    }
                }
            }
        }
        Ok(out)
    })?;
    for (path, value) in sysctls {
        out.push(item(&path, &value.split_whitespace().collect::<Vec<_>>().join(" "), ""));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs() {
        assert!(glob("a*c", "abbbc"));
        assert!(glob("*", ""));
        assert!(glob("kinds: fd * pos [*shared.txt]", "kinds: fd 3 pos [/x/shared.txt]"));
        assert!(!glob("a*c", "abd"));
        assert!(glob("a*b*c", "a b x c"));
    }
}
