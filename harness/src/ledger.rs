//! What a harness process starts that could outlive it (`aima` daemons, their homes, the
//! containers it runs itself), written to a ledger file the moment it is started. Ctrl-C
//! and SIGTERM remove all of it before the harness exits; the next run (and `harness
//! clean`) removes what runs that were killed outright left behind.
//!
//! Engine containers are found through their daemon's home: its database holds the
//! `aima.instance` label. Containers the harness runs itself carry [`RUN_LABEL`].

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The label of containers the harness runs itself, with the harness's pid as value.
pub const RUN_LABEL: &str = "aima.harness.run";

/// `aima.harness.run=<pid>` for `docker run --label`.
pub fn run_label() -> String {
    format!("{RUN_LABEL}={}", std::process::id())
}

/// Where ledgers live: one file per harness process, named by its pid.
fn ledger_dir() -> PathBuf {
    std::env::temp_dir().join("aima-harness-runs")
}

fn ledger_of(pid: u32) -> PathBuf {
    ledger_dir().join(pid.to_string())
}

fn append(line: &str) {
    let _ = std::fs::create_dir_all(ledger_dir());
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(ledger_of(std::process::id()));
    if let Ok(mut file) = file {
        let _ = writeln!(file, "{line}");
    }
}

/// Notes a daemon process and its home.
pub fn record_daemon(pid: u32, home: &Path) {
    append(&format!("daemon {pid} {}", home.display()));
}

/// Notes that a home (and its daemon's containers) is kept on purpose
/// (`--keep-on-failure`): no sweep removes it.
pub fn record_kept(home: &Path) {
    append(&format!("kept {}", home.display()));
}

/// What a sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub runs: usize,
    pub daemons: usize,
    pub containers: usize,
    pub homes: usize,
}

impl Swept {
    fn add(&mut self, other: Swept) {
        self.runs += other.runs;
        self.daemons += other.daemons;
        self.containers += other.containers;
        self.homes += other.homes;
    }

    pub fn is_empty(&self) -> bool {
        self.daemons + self.containers + self.homes == 0
    }
}

impl std::fmt::Display for Swept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} daemons, {} containers and {} homes of {} harness runs",
            self.daemons, self.containers, self.homes, self.runs
        )
    }
}

/// Removes everything this process recorded: for Ctrl-C and SIGTERM.
pub fn sweep_own() -> Swept {
    sweep_ledger(std::process::id())
}

/// Removes what harness processes that no longer run left behind.
pub fn sweep_interrupted() -> Swept {
    let mut swept = Swept::default();
    let Ok(entries) = std::fs::read_dir(ledger_dir()) else {
        return swept;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !alive(pid) {
            swept.add(sweep_ledger(pid));
        }
    }
    swept
}

/// Whether a process with this pid exists.
fn alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

fn sweep_ledger(pid: u32) -> Swept {
    let path = ledger_of(pid);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let kept: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("kept "))
        .collect();
    let mut swept = Swept {
        runs: 1,
        ..Swept::default()
    };
    for line in text.lines() {
        let Some((daemon, home)) = line
            .strip_prefix("daemon ")
            .and_then(|rest| rest.split_once(' '))
        else {
            continue;
        };
        if kept.contains(&home) {
            continue;
        }
        if daemon.parse().is_ok_and(kill_daemon) {
            swept.daemons += 1;
        }
        let home = Path::new(home);
        if let Some(instance) = instance_of(home) {
            swept.containers += remove_labelled(&format!("aima.instance={instance}"));
        }
        if home.exists() && std::fs::remove_dir_all(home).is_ok() {
            swept.homes += 1;
        }
    }
    swept.containers += remove_labelled(&format!("{RUN_LABEL}={pid}"));
    let _ = std::fs::remove_file(&path);
    swept
}

/// SIGKILLs a daemon the ledger names, if that pid is still an `aima` process.
fn kill_daemon(pid: i32) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let is_aima = cmdline
        .split(|b| *b == 0)
        .next()
        .is_some_and(|exe| exe.ends_with(b"aima"));
    is_aima
        && nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .is_ok()
}

/// The `aima.instance` label of a home's daemon, read from its database.
fn instance_of(home: &Path) -> Option<String> {
    let db = home.join("data/aima.db");
    let conn =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()?;
    conn.query_row(
        "SELECT value FROM meta WHERE key = 'instance_id'",
        [],
        |row| row.get(0),
    )
    .ok()
}

/// `docker rm -f` of every container with `label`; returns how many there were.
pub fn remove_labelled(label: &str) -> usize {
    let Ok(out) = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label={label}")])
        .output()
    else {
        return 0;
    };
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if ids.is_empty() {
        return 0;
    }
    let removed = Command::new("docker")
        .args(["rm", "-f"])
        .args(&ids)
        .output()
        .is_ok_and(|o| o.status.success());
    if removed { ids.len() } else { 0 }
}

/// Forgets this process's ledger after a run that cleaned up after itself.
pub fn close() {
    let _ = std::fs::remove_file(ledger_of(std::process::id()));
}
