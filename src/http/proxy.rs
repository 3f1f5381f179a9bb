//! The client's IP address behind load balancers.
//!
//! `X-Forwarded-For` is a list any client can write to; only the entries
//! appended by our own proxies are true. So the header is read only when
//! the direct peer is a configured trusted proxy, and then from the right:
//! each trusted hop is skipped, and the first address that is not one of
//! ours is the client (anything to its left is the client's own claim).

use std::net::IpAddr;

use ipnet::IpNet;

/// The address failed logins, network binding and the audit log use.
///
/// `forwarded_for` are the values of every `X-Forwarded-For` header, in
/// order. A malformed entry ends the walk at the last hop that was read
/// (the proxy that appended it is the last trustworthy witness).
pub fn client_ip(peer: IpAddr, forwarded_for: &[&str], trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    for entry in forwarded_for
        .iter()
        .rev()
        .flat_map(|value| value.rsplit(','))
    {
        let Some(ip) = parse_hop(entry.trim()) else {
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

/// An address as proxies write it: `203.0.113.7`, `2001:db8::1`, or with a
/// port (`203.0.113.7:4711`, `[2001:db8::1]:4711`).
fn parse_hop(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    s.parse::<std::net::SocketAddr>()
        .ok()
        .map(|a| a.ip().to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn the_header_is_ignored_unless_the_peer_is_trusted() {
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(ip("198.51.100.9"), &["203.0.113.7"], &trusted),
            ip("198.51.100.9")
        );
        assert_eq!(
            client_ip(ip("10.0.0.2"), &["203.0.113.7"], &[]),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let trusted = nets(&["10.0.0.0/8", "2001:db8::/32"]);
        // The client forged the first entry; our proxies appended the rest.
        let header = ["1.2.3.4, 203.0.113.7, 10.0.0.5"];
        assert_eq!(
            client_ip(ip("10.0.0.2"), &header, &trusted),
            ip("203.0.113.7")
        );
        // Several header lines are one list, in order.
        let lines = ["1.2.3.4", "203.0.113.7", "10.1.1.1"];
        assert_eq!(
            client_ip(ip("10.0.0.2"), &lines, &trusted),
            ip("203.0.113.7")
        );
        assert_eq!(
            client_ip(
                ip("2001:db8::1"),
                &["[2001:db8::2]:443, 198.51.100.1:5555"],
                &trusted
            ),
            ip("198.51.100.1")
        );
        // IPv4-mapped IPv6 is the IPv4 address.
        assert_eq!(
            client_ip(ip("10.0.0.2"), &["::ffff:203.0.113.7"], &trusted),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn only_trusted_hops_or_garbage_leave_the_last_good_hop() {
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(ip("10.0.0.2"), &["10.0.0.3"], &trusted),
            ip("10.0.0.3")
        );
        assert_eq!(client_ip(ip("10.0.0.2"), &[], &trusted), ip("10.0.0.2"));
        for garbage in [
            "unknown",
            "",
            "1.2.3.4, <script>",
            "999.1.1.1",
            "1.2.3.4 ,,",
        ] {
            let got = client_ip(ip("10.0.0.2"), &[garbage], &trusted);
            assert_eq!(got, ip("10.0.0.2"), "{garbage:?}");
        }
        assert_eq!(
            client_ip(ip("10.0.0.2"), &["203.0.113.7, junk, 10.0.0.9"], &trusted),
            ip("10.0.0.9"),
            "stops at the garbage: the hop before it is a proxy of ours"
        );
    }
}
