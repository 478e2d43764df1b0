//! Which stream brings a replica one step closer to its source: pure logic over the two
//! sides' snapshot lists (names, GUIDs, creation txgs), no I/O, so every case is a unit
//! test. The caller runs the step, lists again and asks again until [`plan`] answers
//! `None` (up to date).
//!
//! The rules, as zrepl's planner has them (its `initial_replication: all`):
//! - a cut transfer is finished first (`zfs send -t` with the replica's resume token);
//! - a replica that does not exist gets the source's oldest snapshot in full, then
//!   everything after it with `-I`, so its history is the source's;
//! - otherwise the base is the newest replica snapshot whose GUID the source still has,
//!   as a snapshot (`-I` from it to the newest: intermediates come along) or only as a
//!   bookmark (`-i #bookmark` to the next snapshot: `-I` cannot start at a bookmark);
//! - a replica with snapshots newer than that base has diverged, and one with no
//!   snapshot in common has nothing to apply on: both are refused, never rolled back
//!   or overwritten (that is the operator's call, `zfs rollback` or a new name).

use crate::error::{Error, Result};

/// A snapshot or a bookmark, as `zfs list -t snapshot,bookmark` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    /// The short name (after `@` or `#`).
    pub name: String,
    pub guid: u64,
    /// Creation order on its own pool.
    pub createtxg: u64,
    pub bookmark: bool,
}

impl Point {
    pub fn snapshot(name: &str, guid: u64, createtxg: u64) -> Point {
        Point { name: name.to_owned(), guid, createtxg, bookmark: false }
    }

    pub fn bookmark(name: &str, guid: u64, createtxg: u64) -> Point {
        Point { name: name.to_owned(), guid, createtxg, bookmark: true }
    }

    /// `@name` or `#name`, as `zfs send -i` takes it.
    fn marked(&self) -> String {
        format!("{}{}", if self.bookmark { '#' } else { '@' }, self.name)
    }
}

/// What the receiving side has of the dataset.
#[derive(Debug, Clone, Default)]
pub struct Replica {
    pub snapshots: Vec<Point>,
    /// `receive_resume_token`: a transfer was cut and kept its partial state.
    pub resume_token: Option<String>,
}

/// The next stream to pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `zfs send -t <token>`.
    Resume { token: String },
    /// `zfs send @snapshot`: the replica does not exist yet.
    Full { snapshot: String },
    /// `zfs send -i|-I <from> @to`; `from` is `@snap` or `#bookmark`.
    Incremental { from: String, to: String, intermediates: bool },
}

/// The next step for `replica` (`None`: it does not exist) to reach `source`'s newest
/// snapshot; `None` when it has.
pub fn plan(source: &[Point], replica: Option<&Replica>) -> Result<Option<Step>> {
    let mut snapshots: Vec<&Point> = source.iter().filter(|p| !p.bookmark).collect();
    snapshots.sort_by_key(|p| p.createtxg);
    let Some(newest) = snapshots.last() else {
        return Err(Error::conflict("the source dataset has no snapshot to replicate").with_field("dataset"));
    };
    let Some(replica) = replica else {
        return Ok(Some(Step::Full { snapshot: snapshots[0].name.clone() }));
    };
    if let Some(token) = &replica.resume_token {
        return Ok(Some(Step::Resume { token: token.clone() }));
    }
    let mut have: Vec<&Point> = replica.snapshots.iter().filter(|p| !p.bookmark).collect();
    have.sort_by_key(|p| p.createtxg);
    // The newest replica snapshot the source knows, and what the source knows it as.
    let common = have.iter().rev().find_map(|mine| {
        let theirs: Vec<&Point> = source.iter().filter(|p| p.guid == mine.guid).collect();
        // A snapshot serves better than a bookmark of it: `-I` can start there.
        let best = theirs.iter().find(|p| !p.bookmark).or(theirs.first()).copied()?;
        Some((*mine, best))
    });
    let Some((mine, base)) = common else {
        let names: Vec<&str> = have.iter().map(|p| p.name.as_str()).collect();
        return Err(Error::conflict(format!(
            "the replica has no snapshot in common with the source (it has {names:?}): \
             replicate into a new name, or destroy the replica"
        ))
        .with_field("into"));
    };
    let newer: Vec<&str> = have.iter().filter(|p| p.createtxg > mine.createtxg).map(|p| p.name.as_str()).collect();
    if !newer.is_empty() {
        return Err(Error::conflict(format!(
            "the replica has diverged: {newer:?} came after @{}, the newest snapshot it shares with the source; \
             roll it back (zfs rollback -r) or replicate into a new name",
            mine.name
        ))
        .with_field("into"));
    }
    if base.guid == newest.guid {
        return Ok(None);
    }
    if !base.bookmark {
        return Ok(Some(Step::Incremental { from: base.marked(), to: newest.name.clone(), intermediates: true }));
    }
    // From a bookmark only `-i`, to the first snapshot after it; `-I` takes over next.
    let next = snapshots.iter().find(|p| p.createtxg > base.createtxg).ok_or_else(|| {
        Error::conflict(format!("the source has no snapshot after #{} to send", base.name)).with_field("dataset")
    })?;
    Ok(Some(Step::Incremental { from: base.marked(), to: next.name.clone(), intermediates: false }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;

    fn source() -> Vec<Point> {
        vec![Point::snapshot("s1", 11, 100), Point::snapshot("s2", 12, 110), Point::snapshot("s3", 13, 120)]
    }

    /// The replica after receiving `names` of the source: same GUIDs, its own txgs.
    fn replica(names: &[(&str, u64)]) -> Replica {
        let snapshots =
            names.iter().enumerate().map(|(i, (n, guid))| Point::snapshot(n, *guid, 5 + i as u64)).collect();
        Replica { snapshots, resume_token: None }
    }

    fn incremental(from: &str, to: &str, intermediates: bool) -> Option<Step> {
        Some(Step::Incremental { from: from.into(), to: to.into(), intermediates })
    }

    #[test]
    fn a_new_replica_gets_the_oldest_in_full_then_the_rest_with_intermediates() {
        assert_eq!(plan(&source(), None).unwrap(), Some(Step::Full { snapshot: "s1".into() }));
        assert_eq!(plan(&source(), Some(&replica(&[("s1", 11)]))).unwrap(), incremental("@s1", "s3", true));
        let done = replica(&[("s1", 11), ("s2", 12), ("s3", 13)]);
        assert_eq!(plan(&source(), Some(&done)).unwrap(), None, "up to date");
    }

    #[test]
    fn the_base_is_the_newest_shared_snapshot_matched_by_guid_not_name() {
        let mut src = source();
        src.push(Point::snapshot("s4", 14, 130));
        // Same names, but s2 on the replica is another snapshot (another GUID).
        let r = replica(&[("s1", 11), ("s2", 99)]);
        let e = plan(&src, Some(&r)).unwrap_err();
        assert_eq!((e.kind, e.field.as_deref()), (Kind::Conflict, Some("into")));
        assert!(e.message.contains("diverged") && e.message.contains("s2"), "{e}");
        let r = replica(&[("s1", 11), ("s2", 12)]);
        assert_eq!(plan(&src, Some(&r)).unwrap(), incremental("@s2", "s4", true));
    }

    #[test]
    fn a_cut_transfer_is_resumed_first() {
        let mut r = replica(&[("s1", 11)]);
        r.resume_token = Some("1-abc-def".into());
        assert_eq!(plan(&source(), Some(&r)).unwrap(), Some(Step::Resume { token: "1-abc-def".into() }));
    }

    #[test]
    fn a_base_destroyed_on_the_source_is_reached_through_its_bookmark() {
        // s1 was destroyed on the source after it was bookmarked; s2 and s3 came since.
        let src = vec![Point::bookmark("s1", 11, 100), Point::snapshot("s2", 12, 110), Point::snapshot("s3", 13, 120)];
        let r = replica(&[("s1", 11)]);
        assert_eq!(plan(&src, Some(&r)).unwrap(), incremental("#s1", "s2", false), "-i from the bookmark, one step");
        let r = replica(&[("s1", 11), ("s2", 12)]);
        assert_eq!(plan(&src, Some(&r)).unwrap(), incremental("@s2", "s3", true), "then -I as usual");
        // The snapshot is preferred while it still exists beside its bookmark.
        let mut both = source();
        both.push(Point::bookmark("s1", 11, 100));
        assert_eq!(plan(&both, Some(&replica(&[("s1", 11)]))).unwrap(), incremental("@s1", "s3", true));
    }

    #[test]
    fn nothing_in_common_or_nothing_to_send_is_refused() {
        let e = plan(&source(), Some(&replica(&[("x", 77)]))).unwrap_err();
        assert!(e.message.contains("no snapshot in common"), "{e}");
        let e = plan(&source(), Some(&Replica::default())).unwrap_err();
        assert!(e.message.contains("no snapshot in common"), "an empty replica that exists: {e}");
        let e = plan(&[Point::bookmark("b", 1, 1)], None).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("dataset"), "{e}");
        // A bookmark is the newest thing the source has of the shared base: nothing after it.
        let e = plan(&[Point::bookmark("s1", 11, 100), Point::snapshot("s0", 10, 90)], Some(&replica(&[("s1", 11)])))
            .unwrap_err();
        assert!(e.message.contains("no snapshot after #s1"), "{e}");
    }
}
