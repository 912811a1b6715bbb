//! Multicast group memberships in the container's network namespace.
//!
//! A socket that joined a group (IP_ADD_MEMBERSHIP, IPV6_JOIN_GROUP,
//! MCAST_JOIN_GROUP...) holds the membership, and the interface then
//! receives that group's traffic; getsockopt can not list a socket's
//! groups, so they are not carried yet (issue 16): a restored socket would
//! silently stop receiving its group. Nor are groups added to an interface
//! itself. The checkpoint refuses any group of the namespace but those the
//! kernel joins on its own (all-hosts, all-routers, and each IPv6
//! address's solicited-node group, which come back with the addresses).
//!
//! Read from /proc/PID/net/igmp and igmp6, which show the network
//! namespace of process PID. Only a namespace of the container's own: in
//! one it shares, the groups may be anyone's.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("process {pid}: read its multicast groups ({file}): {source}")]
    Read {
        pid: i32,
        file: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the container's network namespace has joined multicast group {group} on {device}, which migrate does not carry yet; a restored socket would stop receiving it")]
    Uncarried { group: String, device: String },
}

/// Refuses the first multicast group joined in the network namespace of
/// process `pid` that the kernel would not join again by itself.
pub fn refuse_uncarried(pid: i32) -> Result<(), Error> {
    let read = |file: &'static str| match std::fs::read_to_string(format!("/proc/{pid}/net/{file}")) {
        // A kernel without IPv4 multicast (or IPv6) has no such file.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        other => other.map_err(|source| Error::Read { pid, file, source }),
    };
    let (v4, v6) = (read("igmp")?, read("igmp6")?);
    match joined_v4(&v4).into_iter().chain(joined_v6(&v6)).next() {
        Some((device, group)) => Err(Error::Uncarried { group, device }),
        None => Ok(()),
    }
}

/// The groups of /proc/net/igmp but all-hosts (224.0.0.1), with their
/// device: a device line "1\tlo        :     1      V3" is followed by
/// group lines "\t\t\t\t010000E0     1 0:00000000\t\t0" (the address as a
/// number in the machine's byte order).
fn joined_v4(text: &str) -> Vec<(String, String)> {
    let mut device = String::new();
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        if !line.starts_with('\t') {
            device = line.split_whitespace().nth(1).unwrap_or("?").to_string();
            continue;
        }
        let Some(group) = line
            .split_whitespace()
            .next()
            .and_then(|g| u32::from_str_radix(g, 16).ok())
        else {
            continue;
        };
        // The kernel prints the address's network-order bytes as a number.
        let addr = std::net::Ipv4Addr::from(group.to_ne_bytes());
        if addr != std::net::Ipv4Addr::new(224, 0, 0, 1) {
            out.push((device.clone(), addr.to_string()));
        }
    }
    out
}

/// The groups of /proc/net/igmp6 ("1    lo    ff020000000000000000000000000001  1 0000000C 0")
/// but those the kernel joins itself: all-nodes (ff01::1, ff02::1),
/// all-routers (ff01::2, ff02::2, ff05::2, when forwarding) and
/// solicited-node groups (ff02::1:ffXX:XXXX).
fn joined_v6(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let Some(bits) = cols.get(2).and_then(|g| u128::from_str_radix(g, 16).ok()) else {
            continue;
        };
        let addr = std::net::Ipv6Addr::from(bits);
        let s = addr.segments();
        let own = matches!(
            s,
            [0xff01 | 0xff02, 0, 0, 0, 0, 0, 0, 1 | 2] | [0xff05, 0, 0, 0, 0, 0, 0, 2]
        ) || (s[..6] == [0xff02, 0, 0, 0, 0, 1] && s[6] >> 8 == 0xff);
        if !own {
            out.push((cols[1].to_string(), addr.to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_groups_a_program_joined_are_named() {
        let igmp = "Idx\tDevice    : Count Querier\tGroup    Users Timer\tReporter\n\
                    1\tlo        :     2      V3\n\
                    \t\t\t\t010101EF     1 0:00000000\t\t0\n\
                    \t\t\t\t010000E0     1 0:00000000\t\t0\n\
                    1407\teth0      :     1      V3\n\
                    \t\t\t\t010000E0     1 0:00000000\t\t0\n";
        assert_eq!(joined_v4(igmp), vec![("lo".to_string(), "239.1.1.1".to_string())]);
        let igmp6 = "1    lo              ff020000000000000000000000000001     1 0000000C 0\n\
                     1407 eth0            ff0200000000000000000001ff590002     1 00000004 0\n\
                     1407 eth0            ff010000000000000000000000000001     1 00000008 0\n\
                     1407 eth0            ff050000000000000000000000000002     1 00000008 0\n\
                     1407 eth0            ff0e0000000000000000000000000123     1 00000004 0\n";
        assert_eq!(joined_v6(igmp6), vec![("eth0".to_string(), "ff0e::123".to_string())]);
        assert!(joined_v4("").is_empty() && joined_v6("").is_empty());
    }
}
