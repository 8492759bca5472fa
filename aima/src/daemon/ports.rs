//! Host port probing (is a port free, and if not, who holds it), and the errors a port
//! a caller chose gets.

use std::fmt;
use std::net::{Ipv4Addr, TcpListener};

use super::DaemonError;
use crate::domain::Invalid;

/// Longest command line quoted in an error.
const COMMAND_MAX_CHARS: usize = 120;

/// Who holds a host port, as far as the host lets us see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortHolder {
    Process {
        pid: u32,
        command: String,
    },
    Container {
        name: String,
        id: String,
    },
    /// The local end of an outgoing connection: the kernel handed the port out as an
    /// ephemeral port. It frees itself, but the range should not overlap.
    OutgoingConnection {
        ephemeral: Option<(u16, u16)>,
    },
    Unknown,
}

impl fmt::Display for PortHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Process { pid, command } => write!(f, "pid {pid} ({command})"),
            Self::Container { name, id } => {
                write!(f, "container '{name}' ({})", id.get(..12).unwrap_or(id))
            }
            Self::OutgoingConnection { ephemeral } => {
                write!(
                    f,
                    "an outgoing connection (the kernel lent it as an ephemeral port"
                )?;
                if let Some((first, last)) = ephemeral {
                    write!(
                        f,
                        " from {first}-{last}; keep AIMA_PORT_RANGE outside that range"
                    )?;
                }
                f.write_str(")")
            }
            Self::Unknown => {
                f.write_str("a process this daemon cannot see (another user or namespace)")
            }
        }
    }
}

/// True when a listener could take `port` on all interfaces right now, as Docker's
/// port publishing would.
pub fn is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok()
}

/// The process listening on `port`, found through /proc: the socket's inode in
/// /proc/net/tcp{,6}, then the process holding a descriptor to that inode. The tables
/// are read line by line, so memory does not grow with the host's socket count.
pub fn process_listening_on(port: u16) -> Option<(u32, String)> {
    let mut inodes: Vec<u64> = Vec::new();
    scan_sockets(|socket| {
        if socket.local_port == port && socket.state == LISTEN && socket.inode != 0 {
            inodes.push(socket.inode);
        }
        false
    });
    if inodes.is_empty() {
        return None;
    }
    let targets: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if targets.iter().any(|t| link.as_os_str() == t.as_str()) {
                return Some((pid, command_line(pid)));
            }
        }
    }
    None
}

/// TCP state `0A` in /proc/net/tcp.
const LISTEN: u8 = 0x0A;

/// One row of /proc/net/tcp{,6}.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Socket {
    local_port: u16,
    state: u8,
    inode: u64,
}

/// Calls `visit` for every TCP socket of the host until it returns true; true if it did.
fn scan_sockets(mut visit: impl FnMut(Socket) -> bool) -> bool {
    use std::io::BufRead;
    let mut line = String::new();
    for path in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(file) = std::fs::File::open(path) else {
            continue;
        };
        let mut reader = std::io::BufReader::new(file);
        let mut header = true;
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if std::mem::take(&mut header) {
                continue;
            }
            if let Some(socket) = parse_socket(&line)
                && visit(socket)
            {
                return true;
            }
        }
    }
    false
}

fn parse_socket(line: &str) -> Option<Socket> {
    let mut fields = line.split_whitespace();
    let local = fields.nth(1)?;
    let state = fields.nth(1)?;
    let inode = fields.nth(5)?;
    Some(Socket {
        local_port: u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?,
        state: u8::from_str_radix(state, 16).ok()?,
        inode: inode.parse().ok()?,
    })
}

fn command_line(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let text = raw
        .split(|b| *b == 0)
        .filter(|part| !part.is_empty())
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let text = if text.is_empty() {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|c| c.trim().to_owned())
            .unwrap_or_else(|_| "unknown command".to_owned())
    } else {
        text
    };
    // Command lines can be kilobytes long and hold newlines; the error is one line.
    crate::domain::shorten(&crate::domain::one_line(&text), COMMAND_MAX_CHARS)
}

/// True when some non-listening socket (an outgoing connection) has `port` as its
/// local port.
pub fn outgoing_connection_on(port: u16) -> bool {
    scan_sockets(|socket| socket.local_port == port && socket.state != LISTEN)
}

/// The kernel's ephemeral port range (`net.ipv4.ip_local_port_range`).
pub fn ephemeral_range() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut parts = text.split_whitespace().map(str::parse::<u16>);
    Some((parts.next()?.ok()?, parts.next()?.ok()?))
}

/// A port the caller chose must lie in the service port range.
pub(super) fn in_range(port: u16, range: crate::config::PortRange) -> Result<(), Invalid> {
    if port == 0 {
        return Err(Invalid::new(
            "port",
            format!("port 0 is not a port; pass a --port in {range} or leave it out"),
        ));
    }
    if !(range.first..=range.last).contains(&port) {
        return Err(Invalid::new(
            "port",
            format!(
                "port {port} is outside the service port range {range}; pick a port in it, leave --port out, or widen AIMA_PORT_RANGE"
            ),
        ));
    }
    Ok(())
}

pub(super) fn no_port_left(range: crate::config::PortRange, held: usize) -> DaemonError {
    DaemonError::Conflict(format!(
        "no free port left in the service port range {range} ({held} held by services, the rest in use on the host); widen AIMA_PORT_RANGE or delete services"
    ))
}

pub(super) fn port_in_use(port: u16) -> DaemonError {
    let holder = process_listening_on(port)
        .map(|(pid, command)| format!(" by pid {pid} ({command})"))
        .unwrap_or_default();
    DaemonError::Conflict(format!(
        "port {port} is in use on this host{holder}; pick another --port or leave it out"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rows_of_the_proc_tables() {
        let listening = "   0: 00000000:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000";
        let connected = "   1: 0100007F:1F40 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 777 1 0000";
        assert_eq!(
            parse_socket(listening),
            Some(Socket {
                local_port: 8000,
                state: LISTEN,
                inode: 4242
            })
        );
        assert_eq!(
            parse_socket(connected),
            Some(Socket {
                local_port: 8000,
                state: 1,
                inode: 777
            })
        );
        assert_eq!(parse_socket("  sl  local_address rem_address"), None);
    }

    #[test]
    fn finds_this_process_holding_a_port() {
        let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        assert!(!is_free(port));
        let (pid, command) = process_listening_on(port).expect("found");
        assert_eq!(pid, std::process::id());
        assert!(!command.is_empty());
        drop(listener);
        assert!(is_free(port));
    }
}
