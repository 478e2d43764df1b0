//! What imageapi has made, recorded in `<data_dir>/imageapi/state.json`: written to a
//! temporary file and renamed over the old one, so a crash of tankd leaves either the
//! old record or the new one. A record is written as `creating` before its kernel step
//! and `ready` after, so start-up knows which steps may be half done.
//!
//! No fsync: the record describes kernel state (loop devices, mappings, mounts) that a
//! power loss or reboot erases anyway, so a record lost with the page cache loses
//! nothing; a file left torn by one is set aside on start. Syncing cost ~10 fsyncs per
//! attach-mount-overlay chain, most of its latency.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use rpc_schema::imageapi::Mount;
use serde::{Deserialize, Serialize};

pub use crate::attach::record::{AttachRec, Phase};

/// One mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRec {
    pub id: u64,
    pub phase: Phase,
    pub spec: Mount,
    pub mountpoint: PathBuf,
    /// The attachment mounted (kind attach).
    #[serde(default)]
    pub attach_id: Option<u64>,
    /// Lower mounts, top first (kind overlay).
    #[serde(default)]
    pub lower: Vec<u64>,
    /// The mount a bind mount comes from.
    #[serde(default)]
    pub bind_of: Option<u64>,
    /// A directory tankd made for this mount's upper and work dirs, removed with it.
    #[serde(default)]
    pub managed_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub next_id: u64,
    pub attachments: BTreeMap<u64, AttachRec>,
    pub mounts: BTreeMap<u64, MountRec>,
    /// Mounts that are a container's root, and the container: they cannot be unmounted,
    /// not even with force, until the container is deleted.
    #[serde(default)]
    pub pinned: BTreeMap<u64, u64>,
}

impl State {
    pub fn allocate_id(&mut self) -> u64 {
        self.next_id = self.next_id.max(1);
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Mounts that use attachment `id`.
    pub fn mounts_on(&self, attach: u64) -> Vec<u64> {
        self.mounts.values().filter(|m| m.attach_id == Some(attach)).map(|m| m.id).collect()
    }

    /// Mounts stacked on or bound from mount `id`.
    pub fn users_of(&self, mount: u64) -> Vec<u64> {
        self.mounts.values().filter(|m| m.lower.contains(&mount) || m.bind_of == Some(mount)).map(|m| m.id).collect()
    }

    /// The mounts to take down, dependents first, so that mount `id` can go.
    pub fn mount_teardown(&self, id: u64) -> Vec<u64> {
        let mut order = Vec::new();
        self.visit_mount(id, &mut order);
        order
    }

    fn visit_mount(&self, id: u64, order: &mut Vec<u64>) {
        if order.contains(&id) {
            return;
        }
        for user in self.users_of(id) {
            self.visit_mount(user, order);
        }
        order.push(id);
    }

    /// The mounts to take down so that attachment `id` can go.
    pub fn attach_teardown(&self, id: u64) -> Vec<u64> {
        let mut order = Vec::new();
        for m in self.mounts_on(id) {
            self.visit_mount(m, &mut order);
        }
        order
    }
}

pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(dir: &Path) -> Self {
        StateFile { path: dir.join("state.json") }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The recorded state; a file that does not parse (torn by a power loss) is renamed
    /// to `state.json.bad` and an empty state returned: the kernel objects it described
    /// did not survive either, and anything that did is reported as unknown.
    pub fn load(&self) -> std::io::Result<State> {
        match std::fs::read(&self.path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(state) => Ok(state),
                Err(e) => {
                    let bad = self.path.with_extension("json.bad");
                    tracing::error!(file = %self.path.display(), error = %e, set_aside = %bad.display(), "the imageapi state file does not parse; starting empty");
                    std::fs::rename(&self.path, &bad)?;
                    Ok(State::default())
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e),
        }
    }

    /// Write-and-rename.
    pub fn save(&self, state: &State) -> std::io::Result<()> {
        let dir = self.path.parent().expect("state file has a directory");
        std::fs::create_dir_all(dir)?;
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(state).expect("state serialises"))?;
        drop(f);
        std::fs::rename(&tmp, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpc_schema::imageapi::{Attach, MountKind, Rbd, RbdOptions};

    fn mount(id: u64, lower: &[u64], bind_of: Option<u64>, attach_id: Option<u64>) -> MountRec {
        MountRec {
            id,
            phase: Phase::Ready,
            spec: Mount { id: Some(id), ..Mount::new(MountKind::Overlay) },
            mountpoint: format!("/m/{id}").into(),
            attach_id,
            lower: lower.to_vec(),
            bind_of,
            managed_dir: None,
        }
    }

    #[test]
    fn teardown_takes_dependents_first_and_each_once() {
        let mut s = State::default();
        // attach 1 ← mount 2 ← overlay 4 (lowers 2, 3) ← bind 5; mount 3 on attach 1 too.
        s.mounts.insert(2, mount(2, &[], None, Some(1)));
        s.mounts.insert(3, mount(3, &[], None, Some(1)));
        s.mounts.insert(4, mount(4, &[2, 3], None, None));
        s.mounts.insert(5, mount(5, &[], Some(4), None));
        assert_eq!(s.mount_teardown(2), vec![5, 4, 2]);
        assert_eq!(s.attach_teardown(1), vec![5, 4, 2, 3]);
        assert_eq!(s.users_of(3), vec![4]);
        assert_eq!(s.mounts_on(1), vec![2, 3]);
    }

    #[test]
    fn the_file_round_trips_without_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path());
        assert_eq!(file.load().unwrap(), State::default());
        let mut s = State::default();
        let id = s.allocate_id();
        let rbd = Rbd {
            pool: "rbd".into(),
            image: "img".into(),
            options: RbdOptions { secret: Some("c2VjcmV0".into()), ..Default::default() },
            ..Default::default()
        };
        let spec = Attach { id: Some(id), read_only: true, ..Attach::of_rbd(rbd) };
        s.attachments.insert(
            id,
            AttachRec {
                id,
                phase: Phase::Ready,
                spec,
                device: Some("/dev/loop3".into()),
                backing: None,
                krbd_id: None,
                krbd_before: None,
                fuse_dir: None,
                owner: None,
            },
        );
        file.save(&s).unwrap();
        let text = std::fs::read_to_string(file.path()).unwrap();
        assert!(!text.contains("c2VjcmV0"), "the secret reached the state file");
        let back = file.load().unwrap();
        assert_eq!(back.next_id, 2);
        assert_eq!(back.attachments[&1].device.as_deref(), Some("/dev/loop3"));

        // A torn file is set aside, not fatal.
        std::fs::write(file.path(), b"{\"next_id\": 3, \"attachm").unwrap();
        assert_eq!(file.load().unwrap(), State::default());
        assert!(dir.path().join("state.json.bad").exists());
    }
}
