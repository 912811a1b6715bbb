//! Never lose a byte, never harm the container: refusals that happen
//! before anything is stopped, and a failure injected at every step of
//! checkpoint, restore and migration (MIGRATE_FAIL_AT), each followed by
//! a check that the container runs on exactly one side, unchanged, with
//! nothing left behind.

use std::time::Duration;

use anyhow::{ensure, Context, Result};

use crate::common::*;
use crate::migration::{migrate, nothing_left, still_healthy, Pair, Receiver};

const FAIL_AT: &str = "MIGRATE_FAIL_AT";

/// A checkpoint failed at `step`: the container runs on, untouched.
fn checkpoint_fails_harmlessly(root: &TestRoot, name: &str, step: &str) -> Result<()> {
    let last = wait_beats(root, name, 2)?;
    let before = differ::capture_quiet(root, name)?;
    let dir = root.dir.join("image-fail");
    let out = root.cmd_env(
        &[(FAIL_AT, step)],
        &["checkpoint", name, "--dir", dir.to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "checkpoint with a failure at {step} succeeded");
    // An injected syscall that failed is named by the syscall.
    let named = err.contains(step) || step.starts_with("inject:");
    ensure!(err.contains("still running") && named, "at {step}: {err}");
    ensure!(root.status(name)? == "running", "at {step}: not running");
    ensure!(!dir.join("manifest").exists(), "at {step}: an image was left");
    wait_beats(root, name, last + 2).with_context(|| format!("after a failure at {step}"))?;
    differ::diff_same_host(&before, &differ::capture_quiet(root, name)?)
        .with_context(|| format!("after a failure at {step}"))?;
    Ok(())
}

/// A failure at every step of a checkpoint (and in the middle of an
/// injected syscall, with its registers changed) leaves the container
/// running exactly as before: same mappings (no scratch area left), fds,
/// signal state; the heartbeat goes on with no FAIL line.
#[test]
fn checkpoint_failing_at_every_step_leaves_the_container() -> Result<()> {
    let root = TestRoot::new("fault-ck");
    root.run_d("t", &[], &[workload("tree").to_str().unwrap()])?;
    for step in [
        "checkpoint:after-freeze",
        "checkpoint:after-seize",
        "checkpoint:after-files",
        "checkpoint:dump-process:1",
        "checkpoint:dump-process:3",
        "inject:after-set-regs",
        "checkpoint:after-seal",
    ] {
        checkpoint_fails_harmlessly(&root, "t", step)?;
    }
    // And it checkpoints and restores as ever.
    crate::checkpoint::survives_all_cycles(&root, "t")
}

/// A restore failed at any step (or a forked task that panics) leaves the
/// image as it was, the container checkpointed and no cgroup; the next
/// restore works. The panic ends in the child, which reports it, never
/// unwinding into the restorer's code that it is a copy of.
#[test]
fn restore_failing_at_every_step_can_be_retried() -> Result<()> {
    let root = TestRoot::new("fault-rs");
    root.run_d("t", &[], &[workload("tree").to_str().unwrap()])?;
    let last = wait_beats(&root, "t", 3)?;
    let dir = root.dir.join("image");
    let dir_s = dir.to_str().unwrap();
    root.ok(&["checkpoint", "t", "--dir", dir_s])?;
    let cgroup = root.cgroup("t")?;
    for step in [
        "restore:after-namespaces",
        "restore:fork-process:1",
        "restore:fork-process:3",
        "restore:fork-process:4=panic",
        "restore:process:1",
        "restore:process:3",
        "restore:before-ready",
        "inject:after-set-regs",
    ] {
        let out = root.cmd_env(&[(FAIL_AT, step)], &["restore", "--dir", dir_s]);
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success(), "restore with a failure at {step} succeeded");
        let errors = err.lines().filter(|l| l.starts_with("migrate: ")).count();
        ensure!(errors == 1, "at {step}: {errors} error lines: {err}");
        // A panic in a forked task ends that task, which says so.
        ensure!(
            !step.ends_with("=panic") || err.contains("process 4: panicked"),
            "at {step}: {err}"
        );
        ensure!(root.status("t")? == "checkpointed", "at {step}: {err}");
        wait_until(Duration::from_secs(10), "the cgroup to go", || !cgroup.exists())
            .with_context(|| format!("at {step}"))?;
        ensure!(dir.join("manifest").exists(), "at {step}: the image was damaged");
    }
    root.ok(&["restore", "--dir", dir_s])?;
    wait_beats(&root, "t", last + 3)?;
    Ok(())
}

/// A migration failed at any step, on either side, leaves the container
/// running on the source (its log whole) and nothing on the destination.
#[test]
fn migration_failing_at_every_step_keeps_the_source() -> Result<()> {
    let pair = Pair::new("fault-mig")?;
    pair.a.run_d("m", &[], &[workload("memory").to_str().unwrap(), "8"])?;
    let sender_steps = [
        "send:before-precopy",
        "send:after-precopy",
        "checkpoint:after-seize",
        "checkpoint:dump-process:1",
        "checkpoint:after-seal",
        "send:before-commit",
    ];
    let receiver_steps = [
        "restore:after-namespaces",
        "restore:process:1",
        "restore:before-ready",
        "recv:before-resume",
    ];
    let steps = sender_steps
        .iter()
        .map(|s| (*s, true))
        .chain(receiver_steps.iter().map(|s| (*s, false)));
    for (step, on_sender) in steps {
        wait_beats(&pair.a, "m", 2)?;
        let recv_env: &[(&str, &str)] = if on_sender { &[] } else { &[(FAIL_AT, step)] };
        let send_env: &[(&str, &str)] = if on_sender { &[(FAIL_AT, step)] } else { &[] };
        let mut recv = Receiver::start_env(&pair.b, "127.0.0.1", true, None, recv_env)?;
        let out = pair.a.cmd_env(send_env, &["send", "m", &recv.addr]);
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success(), "a migration failing at {step} succeeded");
        ensure!(err.contains("still running"), "at {step}: {err}");
        ensure!(
            !recv.wait(Duration::from_secs(30))?.success(),
            "at {step}: the receiver succeeded"
        );
        still_healthy(&pair.a, "m").with_context(|| format!("at {step}"))?;
        wait_until(Duration::from_secs(30), "the destination to clean up", || {
            nothing_left(&pair.b, "m").is_ok()
        })
        .with_context(|| format!("at {step}"))?;
        let cgroups = pair.b.dir.join("containers");
        ensure!(
            !cgroups.join("m").exists(),
            "at {step}: the destination kept a directory"
        );
    }
    migrate(&pair.a, &pair.b, "m", &[])?;
    wait_beats(&pair.b, "m", 2)?;
    Ok(())
}

/// A process in strict seccomp mode: refused before the container is
/// stopped (the mode is not carried), naming the process and the kind;
/// the process lives on (an injected syscall would have killed it).
#[test]
fn strict_seccomp_is_refused_before_anything_stops() -> Result<()> {
    let root = TestRoot::new("strict");
    let pid = root.run_d("s", &[], &[workload("strict").to_str().unwrap(), "strict"])?;
    let last = wait_beats(&root, "s", 3)?;
    let child = *children(pid).first().context("the strict child")?;
    let status = std::fs::read_to_string(format!("/proc/{child}/status"))?;
    ensure!(status.contains("Seccomp:\t1"), "the child is not in strict mode");
    let before = differ::capture_quiet(&root, "s")?;
    let dir = root.dir.join("image");
    for args in [
        vec!["checkpoint", "s", "--dir", dir.to_str().unwrap()],
        vec!["suspend", "s"],
    ] {
        let out = root.cmd(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success(), "{args:?} of a strict-mode process succeeded");
        ensure!(
            err.contains("strict seccomp") && err.contains("pid 2 in the container") && err.contains("still running"),
            "{err}"
        );
    }
    ensure!(alive(child), "the strict-mode process was killed");
    ensure!(root.status("s")? == "running");
    wait_beats(&root, "s", last + 3)?;
    differ::diff_same_host(&before, &differ::capture_quiet(&root, "s")?)?;
    Ok(())
}

/// A seccomp filter that kills the process on mmap: the checkpoint's own
/// injected syscalls pass by it (seccomp suspended while traced), and the
/// filter comes back.
#[test]
fn seccomp_filter_killing_mmap_survives() -> Result<()> {
    let root = TestRoot::new("killmmap");
    root.run_d("k", &[], &[workload("strict").to_str().unwrap(), "killmmap"])?;
    crate::checkpoint::survives_all_cycles(&root, "k")?;
    let pid = root.pid("k")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    ensure!(status.contains("Seccomp:\t2"), "the filter is gone");
    Ok(())
}

/// A container that made a cgroup of its own inside its cgroup (with a
/// process in it): refused before anything stops; `rm -f` removes the
/// whole subtree.
#[test]
fn nested_cgroup_is_refused_and_removed() -> Result<()> {
    let root = TestRoot::new("nested-cg");
    let pid = root.run_d("n", &[], &["sh", "-c", &format!("sleep 1000 & {TICKER}")])?;
    wait_until(Duration::from_secs(10), "ticks", || last_tick(&root.log("n")) >= 2)?;
    let cg = root.cgroup("n")?;
    let child = cg.join("child");
    std::fs::create_dir(&child)?;
    let sleeper = children(pid)
        .into_iter()
        .find(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "sleep"))
        .context("the sleep process")?;
    std::fs::write(child.join("cgroup.procs"), sleeper.to_string())?;
    let dir = root.dir.join("image");
    for args in [
        vec!["checkpoint", "n", "--dir", dir.to_str().unwrap()],
        vec!["suspend", "n"],
    ] {
        let out = root.cmd(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success(), "{args:?} with a nested cgroup succeeded");
        ensure!(
            err.contains("cgroup of its own") && err.contains("still running"),
            "{err}"
        );
        ensure!(root.status("n")? == "running");
    }
    let t = last_tick(&root.log("n"));
    wait_until(Duration::from_secs(10), "more ticks", || {
        last_tick(&root.log("n")) > t + 2
    })?;
    ensure!(alive(sleeper), "the process in the nested cgroup died");
    root.ok(&["rm", "-f", "n"])?;
    ensure!(!cg.exists(), "rm left the cgroup");
    ensure!(root.ps()?.is_empty(), "rm left the record");
    Ok(())
}

/// A foreground `migrate run` whose stdout the user sent to a file outside
/// the container's root: the restored container writes on to that file,
/// at its offset, reopened on the host's side.
#[test]
fn redirected_stdout_outside_the_root_is_restored() -> Result<()> {
    let root = TestRoot::new("redirect");
    let rootfs = root.dir.join("rootfs");
    busybox_rootfs(&rootfs)?;
    let out = root.dir.join("out.log");
    let mut fg = std::process::Command::new(MIGRATE)
        .arg("--root")
        .arg(&root.dir)
        .args([
            "run",
            "--name",
            "r",
            "--rootfs",
            rootfs.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            TICKER,
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out)?)
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let log = || std::fs::read_to_string(&out).unwrap_or_default();
    wait_until(Duration::from_secs(10), "ticks in the file", || last_tick(&log()) >= 3)?;
    let dir = root.dir.join("image");
    root.ok(&["checkpoint", "r", "--dir", dir.to_str().unwrap()])?;
    let _ = fg.wait();
    root.ok(&["restore", "--dir", dir.to_str().unwrap()])?;
    let t = last_tick(&log());
    wait_until(Duration::from_secs(10), "more ticks in the file", || {
        last_tick(&log()) >= t + 3
    })?;
    let ticks: Vec<u64> = log()
        .lines()
        .filter_map(|l| l.strip_prefix("tick ").and_then(|n| n.parse().ok()))
        .collect();
    ensure!(
        ticks == (1..=ticks.len() as u64).collect::<Vec<_>>(),
        "ticks not continuous: {ticks:?}"
    );
    Ok(())
}

/// State migrate does not carry is refused by its real name, naming the
/// process and the fd or mapping, and the container is left as it was.
#[test]
fn uncarried_state_is_named_for_what_it_is() -> Result<()> {
    let root = TestRoot::new("odd");
    let dir = root.dir.join("image");
    let path = root.dir.join("odd-file");
    let path = path.to_str().unwrap();
    for (what, expect) in [
        (
            "lease-breaking",
            "fd 3 is a file with a lease being broken (LEASE BREAKING",
        ),
        ("deleted-block", "fd 3 is a block device node that was deleted"),
        (
            "zombie-leader",
            "is in a process group whose leader is a zombie of another parent",
        ),
        ("shared-files", "shares its fd table with process 2 (CLONE_FILES)"),
        (
            "shared-vm",
            "shares its address space with process 2 (CLONE_VM, or a vfork not done yet)",
        ),
        (
            "shared-fs",
            "shares its working directory, root and umask with process 2 (CLONE_FS)",
        ),
        (
            "tcp-unbound",
            "fd 3 is a TCP socket (IPv4) not bound, listening or connected",
        ),
        (
            "tcp-bound",
            "fd 3 is a TCP socket (IPv4) bound to 127.0.0.1:7777, not listening",
        ),
        ("mbind", "has a NUMA memory policy of its own (bind:0, mbind)"),
        (
            "sysv-partial",
            "of SysV shared memory segment 0 is attached only in part (a part was unmapped)",
        ),
        (
            "pkey",
            "tagged with memory protection key 1 (pkey_mprotect), which migrate does not carry",
        ),
        ("mqueue", "IPC namespace holds a POSIX message queue (/odd)"),
        ("mqueue-fd", "fd 3 is a POSIX message queue (/oddq)"),
        ("many-fds", "more than a process may have here"),
        (
            "secretmem",
            "fd 3 is a secret memory (memfd_secret), whose pages no other process can read",
        ),
        ("nsfs", "fd 3 is a namespace file (uts:["),
        ("unix-shutdown", "fd 3 is a unix socket shut down for writing"),
        (
            "sock-filter",
            "fd 3 is a socket with a packet filter attached (SO_ATTACH_FILTER)",
        ),
        (
            "multicast",
            "network namespace has joined multicast group 239.1.1.1 on lo",
        ),
        (
            "sock-ebpf",
            "fd 3 is a socket with an eBPF program attached as its filter (SO_ATTACH_BPF)",
        ),
        ("peek-off", "fd 4 is a socket with a peek offset set (SO_PEEK_OFF 1)"),
        (
            "passcred",
            "fd 4 is a unix socket receiving its senders' credentials (SO_PASSCRED)",
        ),
        (
            "inotify-queued",
            "fd 3 is a inotify instance with 32 bytes of events not read yet",
        ),
        ("aio", "an AIO ring (io_setup)"),
        ("uffd", "fd 3 is a userfaultfd"),
        (
            "inotify-deleted",
            "fd 3 is a inotify instance watching a file that was deleted",
        ),
        (
            "deleted-linked",
            "fd 3 is a file deleted under this name and still linked under another, which migrate can not find again",
        ),
        (
            "epoll-elsewhere",
            "fd 3 is a epoll with a registration made through fd 4, whose file no fd of the process holds any more",
        ),
        (
            "pidfd-reaped",
            "fd 3 is a pidfd of a process that has exited and been reaped",
        ),
        (
            "proc-reused",
            "fd 3 is a file of a process that exited, whose PID another process has now",
        ),
        (
            "bind-mount",
            "has a mount it made itself, which migrate does not carry yet",
        ),
        (
            "own-netns",
            "(pid 2 in the container) is in a network namespace of its own",
        ),
        (
            "thread-netns",
            "(pid 1 in the container) is in a network namespace of its own",
        ),
        (
            "thread-creds",
            "has credentials of its own (uids, gids, groups, capabilities or no_new_privs",
        ),
        (
            "thread-pdeathsig",
            "has a parent-death signal of its own (10, its process's is 0)",
        ),
        (
            "thread-timerslack",
            "has a timer slack of its own (123456, its process's is 50000)",
        ),
        ("thread-personality", "has another personality than the process"),
        ("pty", "fd 3 is a terminal (a pty or tty) (/dev/ptmx)"),
        (
            "packet-pipe",
            "fd 4 is a packet-mode pipe (O_DIRECT), whose message boundaries",
        ),
        (
            "detached-mount",
            "fd 3 is a file on a mount detached since it was opened (umount -l) or in another mount namespace (/f)",
        ),
        (
            "tcp-backlog",
            "fd 3 is a TCP listener on 127.0.0.1:7778 with 1 connections not accepted yet",
        ),
        (
            "udp-queued",
            "fd 3 is a UDP socket on 127.0.0.1:7779 with datagrams not read yet",
        ),
        (
            "scm-rights",
            "is a unix socket whose queue holds file descriptors in flight (SCM_RIGHTS)",
        ),
    ] {
        let _ = std::fs::remove_file(path);
        root.run_d(what, &[], &[workload("odd").to_str().unwrap(), what, path])?;
        let last = wait_beats(&root, what, 2)?;
        let before = differ::capture_quiet(&root, what)?;
        let out = root.cmd(&["checkpoint", what, "--dir", dir.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success(), "{what}: the checkpoint succeeded");
        ensure!(err.contains(expect) && err.contains("still running"), "{what}: {err}");
        ensure!(
            !err.contains("the file was deleted") && !err.contains("does not support"),
            "{what}: {err}"
        );
        ensure!(root.status(what)? == "running", "{what}");
        wait_beats(&root, what, last + 2)?;
        differ::diff_same_host(&before, &differ::capture_quiet(&root, what)?).with_context(|| what.to_string())?;
        root.ok(&["rm", "-f", what])?;
    }
    Ok(())
}

/// What /proc shows of a process's scheduling and prctl attributes.
fn attributes(pid: i32) -> Result<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat.rsplit_once(") ").context("stat")?.1.split_whitespace().collect();
    let read = |f: &str| std::fs::read_to_string(format!("/proc/{pid}/{f}")).unwrap_or_default();
    let thp = read("status")
        .lines()
        .find(|l| l.starts_with("THP_enabled"))
        .unwrap_or_default()
        .to_string();
    let cpus = read("status")
        .lines()
        .find(|l| l.starts_with("Cpus_allowed_list"))
        .unwrap_or_default()
        .to_string();
    Ok(format!(
        "nice {} rt_priority {} policy {} oom_score_adj {} timerslack {} loginuid {} personality {} {thp} {cpus}",
        fields[16],
        fields[37],
        fields[38],
        read("oom_score_adj").trim(),
        read("timerslack_ns").trim(),
        read("loginuid").trim(),
        read("personality").trim()
    ))
}

/// Nice value, policy, oom_score_adj, loginuid, THP disable, subreaper,
/// dumpable, timer slack, securebits, TSC mode, machine-check policy,
/// speculation control, KSM merging and MDWE come back after checkpoint/restore, suspend/
/// resume and a migration (the workload checks each every beat; /proc
/// shows the same before and after).
#[test]
fn scheduling_and_prctl_attributes_survive() -> Result<()> {
    let pair = Pair::new("attrs")?;
    let pid = pair.a.run_d("a", &[], &[workload("attrs").to_str().unwrap()])?;
    wait_beats(&pair.a, "a", 2)?;
    let before = attributes(pid)?;
    ensure!(before.contains("nice 5") && before.contains("policy 3"), "{before}");
    let state = crate::checkpoint::cycles_keeping_state(&pair.a, "a")?;
    ensure!(
        attributes(pair.a.pid("a")?)? == before,
        "{before} became {}",
        attributes(pair.a.pid("a")?)?
    );
    let last = check_heartbeat(&pair.a.log("a"))?;
    migrate(&pair.a, &pair.b, "a", &[])?;
    wait_beats(&pair.b, "a", last + 2)?;
    ensure!(
        attributes(pair.b.pid("a")?)? == before,
        "after migration: {}",
        attributes(pair.b.pid("a")?)?
    );
    differ::diff_migrated(&state, &differ::capture_quiet(&pair.b, "a")?).context("after migration")?;
    Ok(())
}

/// A seccomp filter installed with CAP_SYS_ADMIN (no no_new_privs) by a
/// process that then dropped to nobody: it could not install the filter
/// itself, so the restore puts it back before the credentials.
#[test]
fn seccomp_filter_of_an_unprivileged_process_survives() -> Result<()> {
    let root = TestRoot::new("seccomp-priv");
    root.run_d("s", &[], &[workload("seccomp_priv").to_str().unwrap()])?;
    crate::checkpoint::survives_all_cycles(&root, "s")
}

/// A container that renamed its host, set a NIS domain name and changed
/// its IPC namespace's limits and network namespace's sysctls keeps all of
/// them through checkpoint/restore and a migration.
#[test]
fn uts_names_and_ipc_limits_set_inside_survive() -> Result<()> {
    let pair = Pair::new("uts")?;
    let script = format!(
        "hostname renamed-inside; echo nis.example > /proc/sys/kernel/domainname; \
         echo 1234 > /proc/sys/kernel/msgmax; echo '100 200 30 40' > /proc/sys/kernel/sem; \
         echo 1 > /proc/sys/kernel/shm_rmid_forced; echo 7 > /proc/sys/kernel/msg_next_id; \
         echo 20 > /proc/sys/fs/mqueue/msg_max; echo 77 > /proc/sys/net/unix/max_dgram_qlen; \
         echo 3 > /proc/sys/net/ipv4/tcp_fin_timeout; echo '1000 1001' > /proc/sys/net/ipv4/ping_group_range; {TICKER}"
    );
    pair.a
        .run_d("u", &["--hostname", "started-as"], &["sh", "-c", &script])?;
    let names = |root: &TestRoot| {
        root.ok(&[
            "exec",
            "u",
            "--",
            "cat",
            "/proc/sys/kernel/hostname",
            "/proc/sys/kernel/domainname",
            "/proc/sys/kernel/msgmax",
            "/proc/sys/kernel/sem",
            "/proc/sys/kernel/shm_rmid_forced",
            "/proc/sys/kernel/msg_next_id",
            "/proc/sys/fs/mqueue/msg_max",
            "/proc/sys/net/unix/max_dgram_qlen",
            "/proc/sys/net/ipv4/tcp_fin_timeout",
            "/proc/sys/net/ipv4/ping_group_range",
        ])
    };
    let want = "renamed-inside\nnis.example\n1234\n100\t200\t30\t40\n1\n7\n20\n77\n3\n1000\t1001\n";
    wait_until(Duration::from_secs(10), "ticks", || last_tick(&pair.a.log("u")) >= 2)?;
    ensure!(names(&pair.a)? == want, "{}", names(&pair.a)?);
    let dir = pair.a.dir.join("image");
    pair.a.ok(&["checkpoint", "u", "--dir", dir.to_str().unwrap()])?;
    pair.a.ok(&["restore", "--dir", dir.to_str().unwrap()])?;
    ensure!(names(&pair.a)? == want, "after restore: {}", names(&pair.a)?);
    migrate(&pair.a, &pair.b, "u", &[])?;
    ensure!(names(&pair.b)? == want, "after migration: {}", names(&pair.b)?);
    Ok(())
}

/// SysV message queues, semaphore sets and shared memory segments keep
/// their ids, keys, owners, modes and contents; a segment its attachments
/// (split by mprotect, read-only, inherited by a child), also one removed
/// while attached, or locked and not attached.
/// A segment holding more than `--file-cap` is refused before anything
/// stops.
#[test]
fn sysv_ipc_objects_survive() -> Result<()> {
    let pair = Pair::new("ipc")?;
    pair.a.run_d("w", &[], &[workload("ipc").to_str().unwrap()])?;
    refused_over_cap_then_cycles(&pair, "4096", "over the cap of 4096 (--file-cap)")
}

/// Workload `program` (which checks its own state every beat) through
/// checkpoint/restore twice, suspend/resume and a migration.
fn cycles_and_migration(tag: &str, program: &str) -> Result<()> {
    let pair = Pair::new(tag)?;
    pair.a.run_d("w", &[], &[workload(program).to_str().unwrap()])?;
    cycles_then_migration(&pair)
}

/// Container "w" of `pair`, checkpointed with `--file-cap CAP`: refused
/// with `expect`, it runs on unchanged; then through [`cycles_then_migration`].
fn refused_over_cap_then_cycles(pair: &Pair, cap: &str, expect: &str) -> Result<()> {
    let last = wait_beats(&pair.a, "w", 2)?;
    let before = differ::capture_quiet(&pair.a, "w")?;
    let dir = pair.a.dir.join("image-capped");
    let out = pair
        .a
        .cmd(&["checkpoint", "w", "--dir", dir.to_str().unwrap(), "--file-cap", cap]);
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "a checkpoint over the file cap succeeded");
    ensure!(err.contains(expect) && err.contains("still running"), "{err}");
    wait_beats(&pair.a, "w", last + 2)?;
    differ::diff_same_host(&before, &differ::capture_quiet(&pair.a, "w")?)?;
    cycles_then_migration(pair)
}

/// Container "w" of `pair` through checkpoint/restore twice,
/// suspend/resume and a migration, its state compared before and after.
fn cycles_then_migration(pair: &Pair) -> Result<()> {
    let before = crate::checkpoint::cycles_keeping_state(&pair.a, "w")?;
    let last = check_heartbeat(&pair.a.log("w"))?;
    migrate(&pair.a, &pair.b, "w", &[])?;
    wait_beats(&pair.b, "w", last + 2)?;
    differ::diff_migrated(&before, &differ::capture_quiet(&pair.b, "w")?).context("after migration")?;
    Ok(())
}

/// A locked region is locked again, and a sealed one (mseal) sealed.
#[test]
fn mlocked_memory_stays_locked() -> Result<()> {
    cycles_and_migration("mlock", "mlock")
}

/// memfd seals, whether a memfd may be sealed at all, O_PATH, and deleted
/// files with their mode, owner and holes come back. What the image would
/// carry over `--file-cap` is refused before anything stops.
#[test]
fn memfd_seals_and_o_path_survive() -> Result<()> {
    let pair = Pair::new("seals")?;
    pair.a.run_d("w", &[], &[workload("fdkinds").to_str().unwrap()])?;
    refused_over_cap_then_cycles(&pair, "6", "over the 6-byte cap")
}

/// Process and file state checked together in one container (workload
/// `kinds`): POSIX, OFD and flock locks; an fd's owner and signal for
/// SIGIO. A migration on one host hands the locks over: the source lets
/// go of them once its image is sealed, and takes them back when the
/// destination fails after taking them.
#[test]
fn locks_and_fd_owners_survive() -> Result<()> {
    let pair = Pair::new("kinds")?;
    let dir = pair.a.dir.join("kinds");
    std::fs::create_dir_all(&dir)?;
    pair.a
        .run_d("w", &[], &[workload("kinds").to_str().unwrap(), dir.to_str().unwrap()])?;
    let before = crate::checkpoint::cycles_keeping_state(&pair.a, "w")?;
    let step = "recv:before-resume";
    let mut recv = Receiver::start_env(&pair.b, "127.0.0.1", true, None, &[(FAIL_AT, step)])?;
    let out = pair.a.cmd(&["send", "w", &recv.addr]);
    ensure!(!out.status.success(), "a migration failing at {step} succeeded");
    ensure!(!recv.wait(Duration::from_secs(30))?.success());
    still_healthy(&pair.a, "w")?;
    differ::diff(&before, &differ::capture_quiet(&pair.a, "w")?).context("after a failed migration")?;
    let last = check_heartbeat(&pair.a.log("w"))?;
    migrate(&pair.a, &pair.b, "w", &[])?;
    wait_beats(&pair.b, "w", last + 2)?;
    differ::diff_migrated(&before, &differ::capture_quiet(&pair.b, "w")?).context("after migration")?;
    check_heartbeat(&pair.b.log("w"))?;
    Ok(())
}

/// A shell that forks short-lived children all the time (a loop of
/// /bin/true next to its heartbeat): the refusals made while it runs meet
/// processes that end as they are read, and pre-copy tracks processes
/// that end between rounds; neither may fail. Checkpointed and restored
/// ten times in a row, then migrated five times back and forth.
#[test]
fn a_tree_forking_fast_is_checkpointed_every_time() -> Result<()> {
    let pair = Pair::new("forky")?;
    let root = &pair.a;
    let script = "while :; do /bin/true; /bin/true & wait; done & \
                  i=0; while :; do i=$((i+1)); echo \"beat $i\"; sleep 0.05; done";
    root.run_d("forky", &[], &["bash", "-c", script])?;
    let mut last = wait_beats(root, "forky", 3)?;
    for round in 0..10 {
        let dir = root.dir.join(format!("image-{round}"));
        root.ok(&["checkpoint", "forky", "--dir", dir.to_str().unwrap()])
            .with_context(|| format!("checkpoint {}", round + 1))?;
        root.ok(&["restore", "--dir", dir.to_str().unwrap()])
            .with_context(|| format!("restore {}", round + 1))?;
        last = wait_beats(root, "forky", last + 2)?;
        check_heartbeat(&root.log("forky"))?;
    }
    for round in 0..5 {
        let (from, to) = if round % 2 == 0 {
            (&pair.a, &pair.b)
        } else {
            (&pair.b, &pair.a)
        };
        migrate(from, to, "forky", &[]).with_context(|| format!("migration {}", round + 1))?;
        last = wait_beats(to, "forky", last + 2)?;
        check_heartbeat(&to.log("forky"))?;
    }
    Ok(())
}
