//! Container networking: a veth pair per container, configured through rtnetlink.
//!
//! We talk netlink directly (no `ip` binary on the node, typed errors instead of parsed
//! stderr). The host end stays in the host namespace (an address and/or a bridge
//! port); the peer is moved into the container's netns by pid and renamed `eth0` in the
//! same request. A netlink socket acts in the netns of the thread that created it, so
//! `configure_container_end` runs on a dedicated OS thread that `setns`es into
//! `/proc/<pid>/ns/net`, then opens its own current-thread runtime and connection there.
//! Never setns on a tokio worker or blocking-pool thread: those are reused afterwards.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;

use futures_util::TryStreamExt;
use nix::sched::{CloneFlags, setns};
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder, new_connection};

/// Linux `IFNAMSIZ` minus the trailing NUL.
const MAX_IFNAME: usize = 15;

/// A netlink connection whose driver task ends when this is dropped.
struct Netlink {
    handle: Handle,
    driver: tokio::task::JoinHandle<()>,
}

impl Netlink {
    /// Must be called inside a tokio runtime (the socket registers with its reactor).
    fn open() -> Result<Self, String> {
        let (conn, handle, _) = new_connection().map_err(|e| format!("opening netlink socket: {e}"))?;
        Ok(Self { handle, driver: tokio::spawn(conn) })
    }
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

fn is_enodev(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.to_io().raw_os_error() == Some(libc::ENODEV))
}

fn check_name(name: &str) -> Result<(), String> {
    let bad = name.is_empty()
        || name.len() > MAX_IFNAME
        || name == "."
        || name == ".."
        || name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace());
    if bad {
        return Err(format!("invalid interface name {name:?} (1-{MAX_IFNAME} bytes, no '/', ':' or spaces)"));
    }
    Ok(())
}

/// Index of link `name`, or `None` when it does not exist.
async fn find_index(h: &Handle, name: &str) -> Result<Option<u32>, String> {
    let mut links = h.link().get().match_name(name).execute();
    match links.try_next().await {
        Ok(link) => Ok(link.map(|l| l.header.index)),
        Err(e) if is_enodev(&e) => Ok(None),
        Err(e) => Err(format!("looking up link {name}: {e}")),
    }
}

async fn index_of(h: &Handle, name: &str) -> Result<u32, String> {
    find_index(h, name).await?.ok_or_else(|| format!("link {name} not found"))
}

async fn set_up(h: &Handle, index: u32, name: &str) -> Result<(), String> {
    h.link()
        .change(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|e| format!("setting {name} up: {e}"))
}

/// Create a veth pair: `host` stays in the host namespace, `peer` is moved into the
/// network namespace of process `pid` and renamed `eth0` there.
pub async fn create_veth(host: &str, peer: &str, pid: i32) -> Result<(), String> {
    check_name(host)?;
    check_name(peer)?;
    let target = u32::try_from(pid).ok().filter(|p| *p > 0).ok_or_else(|| format!("invalid pid {pid}"))?;
    let nl = Netlink::open()?;
    let h = &nl.handle;
    h.link()
        .add(LinkVeth::new(host, peer).build())
        .execute()
        .await
        .map_err(|e| format!("creating veth {host}/{peer}: {e}"))?;
    let moved = async {
        let index = index_of(h, peer).await?;
        // Move and rename in one request: the name applies in the target netns.
        let msg = LinkUnspec::new_with_index(index).setns_by_pid(target).name("eth0").build();
        h.link().change(msg).execute().await.map_err(|e| format!("moving {peer} into netns of pid {pid} as eth0: {e}"))
    };
    if let Err(e) = moved.await {
        // Do not leave a half-made pair behind; deleting the host end removes both.
        if let Ok(Some(index)) = find_index(h, host).await {
            let _ = h.link().del(index).execute().await;
        }
        return Err(e);
    }
    Ok(())
}

/// Give the host end an address (CIDR like "10.88.0.1/24", IPv4 or IPv6) and set it up;
/// optionally enslave it to an existing bridge `bridge` (by name) instead of/besides
/// the address.
pub async fn configure_host_end(host: &str, address: Option<&str>, bridge: Option<&str>) -> Result<(), String> {
    check_name(host)?;
    let address = address.map(parse_cidr).transpose()?;
    let nl = Netlink::open()?;
    let h = &nl.handle;
    let index = index_of(h, host).await?;
    if let Some(bridge) = bridge {
        check_name(bridge)?;
        let br = index_of(h, bridge).await?;
        h.link()
            .change(LinkUnspec::new_with_index(index).controller(br).build())
            .execute()
            .await
            .map_err(|e| format!("attaching {host} to bridge {bridge}: {e}"))?;
    }
    if let Some((ip, len)) = address {
        h.address()
            .add(index, ip, len)
            .replace()
            .execute()
            .await
            .map_err(|e| format!("adding {ip}/{len} to {host}: {e}"))?;
    }
    set_up(h, index, host).await
}

/// Inside the namespace of `pid`: give `eth0` the address (CIDR), set eth0 and lo up,
/// and add a default route via `gateway` when given (the host end's address without
/// prefix).
pub async fn configure_container_end(pid: i32, address: &str, gateway: Option<IpAddr>) -> Result<(), String> {
    let (ip, len) = parse_cidr(address)?;
    if let Some(gw) = gateway
        && gw.is_ipv4() != ip.is_ipv4()
    {
        return Err(format!("gateway {gw} and address {address} are of different IP families"));
    }
    if pid <= 0 {
        return Err(format!("invalid pid {pid}"));
    }
    let path = format!("/proc/{pid}/ns/net");
    let ns = File::open(&path).map_err(|e| format!("opening {path}: {e}"))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("netns-{pid}"))
        .spawn(move || {
            let _ = tx.send(configure_in_netns(ns, ip, len, gateway));
        })
        .map_err(|e| format!("spawning netns thread: {e}"))?;
    rx.await
        .map_err(|_| "netns thread ended without a result".to_string())?
        .map_err(|e| format!("configuring eth0 in netns of pid {pid}: {e}"))
}

/// Runs on its own short-lived OS thread, which it moves into `ns` for good.
fn configure_in_netns(ns: File, ip: IpAddr, len: u8, gateway: Option<IpAddr>) -> Result<(), String> {
    setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns: {e}"))?;
    drop(ns);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("building runtime: {e}"))?;
    rt.block_on(async move {
        let nl = Netlink::open()?;
        let h = &nl.handle;
        let lo = index_of(h, "lo").await?;
        set_up(h, lo, "lo").await?;
        let eth0 = index_of(h, "eth0").await?;
        h.address()
            .add(eth0, ip, len)
            .replace()
            .execute()
            .await
            .map_err(|e| format!("adding {ip}/{len} to eth0: {e}"))?;
        set_up(h, eth0, "eth0").await?;
        if let Some(gw) = gateway {
            let route = match gw {
                IpAddr::V4(g) => RouteMessageBuilder::<Ipv4Addr>::new().gateway(g).output_interface(eth0).build(),
                IpAddr::V6(g) => RouteMessageBuilder::<Ipv6Addr>::new().gateway(g).output_interface(eth0).build(),
            };
            h.route()
                .add(route)
                .replace()
                .execute()
                .await
                .map_err(|e| format!("adding default route via {gw}: {e}"))?;
        }
        Ok::<(), String>(())
    })
}

/// Delete the host end (which removes the pair); a missing link is not an error.
pub async fn delete(host: &str) -> Result<(), String> {
    check_name(host)?;
    let nl = Netlink::open()?;
    let Some(index) = find_index(&nl.handle, host).await? else {
        return Ok(());
    };
    match nl.handle.link().del(index).execute().await {
        Err(e) if !is_enodev(&e) => Err(format!("deleting link {host}: {e}")),
        _ => Ok(()),
    }
}

/// Parse "a.b.c.d/nn" or IPv6 CIDR into (IpAddr, prefix_len), with a clear error.
pub fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let (addr, prefix) = s.split_once('/').ok_or_else(|| format!("invalid CIDR {s:?}: expected ADDRESS/PREFIX"))?;
    let ip: IpAddr = addr.parse().map_err(|_| format!("invalid CIDR {s:?}: bad address {addr:?}"))?;
    let len = Some(prefix)
        .filter(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|p| p.parse::<u8>().ok())
        .ok_or_else(|| format!("invalid CIDR {s:?}: bad prefix length {prefix:?}"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(format!("invalid CIDR {s:?}: prefix length {len} exceeds {max}"));
    }
    Ok((ip, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ipv4_and_ipv6() {
        assert_eq!(parse_cidr("10.88.0.1/24"), Ok((IpAddr::V4(Ipv4Addr::new(10, 88, 0, 1)), 24)));
        assert_eq!(parse_cidr("fd00::1/64"), Ok(("fd00::1".parse().unwrap(), 64)));
        assert_eq!(parse_cidr("0.0.0.0/0"), Ok((IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)));
        assert_eq!(parse_cidr("::/128"), Ok((IpAddr::V6(Ipv6Addr::UNSPECIFIED), 128)));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "10.88.0.1",
            "10.88.0.1/",
            "/24",
            "10.88.0/24",
            "10.88.0.1/33",
            "fd00::1/129",
            "10.88.0.1/+8",
            "10.88.0.1/ 8",
            "10.88.0.1/24/1",
            "host/24",
        ] {
            let err = parse_cidr(bad).expect_err(bad);
            assert!(err.contains("invalid CIDR"), "{bad}: {err}");
        }
    }
}
