//! Client networks: the unit limits count by, and the coarse location
//! sessions and audit rows record.

use std::net::IpAddr;

/// The key every per-network limit counts by: an IPv4 address, an IPv6 /64
/// (one subscriber's allocation), an IPv4-mapped IPv6 address as IPv4.
pub fn key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("net:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        IpAddr::V6(v6) => format!("net:{}", v6.to_ipv4_mapped().expect("checked")),
        IpAddr::V4(v4) => format!("net:{v4}"),
    }
}

/// The coarse network a client came from, as sessions and the audit log
/// record it: /24 for IPv4, /48 for IPv6.
pub fn prefix(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return prefix(IpAddr::V4(v4));
            }
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_addresses_and_ipv6_64s() {
        assert_eq!(key("203.0.113.7".parse().unwrap()), "net:203.0.113.7");
        assert_eq!(
            key("2001:db8:1:2:3:4:5:6".parse().unwrap()),
            "net:2001:db8:1:2::/64"
        );
        assert_eq!(
            key("::ffff:203.0.113.7".parse().unwrap()),
            "net:203.0.113.7"
        );
    }

    #[test]
    fn prefixes_are_coarse() {
        assert_eq!(prefix("203.0.113.77".parse().unwrap()), "203.0.113.0/24");
        assert_eq!(
            prefix("2001:db8:1:2::7".parse().unwrap()),
            "2001:db8:1::/48"
        );
        assert_eq!(prefix("::ffff:192.0.2.9".parse().unwrap()), "192.0.2.0/24");
    }
}
