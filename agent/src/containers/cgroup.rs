//! Resource limits and the device policy through the host's cgroup hierarchy: one group
//! per container, `tankd/<id>`, on cgroup v2 (unified, modern hosts) or in the v1
//! devices, memory, pids and cpu hierarchies (this project's CI hosts). Every container
//! gets one, limits or not, for its device policy (`devices`). The container's PID 1
//! joins before it execs.

use std::path::{Path, PathBuf};

use rpc_schema::containers::Limits;

use crate::error::{Error, Result};

/// Where the limits live for one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Groups {
    V2(PathBuf),
    /// (controller, directory) for each v1 controller used.
    V1(Vec<(&'static str, PathBuf)>),
}

pub fn check(l: &Limits) -> Result<()> {
    if let Some(m) = l.memory
        && !(4 << 20..=1 << 50).contains(&m)
    {
        return Err(Error::invalid("limits.memory", "between 4 MiB and 1 PiB (bytes)"));
    }
    if let Some(p) = l.pids
        && !(1..=4_194_304).contains(&p)
    {
        return Err(Error::invalid("limits.pids", "between 1 and 4194304"));
    }
    if let Some(w) = l.cpu_weight
        && !(1..=10_000).contains(&w)
    {
        return Err(Error::invalid("limits.cpu_weight", "between 1 and 10000"));
    }
    Ok(())
}

fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(|e| Error::os(format!("writing {value:?} to {}", path.display()), e))
}

/// v2 weight (1–10000, default 100) as v1 shares (default 1024).
pub fn shares(weight: u64) -> u64 {
    (weight * 1024 / 100).clamp(2, 262_144)
}

/// The parent group of one tankd's containers: `tankd` for the default data dir, else
/// `tankd-<hash of the data dir>`, so that two tankds on one host (tests, `scripts/try`
/// beside a service) never share, or remove, each other's groups.
pub fn parent_for(data_dir: &Path) -> String {
    use sha2::{Digest, Sha256};
    if data_dir == Path::new("/var/lib/tankd") {
        return "tankd".into();
    }
    let digest = Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
    format!("tankd-{}", &hex::encode(digest)[..12])
}

/// Which cgroup version a group is on, for the device policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// Make the groups, set the limits, and apply `devices` (in tankd, `devices::apply`) to
/// the group that holds the device policy.
pub fn create(
    fs: &Path,
    parent: &str,
    id: u64,
    l: &Limits,
    devices: impl Fn(Version, &Path) -> std::io::Result<()>,
) -> Result<Groups> {
    if is_v2(fs) {
        let parent = fs.join(parent);
        std::fs::create_dir_all(&parent).map_err(|e| Error::os(format!("creating {}", parent.display()), e))?;
        // Controllers must be enabled on the way down for the leaf to have them.
        for dir in [fs, parent.as_path()] {
            let _ = std::fs::write(dir.join("cgroup.subtree_control"), "+memory +pids +cpu");
        }
        let dir = parent.join(id.to_string());
        std::fs::create_dir_all(&dir).map_err(|e| Error::os(format!("creating {}", dir.display()), e))?;
        let set = || -> Result<()> {
            if let Some(m) = l.memory {
                write(&dir.join("memory.max"), &m.to_string())?;
                let _ = std::fs::write(dir.join("memory.swap.max"), "0");
            }
            if let Some(p) = l.pids {
                write(&dir.join("pids.max"), &p.to_string())?;
            }
            if let Some(w) = l.cpu_weight {
                write(&dir.join("cpu.weight"), &w.to_string())?;
            }
            devices(Version::V2, &dir).map_err(|e| Error::os(format!("the device policy of {}", dir.display()), e))
        };
        return match set() {
            Ok(()) => Ok(Groups::V2(dir)),
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                Err(e)
            }
        };
    }
    let mut made = Vec::new();
    // The device policy's group first: no container runs without one.
    let dir = fs.join("devices").join(parent).join(id.to_string());
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::os(format!("creating {} (is the devices controller mounted?)", dir.display()), e))?;
    made.push(("devices", dir.clone()));
    if let Err(e) = devices(Version::V1, &dir) {
        remove(&Groups::V1(made));
        return Err(Error::os(format!("the device policy of {}", dir.display()), e));
    }
    let wanted: [(&'static str, Option<(&str, String)>); 3] = [
        ("memory", l.memory.map(|m| ("memory.limit_in_bytes", m.to_string()))),
        ("pids", l.pids.map(|p| ("pids.max", p.to_string()))),
        ("cpu", l.cpu_weight.map(|w| ("cpu.shares", shares(w).to_string()))),
    ];
    for (controller, setting) in wanted {
        let Some((file, value)) = setting else { continue };
        let dir = fs.join(controller).join(parent).join(id.to_string());
        let res = std::fs::create_dir_all(&dir)
            .map_err(|e| Error::os(format!("creating {} (is the {controller} controller mounted?)", dir.display()), e))
            .and_then(|_| {
                made.push((controller, dir.clone()));
                write(&dir.join(file), &value)
            });
        if let Err(e) = res {
            remove(&Groups::V1(made));
            return Err(e);
        }
    }
    Ok(Groups::V1(made))
}

/// Put a process in the groups.
pub fn join(groups: &Groups, pid: i32) -> Result<()> {
    let dirs: Vec<&PathBuf> = match groups {
        Groups::V2(d) => vec![d],
        Groups::V1(list) => list.iter().map(|(_, d)| d).collect(),
    };
    for d in dirs {
        write(&d.join("cgroup.procs"), &pid.to_string())?;
    }
    Ok(())
}

/// Remove the groups once their processes are gone.
pub fn remove(groups: &Groups) {
    let dirs: Vec<&PathBuf> = match groups {
        Groups::V2(d) => vec![d],
        Groups::V1(list) => list.iter().map(|(_, d)| d).collect(),
    };
    for d in dirs {
        // When PID 1 dies the kernel kills the rest of its pid namespace; until they
        // are gone the group is busy.
        let mut tries = 0;
        loop {
            match std::fs::remove_dir(d) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => {
                    tracing::warn!(dir = %d.display(), error = %e, "could not remove a container's cgroup");
                    break;
                }
            }
        }
    }
}

/// The v1 hierarchies a container's groups can be in: its device policy's and its limits'.
const V1_CONTROLLERS: [&str; 4] = ["devices", "memory", "pids", "cpu"];

/// Whether `fs` is the unified (v2) hierarchy.
fn is_v2(fs: &Path) -> bool {
    fs.join("cgroup.controllers").exists()
}

/// This tankd's parent groups (one on v2, one per controller on v1) that exist.
pub fn parents(fs: &Path, parent: &str) -> Vec<PathBuf> {
    if is_v2(fs) {
        return vec![fs.join(parent)];
    }
    V1_CONTROLLERS.into_iter().map(|c| fs.join(c).join(parent)).filter(|d| d.exists()).collect()
}

impl Groups {
    /// No directory of these groups exists.
    pub fn is_empty(&self) -> bool {
        match self {
            Groups::V2(d) => !d.exists(),
            Groups::V1(list) => list.is_empty(),
        }
    }
}

/// The groups a container's limits would use, for removal after a restart.
pub fn existing(fs: &Path, parent: &str, id: u64) -> Groups {
    if is_v2(fs) {
        return Groups::V2(fs.join(parent).join(id.to_string()));
    }
    Groups::V1(
        V1_CONTROLLERS
            .into_iter()
            .map(|c| (c, fs.join(c).join(parent).join(id.to_string())))
            .filter(|(_, d)| d.exists())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked_and_weights_map_to_shares() {
        assert!(check(&Limits { memory: Some(1 << 20), ..Default::default() }).is_err());
        assert!(check(&Limits { pids: Some(0), ..Default::default() }).is_err());
        assert!(check(&Limits { cpu_weight: Some(10_001), ..Default::default() }).is_err());
        assert!(check(&Limits { memory: Some(64 << 20), pids: Some(64), cpu_weight: Some(100) }).is_ok());
        assert_eq!(shares(100), 1024);
        assert_eq!(shares(1), 10);
        assert_eq!(shares(10_000), 102_400);
    }

    #[test]
    fn v1_and_v2_layouts() {
        let v2 = tempfile::tempdir().unwrap();
        std::fs::write(v2.path().join("cgroup.controllers"), "memory pids cpu\n").unwrap();
        let asked = std::sync::Mutex::new(Vec::new());
        let record = |v: Version, d: &Path| {
            asked.lock().unwrap().push((v, d.to_path_buf()));
            Ok(())
        };
        let g =
            create(v2.path(), "tankd", 7, &Limits { memory: Some(64 << 20), pids: Some(10), cpu_weight: None }, record)
                .unwrap();
        let dir = v2.path().join("tankd/7");
        assert_eq!(g, Groups::V2(dir.clone()));
        assert_eq!(std::fs::read_to_string(dir.join("memory.max")).unwrap(), (64u64 << 20).to_string());
        assert_eq!(std::fs::read_to_string(dir.join("pids.max")).unwrap(), "10");
        assert_eq!(asked.lock().unwrap().pop(), Some((Version::V2, dir.clone())), "the device policy is applied");

        let v1 = tempfile::tempdir().unwrap();
        let g =
            create(v1.path(), "tankd", 3, &Limits { memory: None, pids: None, cpu_weight: Some(200) }, record).unwrap();
        let cpu = v1.path().join("cpu/tankd/3");
        let devices = v1.path().join("devices/tankd/3");
        assert_eq!(g, Groups::V1(vec![("devices", devices.clone()), ("cpu", cpu.clone())]));
        assert_eq!(asked.lock().unwrap().pop(), Some((Version::V1, devices)), "the device policy is applied");

        // A policy that cannot be applied: no group is left behind.
        let refused = create(v1.path(), "tankd", 4, &Limits::default(), |_, _| Err(std::io::Error::other("no")));
        assert!(refused.is_err());
        assert!(!v1.path().join("devices/tankd/4").exists());
        assert_eq!(std::fs::read_to_string(cpu.join("cpu.shares")).unwrap(), "2048");
        assert_eq!(existing(v1.path(), "tankd", 3), g);
    }
}
