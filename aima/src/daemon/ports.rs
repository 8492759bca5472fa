//! Host port probing: is a port free, and if not, who holds it.

use std::fmt;
use std::net::{Ipv4Addr, TcpListener};

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
/// /proc/net/tcp{,6}, then the process holding a descriptor to that inode.
pub fn process_listening_on(port: u16) -> Option<(u32, String)> {
    let inodes: Vec<u64> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|table| listening_inodes(&table, port))
        .collect();
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

fn command_line(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let text = raw
        .split(|b| *b == 0)
        .filter(|part| !part.is_empty())
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    if text.is_empty() {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|c| c.trim().to_owned())
            .unwrap_or_else(|_| "unknown command".to_owned())
    } else {
        text
    }
}

/// True when some non-listening socket (an outgoing connection) has `port` as its
/// local port.
pub fn outgoing_connection_on(port: u16) -> bool {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .any(|table| {
            table.lines().skip(1).any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let local_port = fields
                    .get(1)
                    .and_then(|l| l.rsplit(':').next())
                    .and_then(|p| u16::from_str_radix(p, 16).ok());
                local_port == Some(port) && fields.get(3).is_some_and(|state| *state != "0A")
            })
        })
}

/// The kernel's ephemeral port range (`net.ipv4.ip_local_port_range`).
pub fn ephemeral_range() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut parts = text.split_whitespace().map(str::parse::<u16>);
    Some((parts.next()?.ok()?, parts.next()?.ok()?))
}

/// Inodes of sockets in LISTEN state (`0A`) on `port` in a /proc/net/tcp table.
fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = fields.get(1)?;
            let state = fields.get(3)?;
            let inode = fields.get(9)?.parse().ok()?;
            let local_port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            (local_port == port && *state == "0A" && inode != 0).then_some(inode)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listening_sockets_from_proc_tables() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000\n   1: 0100007F:1F40 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 777 1 0000\n";
        assert_eq!(listening_inodes(table, 8000), [4242]);
        assert!(listening_inodes(table, 8001).is_empty());
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
