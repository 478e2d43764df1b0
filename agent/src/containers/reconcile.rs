//! Start-up, after re-adoption: what a crash between a kernel step and its record can
//! leave, put back in line with the records. Each case has a `TANKD_FAULT` step and a
//! test (`agent/tests/faults.rs`).
//! - pins: exactly one per container, on its root (`container-pinned`,
//!   `container-removed`);
//! - directories under `containers/` that no record names (`container-removed`);
//! - cgroups of containers that do not run, or that no record names
//!   (`container-start`: the shim got no go and ended, its group stayed).

use super::store::Containers;

impl Containers {
    pub(super) async fn reconcile(&self) {
        let (roots, ids, idle) = {
            let st = self.inner.lock().await;
            let roots: Vec<(u64, u64)> = st.containers.iter().map(|(id, r)| (r.spec.mount.id, *id)).collect();
            let ids: Vec<u64> = st.containers.keys().copied().collect();
            let idle: Vec<u64> = st.containers.iter().filter(|(_, r)| !r.is_live()).map(|(id, _)| *id).collect();
            (roots, ids, idle)
        };
        if let Err(e) = self.mounts.reconcile_pins(&roots).await {
            tracing::error!(error = %e.message, "could not reconcile container roots with their pins");
        }
        for (id, path) in numbered(&self.dir) {
            if !ids.contains(&id) {
                tracing::warn!(path = %path.display(), "removing the directory of a container that does not exist");
                let _ = std::fs::remove_dir_all(&path);
            }
        }
        let mut stale: Vec<u64> = idle;
        for dir in super::cgroup::parents(&self.cgroup_fs, &self.cgroup_parent) {
            stale.extend(numbered(&dir).into_iter().map(|(id, _)| id).filter(|id| !ids.contains(id)));
        }
        stale.sort_unstable();
        stale.dedup();
        for id in stale {
            let groups = super::cgroup::existing(&self.cgroup_fs, &self.cgroup_parent, id);
            if !groups.is_empty() {
                tracing::warn!(id, "removing the cgroup of a container that does not run");
                crate::attach::blocking(move || super::cgroup::remove(&groups)).await;
            }
        }
    }
}

/// Entries of `dir` named by a number: (number, path).
fn numbered(dir: &std::path::Path) -> Vec<(u64, std::path::PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path())))
        .collect()
}
