//! User namespaces: checking a requested id map, picking a free range when none is
//! given, and the text the kernel takes in `/proc/<pid>/{uid,gid}_map`.
//!
//! With a user namespace, root in the container is an unprivileged id on the host: a
//! file the host's root owns is "other" to it, and its capabilities reach only what its
//! own namespaces own. The shim makes the namespace together with the pid namespace
//! (so the container's /proc is its own to mount) and writes the maps from outside.

use rpc_schema::containers::{IdMap, UserNs};

use crate::error::{Error, Result};

/// Automatic ranges: 65536 ids each (a whole 16-bit id space, as podman's `auto` and
/// systemd-nspawn's `pick` give), from here up, inside the span systemd reserves for
/// container ranges (524288–1879048191), so no login user or system account is hit.
pub const AUTO_BASE: u32 = 0x4000_0000;
pub const AUTO_SIZE: u32 = 65536;
const AUTO_LAST: u32 = 1_879_048_191;
/// The kernel takes 340 lines since 4.15; five is plenty for a container and keeps the
/// overlap checks trivial.
const MAX_LINES: usize = 5;

/// The ids `size` ids from `start` cover, in u64 so that the end of a range reaching
/// 2^32 does not wrap.
fn span(start: u32, size: u32) -> std::ops::Range<u64> {
    u64::from(start)..u64::from(start) + u64::from(size)
}

fn overlap(a: &std::ops::Range<u64>, b: &std::ops::Range<u64>) -> bool {
    a.start < b.end && b.start < a.end
}

fn check_map(field: &str, map: &[IdMap]) -> Result<()> {
    if map.is_empty() {
        return Err(Error::invalid(field, "at least one line (or leave both maps empty for an automatic range)"));
    }
    if map.len() > MAX_LINES {
        return Err(Error::invalid(field, format!("at most {MAX_LINES} lines")));
    }
    for (i, m) in map.iter().enumerate() {
        if m.size == 0 {
            return Err(Error::invalid(field, format!("line {i}: size 0")));
        }
        if span(m.container_id, m.size).end > 1 << 32 || span(m.host_id, m.size).end > 1 << 32 {
            return Err(Error::invalid(field, format!("line {i}: the range runs past 2^32")));
        }
        // Host root inside a container's range would make the namespace pointless: the
        // container could act on every file the host's root owns.
        if m.host_id == 0 {
            return Err(Error::invalid(field, format!("line {i}: maps host id 0 (the host's root)")));
        }
        for (j, o) in map[..i].iter().enumerate() {
            if overlap(&span(m.container_id, m.size), &span(o.container_id, o.size))
                || overlap(&span(m.host_id, m.size), &span(o.host_id, o.size))
            {
                return Err(Error::invalid(field, format!("lines {j} and {i} overlap")));
            }
        }
    }
    if !map.iter().any(|m| m.container_id == 0) {
        return Err(Error::invalid(field, "container id 0 must be mapped: the container's setup runs as its root"));
    }
    Ok(())
}

fn maps(id: u32, map: &[IdMap]) -> bool {
    map.iter().any(|m| span(m.container_id, m.size).contains(&u64::from(id)))
}

/// Check a request's user namespace (not the automatic form: that is filled in later).
pub fn validate(u: &UserNs, uid: u32, gid: u32) -> Result<()> {
    if u.uid_map.is_empty() && u.gid_map.is_empty() {
        return Ok(());
    }
    check_map("userns.uid_map", &u.uid_map)?;
    let gid_map = if u.gid_map.is_empty() { &u.uid_map } else { &u.gid_map };
    check_map("userns.gid_map", gid_map)?;
    if !maps(uid, &u.uid_map) {
        return Err(Error::invalid("uid", format!("{uid} is not in userns.uid_map")));
    }
    if !maps(gid, gid_map) {
        return Err(Error::invalid("gid", format!("{gid} is not in userns.gid_map")));
    }
    Ok(())
}

/// The namespace to record: explicit maps completed (gid_map defaults to uid_map), or
/// the lowest automatic range that no other container's host ids touch.
pub fn resolve(u: &UserNs, others: &[&UserNs]) -> Result<UserNs> {
    if !(u.uid_map.is_empty() && u.gid_map.is_empty()) {
        let gid_map = if u.gid_map.is_empty() { u.uid_map.clone() } else { u.gid_map.clone() };
        return Ok(UserNs { uid_map: u.uid_map.clone(), gid_map });
    }
    let taken = |start: u32| {
        let wanted = span(start, AUTO_SIZE);
        others
            .iter()
            .flat_map(|o| o.uid_map.iter().chain(&o.gid_map))
            .any(|m| overlap(&wanted, &span(m.host_id, m.size)))
    };
    let mut start = AUTO_BASE;
    while span(start, AUTO_SIZE).end - 1 <= u64::from(AUTO_LAST) {
        if !taken(start) {
            let line = IdMap { container_id: 0, host_id: start, size: AUTO_SIZE };
            return Ok(UserNs { uid_map: vec![line], gid_map: vec![line] });
        }
        start += AUTO_SIZE;
    }
    Err(Error::conflict("every automatic user namespace range is in use"))
}

/// What `/proc/<pid>/uid_map` (or `gid_map`) takes: one write, a line per range.
pub fn map_text(map: &[IdMap]) -> String {
    map.iter().map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.size)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(c: u32, h: u32, s: u32) -> IdMap {
        IdMap { container_id: c, host_id: h, size: s }
    }

    #[test]
    fn maps_are_checked_before_anything_runs() {
        let field = |u: UserNs| validate(&u, 0, 0).unwrap_err().field.unwrap();
        let one = |m: Vec<IdMap>| UserNs { uid_map: m, gid_map: vec![] };
        assert_eq!(field(one(vec![line(0, 0, 65536)])), "userns.uid_map", "host root refused");
        assert_eq!(field(one(vec![line(0, 100000, 0)])), "userns.uid_map", "empty range");
        assert_eq!(field(one(vec![line(0, u32::MAX, 2)])), "userns.uid_map", "past 2^32");
        assert_eq!(field(one(vec![line(1, 100000, 10)])), "userns.uid_map", "root unmapped");
        assert_eq!(field(one(vec![line(0, 100000, 10), line(5, 200000, 10)])), "userns.uid_map", "overlap inside");
        assert_eq!(field(one(vec![line(0, 100000, 10), line(10, 100005, 10)])), "userns.uid_map", "overlap outside");
        assert_eq!(field(one(vec![line(0, 100000, 1); 6])), "userns.uid_map", "too many lines");
        let u = UserNs { uid_map: vec![line(0, 100000, 10)], gid_map: vec![line(1, 100000, 10)] };
        assert_eq!(field(u), "userns.gid_map");
        let u = one(vec![line(0, 100000, 10)]);
        assert_eq!(validate(&u, 10, 0).unwrap_err().field.as_deref(), Some("uid"));
        assert_eq!(validate(&u, 0, 10).unwrap_err().field.as_deref(), Some("gid"));
        assert!(validate(&u, 9, 9).is_ok());
        assert!(validate(&UserNs::default(), 1000, 1000).is_ok(), "automatic: checked when picked");
    }

    #[test]
    fn automatic_ranges_do_not_collide() {
        let first = resolve(&UserNs::default(), &[]).unwrap();
        assert_eq!(first.uid_map, vec![line(0, AUTO_BASE, AUTO_SIZE)]);
        assert_eq!(first.gid_map, first.uid_map);
        let second = resolve(&UserNs::default(), &[&first]).unwrap();
        assert_eq!(second.uid_map, vec![line(0, AUTO_BASE + AUTO_SIZE, AUTO_SIZE)]);
        // An explicit map inside the automatic span pushes the pick past it.
        let explicit = UserNs { uid_map: vec![line(0, AUTO_BASE + 2 * AUTO_SIZE + 5, 1)], gid_map: vec![] };
        let explicit = resolve(&explicit, &[]).unwrap();
        assert_eq!(explicit.gid_map, explicit.uid_map, "gid_map defaults to uid_map");
        let third = resolve(&UserNs::default(), &[&first, &second, &explicit]).unwrap();
        assert_eq!(third.uid_map[0].host_id, AUTO_BASE + 3 * AUTO_SIZE);
        assert_eq!(map_text(&third.uid_map), format!("0 {} 65536\n", AUTO_BASE + 3 * AUTO_SIZE));
    }
}
