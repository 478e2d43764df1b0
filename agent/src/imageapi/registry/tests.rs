//! The registry's graph on the recording kernel double: who owns what, what `force`
//! takes down and in which order, what a failed step undoes, and what the state file
//! says before and after each step. Each test checks the answers, the kernel calls and
//! the state file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rpc_schema::imageapi::{Attach, Filter, Mount};
use serde_json::{Value, json};

use super::Registry;
use crate::attach::Env;
use crate::error::{Error, Kind};
use crate::imageapi::kernel::double::{Call, Recording, Step};
use crate::imageapi::state::{Phase, State, StateFile};
use crate::mounts;

/// The loop file every attachment here names; the double never opens it.
const IMAGE: &str = "/images/base.sqfs";

struct Bed {
    _dir: tempfile::TempDir,
    env: Env,
    kernel: Arc<Recording>,
    reg: Registry,
}

impl Bed {
    fn new() -> Bed {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let env = Env {
            data_dir: root.join("data"),
            mount_root: root.join("mounts"),
            image_roots: vec![root.join("images")],
            local_devices: Vec::new(),
            allow_suid_dev: false,
            sys_block: root.join("sys/block"),
            sys_rbd: root.join("sys/rbd"),
            zfs: None,
            dataset_root: "tank/tankd".parse().unwrap(),
        };
        let kernel = Arc::new(Recording::watching(&state_dir(&env)));
        let reg =
            Registry::with_kernel(env.clone(), State::default(), StateFile::new(&state_dir(&env)), kernel.clone());
        Bed { _dir: dir, env, kernel, reg }
    }

    fn mp(&self, id: u64) -> PathBuf {
        self.env.mount_root.join(id.to_string())
    }

    /// The state file as it is now.
    fn file(&self) -> State {
        StateFile::new(&state_dir(&self.env)).load().unwrap()
    }

    fn file_exists(&self) -> bool {
        StateFile::new(&state_dir(&self.env)).path().exists()
    }

    /// How many kernel calls so far (to read one operation's calls with `calls_since`).
    fn mark(&self) -> usize {
        self.kernel.calls().len()
    }

    /// A restart without re-adoption: a fresh registry on the state file as it is now,
    /// with a fresh double.
    fn reload(&self) -> (Registry, Arc<Recording>) {
        let file = StateFile::new(&state_dir(&self.env));
        let state = file.load().unwrap();
        let kernel = Arc::new(Recording::new());
        (Registry::with_kernel(self.env.clone(), state, file, kernel.clone()), kernel)
    }

    async fn mount_ids(&self) -> Vec<(u64, u64)> {
        let all = self.reg.mounts(&Filter::default()).await.unwrap();
        all.iter().map(|m| (m.id.unwrap(), m.refs)).collect()
    }
}

fn state_dir(env: &Env) -> PathBuf {
    env.data_dir.join("imageapi")
}

fn loop_json() -> Value {
    json!({"kind": "loop", "read_only": true, "loop": {"path": IMAGE}})
}

fn attach(v: Value) -> Attach {
    serde_json::from_value(v).unwrap()
}

fn mount(v: Value) -> Mount {
    serde_json::from_value(v).unwrap()
}

/// A squashfs mount of a loop attachment made with it.
fn inline() -> Mount {
    mount(json!({"kind": "attach", "attach": {"attach": loop_json(), "fs_type": "squashfs"}}))
}

/// A squashfs mount of attachment `id`.
fn on(id: u64) -> Mount {
    mount(json!({"kind": "attach", "attach": {"attach_id": id, "fs_type": "squashfs"}}))
}

/// A writable overlay (upper and work dirs managed by tankd) over `lower`, top first.
fn overlay(lower: &[u64]) -> Mount {
    mount(json!({"kind": "overlay", "overlay": {"lower": lower}}))
}

fn keys<T>(m: &std::collections::BTreeMap<u64, T>) -> Vec<u64> {
    m.keys().copied().collect()
}

fn prepare(attach: u64) -> Call {
    Call::Prepare { attach }
}

fn attach_call(attach: u64) -> Call {
    Call::Attach { attach }
}

fn detach(attach: u64, device: &str) -> Call {
    Call::Detach { attach, device: Some(device.into()) }
}

fn mount_squashfs(device: &str, target: PathBuf) -> Call {
    Call::MountDevice { device: device.into(), target, fs_type: "squashfs".into(), read_only: true }
}

fn unmount(target: PathBuf) -> Call {
    Call::Unmount { target }
}

#[tokio::test]
async fn an_inline_attachment_is_made_with_its_mount_and_goes_with_it() {
    let b = Bed::new();
    let m = b.reg.create_mount(inline()).await.unwrap();
    // The mount takes the first id, its attachment the next.
    assert_eq!(m.id, Some(1));
    assert_eq!(m.mountpoint.as_deref(), Some(b.mp(1).to_str().unwrap()));
    let ma = m.attach.as_ref().unwrap();
    assert_eq!((ma.attach_id, ma.attach.is_none()), (Some(2), true), "the inline spec became a reference");
    assert_eq!(b.kernel.calls(), [prepare(2), attach_call(2), mount_squashfs("/dev/loop0", b.mp(1))]);

    // Each record is in the file, `creating`, before its step; `ready` after.
    let at_prepare = b.kernel.file_at(0).unwrap();
    assert_eq!(at_prepare.mounts[&1].phase, Phase::Creating);
    assert!(at_prepare.attachments.is_empty(), "prepare comes before the attachment's record");
    let at_attach = b.kernel.file_at(1).unwrap();
    let a = &at_attach.attachments[&2];
    assert_eq!((a.phase, a.owner, a.backing.as_deref()), (Phase::Creating, Some(1), Some(Path::new(IMAGE))));
    let at_mount = b.kernel.file_at(2).unwrap();
    assert_eq!(at_mount.attachments[&2].phase, Phase::Ready);
    assert_eq!(at_mount.attachments[&2].device.as_deref(), Some("/dev/loop0"));
    assert_eq!((at_mount.mounts[&1].phase, at_mount.mounts[&1].attach_id), (Phase::Creating, Some(2)));
    let file = b.file();
    assert_eq!((file.mounts[&1].phase, file.attachments[&2].phase), (Phase::Ready, Phase::Ready));
    assert_eq!(file.next_id, 3);

    let listed = b.reg.attachments(&Filter::default()).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].id, listed[0].refs, listed[0].device_file.as_deref()), (Some(2), 1, Some("/dev/loop0")));

    // The attachment is its mount's: not deleted under it.
    let e = b.reg.delete_attach(2, false).await.unwrap_err();
    assert_eq!(e.kind, Kind::Conflict, "{e}");
    assert_eq!(b.mark(), 3, "a refused delete takes no step");

    let n = b.mark();
    let gone = b.reg.delete_mount(1, false).await.unwrap();
    assert_eq!(gone.id, Some(1));
    assert_eq!(b.kernel.calls_since(n), [unmount(b.mp(1)), detach(2, "/dev/loop0")]);
    let file = b.file();
    assert!(file.mounts.is_empty() && file.attachments.is_empty(), "{file:?}");
    assert!(b.reg.attachments(&Filter::default()).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_failed_mount_detaches_the_inline_attachment_it_made_and_leaves_no_record() {
    let b = Bed::new();
    b.reg.create_mount(inline()).await.unwrap();
    let refused = Error::os(format!("mounting /dev/loop1 (squashfs) on {}", b.mp(3).display()), "invalid argument");
    b.kernel.fail_nth(Step::Mount, 2, refused.clone());

    let n = b.mark();
    assert_eq!(b.reg.create_mount(inline()).await.unwrap_err(), refused);
    assert_eq!(
        b.kernel.calls_since(n),
        [prepare(4), attach_call(4), mount_squashfs("/dev/loop1", b.mp(3)), detach(4, "/dev/loop1")]
    );
    // Both records were written before the mount step, and are gone after it failed.
    let at_mount = b.kernel.file_at(n + 2).unwrap();
    assert_eq!((at_mount.mounts[&3].phase, at_mount.attachments[&4].owner), (Phase::Creating, Some(3)));
    let file = b.file();
    assert_eq!((keys(&file.mounts), keys(&file.attachments)), (vec![1], vec![2]), "the first chain is untouched");
    assert_eq!(b.mount_ids().await, [(1, 0)]);

    // The rule was for the second mount only; ids are not reused.
    let m = b.reg.create_mount(inline()).await.unwrap();
    assert_eq!((m.id, m.attach.unwrap().attach_id), (Some(5), Some(6)));
    assert_eq!(b.kernel.calls().last(), Some(&mount_squashfs("/dev/loop2", b.mp(5))));
}

#[tokio::test]
async fn a_failed_inline_attach_or_prepare_makes_no_mount_and_leaves_no_record() {
    let b = Bed::new();
    let refused = Error::os("attaching /images/base.sqfs to a loop device", "no free loop device");
    b.kernel.fail_nth(Step::Attach, 1, refused.clone());
    assert_eq!(b.reg.create_mount(inline()).await.unwrap_err(), refused);
    assert_eq!(b.kernel.calls(), [prepare(2), attach_call(2)], "no mount, and nothing to detach");
    let at_attach = b.kernel.file_at(1).unwrap();
    assert_eq!((keys(&at_attach.mounts), keys(&at_attach.attachments)), (vec![1], vec![2]));
    let file = b.file();
    assert!(file.mounts.is_empty() && file.attachments.is_empty(), "{file:?}");

    let bad = Error::invalid("loop.path", "/images/base.sqfs is outside the allowed roots");
    b.kernel.fail_nth(Step::Prepare, 2, bad.clone());
    assert_eq!(b.reg.create_mount(inline()).await.unwrap_err(), bad);
    assert_eq!(b.kernel.calls_since(2), [prepare(4)]);
    let file = b.file();
    assert!(file.mounts.is_empty() && file.attachments.is_empty(), "{file:?}");
    assert!(b.reg.mounts(&Filter::default()).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_attachment_is_recorded_creating_before_its_device_and_forgotten_if_that_fails() {
    let b = Bed::new();
    let refused = Error::os("attaching /images/base.sqfs to a loop device", "device busy");
    b.kernel.fail_nth(Step::Attach, 1, refused.clone());
    assert_eq!(b.reg.create_attach(attach(loop_json())).await.unwrap_err(), refused);
    assert_eq!(b.kernel.file_at(1).unwrap().attachments[&1].phase, Phase::Creating);
    assert!(b.file().attachments.is_empty());

    let a = b.reg.create_attach(attach(loop_json())).await.unwrap();
    assert_eq!((a.id, a.refs, a.device_file.as_deref()), (Some(2), 0, Some("/dev/loop0")));
    assert_eq!(a.loop_.unwrap().backing_file.as_deref(), Some(IMAGE));
    assert_eq!(b.kernel.calls(), [prepare(1), attach_call(1), prepare(2), attach_call(2)]);
    let at_attach = b.kernel.file_at(3).unwrap();
    assert_eq!((at_attach.attachments[&2].phase, at_attach.attachments[&2].owner), (Phase::Creating, None));
    let file = b.file();
    assert_eq!((file.attachments[&2].phase, file.next_id), (Phase::Ready, 3));
}

#[tokio::test]
async fn a_lower_under_an_overlay_is_refused_and_force_unmounts_top_first() {
    let b = Bed::new();
    b.reg.create_mount(inline()).await.unwrap(); // mount 1, attachment 2
    b.reg.create_mount(inline()).await.unwrap(); // mount 3, attachment 4
    let n = b.mark();
    let o = b.reg.create_mount(overlay(&[3, 1])).await.unwrap();
    assert_eq!(o.id, Some(5));
    let managed = b.env.data_dir.join("overlays/5");
    let upper = managed.join("upper");
    assert_eq!(o.overlay.as_ref().unwrap().upperdir.as_deref(), Some(upper.to_str().unwrap()));
    assert_eq!(
        b.kernel.calls_since(n),
        [Call::MountOverlay { lower: vec![b.mp(3), b.mp(1)], upper: Some(upper.clone()), target: b.mp(5) }]
    );
    let at_mount = b.kernel.file_at(n).unwrap();
    let rec = &at_mount.mounts[&5];
    assert_eq!(
        (rec.phase, rec.lower.clone(), rec.managed_dir.clone()),
        (Phase::Creating, vec![3, 1], Some(managed.clone()))
    );
    assert_eq!(b.mount_ids().await, [(1, 1), (3, 1), (5, 0)]);
    // What the real step makes, so that the teardown's removal shows.
    std::fs::create_dir_all(&upper).unwrap();

    let before = b.file();
    let n = b.mark();
    let e = b.reg.delete_mount(1, false).await.unwrap_err();
    assert_eq!(e.kind, Kind::Conflict);
    assert!(e.message.contains("mount(s) [5]"), "{e}");
    let e = b.reg.delete_attach(2, false).await.unwrap_err();
    assert_eq!(e.kind, Kind::Conflict);
    assert!(b.kernel.calls_since(n).is_empty(), "nothing is unmounted");
    assert_eq!(b.file(), before);

    // With force: the overlay first, then the lower, then what the lower owned; the
    // other lower stays.
    let gone = b.reg.delete_mount(1, true).await.unwrap();
    assert_eq!((gone.id, gone.refs), (Some(1), 1));
    assert_eq!(b.kernel.calls_since(n), [unmount(b.mp(5)), unmount(b.mp(1)), detach(2, "/dev/loop0")]);
    let file = b.file();
    assert_eq!((keys(&file.mounts), keys(&file.attachments)), (vec![3], vec![4]));
    assert!(!managed.exists(), "the overlay's managed dir went with it");
    assert_eq!(b.mount_ids().await, [(3, 0)]);
}

#[tokio::test]
async fn forcing_an_attachment_takes_its_whole_chain_down_dependents_first() {
    let b = Bed::new();
    b.reg.create_attach(attach(loop_json())).await.unwrap(); // 1
    b.reg.create_mount(on(1)).await.unwrap(); // 2
    b.reg.create_mount(on(1)).await.unwrap(); // 3
    let ro = mount(json!({"kind": "overlay", "read_only": true, "overlay": {"lower": [3, 2]}}));
    b.reg.create_mount(ro).await.unwrap(); // 4
    // The bind's source is held open by the registry: the overlay's directory must exist.
    std::fs::create_dir_all(b.mp(4)).unwrap();
    b.reg.create_mount(mount(json!({"kind": "bind", "bind": {"mount_id": 4}}))).await.unwrap(); // 5
    assert_eq!(
        b.kernel.calls_since(2),
        [
            mount_squashfs("/dev/loop0", b.mp(2)),
            mount_squashfs("/dev/loop0", b.mp(3)),
            Call::MountOverlay { lower: vec![b.mp(3), b.mp(2)], upper: None, target: b.mp(4) },
            Call::MountBind { source: b.mp(4), target: b.mp(5), read_only: false },
        ]
    );
    assert_eq!(b.mount_ids().await, [(2, 1), (3, 1), (4, 1), (5, 0)]);
    assert_eq!(b.reg.attachments(&Filter::default()).await.unwrap()[0].refs, 2);

    let n = b.mark();
    let e = b.reg.delete_attach(1, false).await.unwrap_err();
    assert_eq!(e.kind, Kind::Conflict);
    assert!(e.message.contains("mount(s) [5, 4, 2, 3]"), "{e}");
    let e = b.reg.delete_mount(4, false).await.unwrap_err();
    assert!(e.message.contains("mount(s) [5]"), "{e}");
    assert!(b.kernel.calls_since(n).is_empty());

    b.reg.delete_attach(1, true).await.unwrap();
    assert_eq!(
        b.kernel.calls_since(n),
        [unmount(b.mp(5)), unmount(b.mp(4)), unmount(b.mp(2)), unmount(b.mp(3)), detach(1, "/dev/loop0")]
    );
    let file = b.file();
    assert!(file.mounts.is_empty() && file.attachments.is_empty(), "{file:?}");
}

#[tokio::test]
async fn a_pinned_mount_cannot_go_even_with_force() {
    let b = Bed::new();
    b.reg.create_mount(inline()).await.unwrap(); // mount 1, attachment 2
    b.reg.create_mount(overlay(&[1])).await.unwrap(); // 3
    assert_eq!(b.reg.pin(3, 9).await.unwrap(), b.mp(3));
    assert_eq!(b.file().pinned.into_iter().collect::<Vec<_>>(), [(3, 9)]);
    assert_eq!(b.mount_ids().await, [(1, 1), (3, 1)], "a pin counts as a ref");
    let e = b.reg.pin(3, 8).await.unwrap_err();
    assert_eq!((e.kind, e.field.as_deref()), (Kind::Invalid, Some("mount.id")));

    let before = b.file();
    let n = b.mark();
    for e in [
        b.reg.delete_mount(3, true).await.unwrap_err(),
        b.reg.delete_mount(1, true).await.unwrap_err(),
        b.reg.delete_attach(2, true).await.unwrap_err(),
    ] {
        assert_eq!(e.kind, Kind::Conflict);
        assert!(e.message.contains("mount 3 is the root of container 9"), "{e}");
    }
    assert!(b.kernel.calls_since(n).is_empty(), "nothing is unmounted");
    assert_eq!(b.file(), before);

    // Only its own container lets go of it.
    b.reg.unpin(3, 8).await.unwrap();
    assert_eq!(b.file().pinned.len(), 1);
    b.reg.unpin(3, 9).await.unwrap();
    assert!(b.file().pinned.is_empty());
    b.reg.delete_mount(1, true).await.unwrap();
    assert_eq!(b.kernel.calls_since(n), [unmount(b.mp(3)), unmount(b.mp(1)), detach(2, "/dev/loop0")]);
}

#[tokio::test]
async fn a_busy_unmount_keeps_the_record_and_answers_the_conflict() {
    let b = Bed::new();
    b.reg.create_mount(inline()).await.unwrap(); // mount 1, attachment 2
    b.reg.create_mount(overlay(&[1])).await.unwrap(); // 3
    b.kernel.busy(&b.mp(1));

    let n = b.mark();
    let e = b.reg.delete_mount(1, true).await.unwrap_err();
    assert_eq!(e, mounts::busy(&b.mp(1)));
    assert_eq!(e.kind, Kind::Conflict);
    // The overlay above went; the busy mount and its attachment stay, recorded ready.
    assert_eq!(b.kernel.calls_since(n), [unmount(b.mp(3)), unmount(b.mp(1))]);
    let file = b.file();
    assert_eq!((keys(&file.mounts), keys(&file.attachments)), (vec![1], vec![2]));
    assert_eq!((file.mounts[&1].phase, file.attachments[&2].phase), (Phase::Ready, Phase::Ready));
    assert_eq!(b.mount_ids().await, [(1, 0)]);

    // Still busy: the same answer, no detach.
    let n = b.mark();
    assert_eq!(b.reg.delete_mount(1, false).await.unwrap_err(), mounts::busy(&b.mp(1)));
    assert_eq!(b.kernel.calls_since(n), [unmount(b.mp(1))]);

    // Let go: the mount goes, and its attachment with it.
    b.kernel.heal();
    let n = b.mark();
    b.reg.delete_mount(1, false).await.unwrap();
    assert_eq!(b.kernel.calls_since(n), [unmount(b.mp(1)), detach(2, "/dev/loop0")]);
    let file = b.file();
    assert!(file.mounts.is_empty() && file.attachments.is_empty(), "{file:?}");
}

#[tokio::test]
async fn a_failed_detach_after_an_unmount_keeps_the_attachment_to_delete_later() {
    let b = Bed::new();
    b.reg.create_mount(inline()).await.unwrap(); // mount 1, attachment 2
    let refused = Error::os("detaching /dev/loop0", "device busy");
    b.kernel.fail_at(Step::Detach, Path::new("/dev/loop0"), refused.clone());
    let n = b.mark();
    assert_eq!(b.reg.delete_mount(1, false).await.unwrap_err(), refused);
    assert_eq!(b.kernel.calls_since(n), [unmount(b.mp(1)), detach(2, "/dev/loop0")]);
    let file = b.file();
    assert_eq!((keys(&file.mounts), keys(&file.attachments)), (vec![], vec![2]));
    assert_eq!(b.reg.attachments(&Filter::default()).await.unwrap()[0].refs, 0);

    b.kernel.heal();
    b.reg.delete_attach(2, false).await.unwrap();
    assert_eq!(b.kernel.calls().last(), Some(&detach(2, "/dev/loop0")));
    assert!(b.file().attachments.is_empty());
}

#[tokio::test]
async fn a_second_mount_on_an_inline_attachment_keeps_it_until_the_last_mount_goes() {
    let b = Bed::new();
    b.reg.create_mount(inline()).await.unwrap(); // mount 1, attachment 2
    b.reg.create_mount(on(2)).await.unwrap(); // 3
    assert_eq!(b.reg.attachments(&Filter::default()).await.unwrap()[0].refs, 2);

    // The owner goes first: the attachment is still mounted, so it stays, now the
    // other mount's (a record owned by a mount that is gone is undone at start-up).
    let n = b.mark();
    b.reg.delete_mount(1, false).await.unwrap();
    assert_eq!(b.kernel.calls_since(n), [unmount(b.mp(1))]);
    let file = b.file();
    assert_eq!((keys(&file.mounts), file.attachments[&2].owner), (vec![3], Some(3)));

    // The last mount takes it with it.
    let n = b.mark();
    b.reg.delete_mount(3, false).await.unwrap();
    assert_eq!(b.kernel.calls_since(n), [unmount(b.mp(3)), detach(2, "/dev/loop0")]);
    let file = b.file();
    assert!(file.mounts.is_empty() && file.attachments.is_empty(), "{file:?}");
}

#[tokio::test]
async fn a_reloaded_registry_sees_the_same_graph_and_ids_go_on() {
    let b = Bed::new();
    let named = |n: &str| attach(json!({"kind": "loop", "name": n, "read_only": true, "loop": {"path": IMAGE}}));
    b.reg.create_attach(named("base")).await.unwrap(); // 1
    b.reg.create_mount(on(1)).await.unwrap(); // 2
    b.reg.create_mount(overlay(&[2])).await.unwrap(); // 3
    b.reg.pin(3, 7).await.unwrap();

    // The file is what the registry holds.
    let file = b.file();
    assert_eq!(file, b.reg.inspect(|s| s.clone()).await);
    assert_eq!((file.next_id, keys(&file.attachments), keys(&file.mounts)), (4, vec![1], vec![2, 3]));
    assert!(file.mounts.values().all(|m| m.phase == Phase::Ready && m.mountpoint == b.mp(m.id)));

    let (reg, kernel) = b.reload();
    let all = Filter::default();
    assert_eq!(reg.attachments(&all).await.unwrap(), b.reg.attachments(&all).await.unwrap());
    assert_eq!(reg.mounts(&all).await.unwrap(), b.reg.mounts(&all).await.unwrap());
    let by_name = Filter { name: Some("base".into()), ..Filter::default() };
    assert_eq!(reg.attachments(&by_name).await.unwrap()[0].id, Some(1));

    // Names, ids, refs and pins carry over.
    let e = reg.create_attach(named("base")).await.unwrap_err();
    assert_eq!(e.kind, Kind::Conflict, "{e}");
    let a = reg.create_attach(attach(loop_json())).await.unwrap();
    assert_eq!(a.id, Some(4));
    assert_eq!(reg.delete_mount(2, false).await.unwrap_err().kind, Kind::Conflict);
    assert!(reg.delete_mount(3, true).await.unwrap_err().message.contains("container 7"));
    assert_eq!(kernel.calls(), [prepare(4), attach_call(4)]);

    // The teardown goes by the records the first registry wrote.
    reg.unpin(3, 7).await.unwrap();
    reg.delete_attach(1, true).await.unwrap();
    assert_eq!(kernel.calls_since(2), [unmount(b.mp(3)), unmount(b.mp(2)), detach(1, "/dev/loop0")]);
    let file = b.file();
    assert_eq!((file.next_id, keys(&file.attachments), keys(&file.mounts)), (5, vec![4], vec![]));
    assert!(file.pinned.is_empty());
    assert_eq!(b.kernel.calls().len(), 4, "the first registry's double saw none of it");
}

#[tokio::test]
async fn refused_requests_take_no_step_and_write_nothing() {
    let b = Bed::new();
    let cases = [
        (overlay(&[9]), "overlay.lower"),
        (overlay(&[]), "overlay.lower"),
        (on(9), "attach.attach_id"),
        (mount(json!({"kind": "attach", "attach": {"attach": loop_json(), "fs_type": "ntfs"}})), "attach.fs_type"),
        (
            mount(
                json!({"kind": "attach", "attach": {"attach": loop_json(), "fs_type": "ext4", "mount_options": ["suid"]}}),
            ),
            "attach.mount_options",
        ),
        (mount(json!({"kind": "attach", "attach": {"fs_type": "ext4"}})), "attach"),
        (mount(json!({"kind": "bind", "bind": {"mount_id": 9}})), "bind.mount_id"),
        (Mount { mountpoint: Some("/mnt".into()), ..inline() }, "mountpoint"),
    ];
    for (spec, field) in cases {
        let e = b.reg.create_mount(spec).await.unwrap_err();
        assert_eq!((e.kind, e.field.as_deref()), (Kind::Invalid, Some(field)), "{e}");
    }
    assert!(b.kernel.calls().is_empty());
    assert!(!b.file_exists(), "nothing was recorded");

    // With a lower in place: listed twice, and a bind path leaving its mount. (The
    // refused requests above used up ids: they are never reused.)
    let lower = b.reg.create_mount(inline()).await.unwrap().id.unwrap();
    std::fs::create_dir_all(b.mp(lower)).unwrap();
    let before = b.file();
    let n = b.mark();
    for (spec, field) in [
        (overlay(&[lower, lower]), "overlay.lower"),
        (mount(json!({"kind": "bind", "bind": {"mount_id": lower, "path": "../x"}})), "bind.path"),
    ] {
        let e = b.reg.create_mount(spec).await.unwrap_err();
        assert_eq!((e.kind, e.field.as_deref()), (Kind::Invalid, Some(field)), "{e}");
    }
    assert!(b.kernel.calls_since(n).is_empty());
    assert_eq!(b.file(), before);
}

#[tokio::test]
async fn a_mount_whose_ready_record_cannot_be_written_is_undone() {
    let b = Bed::new();
    // Right after the kernel mounts, the state file stops taking writes (a directory
    // where its temporary file goes).
    let tmp = StateFile::new(&state_dir(&b.env)).path().with_extension("json.tmp");
    let blocker = tmp.clone();
    b.kernel.then(Step::Mount, move || std::fs::create_dir(&blocker).unwrap());

    let n = b.mark();
    let err = b.reg.create_mount(inline()).await.unwrap_err();
    assert!(err.message.contains("writing"), "{err}");
    assert_eq!(
        b.kernel.calls_since(n),
        [prepare(2), attach_call(2), mount_squashfs("/dev/loop0", b.mp(1)), unmount(b.mp(1)), detach(2, "/dev/loop0")],
        "the mount and the attachment it made are undone"
    );
    assert!(b.reg.mounts(&Filter::default()).await.unwrap().is_empty());
    assert!(b.reg.attachments(&Filter::default()).await.unwrap().is_empty());

    // Writable again: the next save records the empty graph.
    std::fs::remove_dir(&tmp).unwrap();
    let m = b.reg.create_mount(inline()).await.unwrap();
    assert_eq!(keys(&b.file().mounts), vec![m.id.unwrap()]);
}

#[tokio::test]
async fn nothing_is_made_while_the_state_file_takes_no_writes() {
    let b = Bed::new();
    let tmp = StateFile::new(&state_dir(&b.env)).path().with_extension("json.tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let n = b.mark();
    assert!(b.reg.create_mount(inline()).await.unwrap_err().message.contains("writing"));
    assert!(b.reg.create_attach(attach(loop_json())).await.unwrap_err().message.contains("writing"));
    // The attachment's check opened its image (prepare); no device, no mount.
    assert!(b.kernel.calls_since(n).iter().all(|c| matches!(c, Call::Prepare { .. })), "{:?}", b.kernel.calls_since(n));
    assert!(b.reg.mounts(&Filter::default()).await.unwrap().is_empty());
    assert!(b.reg.attachments(&Filter::default()).await.unwrap().is_empty());
    std::fs::remove_dir(&tmp).unwrap();
    b.reg.create_mount(inline()).await.unwrap();
    assert_eq!(b.mount_ids().await.len(), 1, "names and records were not held by the failed calls");
}
