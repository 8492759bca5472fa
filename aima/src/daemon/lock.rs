use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Why the daemon could not take its home.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another aima daemon{} already owns home {home}; stop it first or pass a different --home", pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Held { home: PathBuf, pid: Option<u32> },
    #[error(
        "AIMA home {home} is not writable: cannot create {path}: {source}; choose a writable directory with --home or AIMA_HOME"
    )]
    NotWritable {
        home: PathBuf,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// An exclusive `flock` on `$AIMA_HOME/daemon.lock`, held for the daemon's lifetime so
/// two daemons never write one database. The kernel drops it when the process dies,
/// even by SIGKILL, so a crash never leaves a stale lock.
#[derive(Debug)]
pub struct HomeLock {
    _file: Flock<File>,
}

impl HomeLock {
    pub fn acquire(home: &Path, path: &Path) -> Result<Self, LockError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|source| LockError::NotWritable {
                home: home.to_owned(),
                path: path.to_owned(),
                source,
            })?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut file) => {
                // The pid is only for the message another daemon prints; failing to
                // write it does not weaken the lock.
                let _ = file.set_len(0).and_then(|()| {
                    file.rewind()?;
                    write!(file, "{}", std::process::id())?;
                    file.sync_data()
                });
                Ok(Self { _file: file })
            }
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let pid = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok());
                Err(LockError::Held {
                    home: home.to_owned(),
                    pid,
                })
            }
            Err((_, errno)) => Err(LockError::NotWritable {
                home: home.to_owned(),
                path: path.to_owned(),
                source: std::io::Error::from(errno),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_on_the_same_home_is_refused_with_the_pid() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("daemon.lock");
        let _held = HomeLock::acquire(dir.path(), &path).expect("first lock");
        let err = HomeLock::acquire(dir.path(), &path).expect_err("second lock");
        assert!(
            matches!(err, LockError::Held { pid: Some(pid), .. } if pid == std::process::id()),
            "{err}"
        );
    }

    #[test]
    fn lock_is_released_on_drop() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("daemon.lock");
        drop(HomeLock::acquire(dir.path(), &path).expect("first lock"));
        HomeLock::acquire(dir.path(), &path).expect("lock again");
    }
}
