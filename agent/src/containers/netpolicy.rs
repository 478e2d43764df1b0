//! What a container's network may touch on the host: the host end of a veth pair gets an
//! address only inside `container_networks` and joins only a bridge named in
//! `container_bridges`. Without this, a caller could give the host end the node's gateway
//! address, or put a container on the host's LAN bridge.

use std::net::IpAddr;

use crate::error::{Error, Result};

/// The configured ranges and bridge names (a trailing `*` matches any rest).
#[derive(Debug, Clone, Default)]
pub struct NetPolicy {
    pub host_networks: Vec<(IpAddr, u8)>,
    pub bridges: Vec<String>,
}

/// The first `len` bits of an address, as a number wide enough for IPv6.
fn prefix_bits(ip: IpAddr, len: u8) -> u128 {
    let (bits, width): (u128, u32) = match ip {
        IpAddr::V4(a) => (u32::from(a).into(), 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    };
    let len = u32::from(len).min(width);
    if len == 0 { 0 } else { bits >> (width - len) }
}

impl NetPolicy {
    /// From the config's strings; `Err` names the entry that is not a CIDR or a name.
    pub fn new(networks: &[String], bridges: &[String]) -> std::result::Result<NetPolicy, String> {
        let host_networks =
            networks.iter().map(|n| super::net::parse_cidr(n)).collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(NetPolicy { host_networks, bridges: bridges.to_vec() })
    }

    /// `host_address` (CIDR): its whole network must lie inside one configured range.
    pub fn check_host_address(&self, cidr: &str) -> Result<()> {
        let (ip, len) = super::net::parse_cidr(cidr).map_err(|e| Error::invalid("network.host_address", e))?;
        let inside = self.host_networks.iter().any(|(net, net_len)| {
            net.is_ipv4() == ip.is_ipv4() && len >= *net_len && prefix_bits(ip, *net_len) == prefix_bits(*net, *net_len)
        });
        if inside {
            return Ok(());
        }
        Err(Error::invalid(
            "network.host_address",
            format!("{cidr} is not inside the configured container_networks ({})", self.networks_text()),
        ))
    }

    pub fn check_bridge(&self, name: &str) -> Result<()> {
        let named = |pattern: &String| match pattern.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == pattern,
        };
        if self.bridges.iter().any(named) {
            return Ok(());
        }
        let list = if self.bridges.is_empty() { "none are configured".to_owned() } else { self.bridges.join(", ") };
        Err(Error::invalid("network.bridge", format!("{name} is not one of the configured container_bridges ({list})")))
    }

    fn networks_text(&self) -> String {
        if self.host_networks.is_empty() {
            return "none are configured".into();
        }
        self.host_networks.iter().map(|(ip, len)| format!("{ip}/{len}")).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ends_stay_inside_the_configured_ranges_and_bridges() {
        let p = NetPolicy::new(&["10.231.0.0/16".into(), "fd00:7a::/64".into()], &["tkbr*".into(), "br-ct".into()])
            .unwrap();
        assert!(p.check_host_address("10.231.7.1/30").is_ok());
        assert!(p.check_host_address("fd00:7a::1/120").is_ok());
        for bad in ["10.232.0.1/30", "10.231.0.1/8", "192.168.1.1/24", "fd00:7b::1/120", "10.231.0.1"] {
            assert_eq!(p.check_host_address(bad).unwrap_err().field.as_deref(), Some("network.host_address"), "{bad}");
        }
        assert!(p.check_bridge("tkbr123").is_ok() && p.check_bridge("br-ct").is_ok());
        assert!(p.check_bridge("br0").is_err() && p.check_bridge("br-ct2").is_err());
        let none = NetPolicy::default();
        assert!(none.check_host_address("10.0.0.1/24").unwrap_err().message.contains("none are configured"));
        assert!(none.check_bridge("br0").is_err());
        assert!(NetPolicy::new(&["10.0.0.0".into()], &[]).is_err());
    }
}
