//! Crash hooks for the no-orphans tests: with `TANKD_FAULT=<step>` in its environment,
//! tankd aborts (as kill -9 or a power cut would end it) when it reaches that step.
//! Every step sits between a change to the kernel or ZFS and the record of it, where
//! a crash is the hardest to recover from; the tests kill tankd there, start it again,
//! and show nothing is left that tankd does not manage.
//!
//! Unset (as in production) a hook costs one comparison against a value read once.

use std::sync::OnceLock;

/// Every step a test can crash at, with where it is. A hook names one of these.
pub const STEPS: &[(&str, &str)] = &[
    ("after-attach", "a mount's inline attachment is made and recorded creating; the mount is not"),
    (
        "attach-made",
        "an attachment's device exists (loop bound, krbd mapped, rbd-fuse running); its record says creating",
    ),
    ("attach-detached", "an attachment's device is gone; its record still says ready"),
    ("mount-made", "a mount is in the kernel; its record says creating"),
    ("mount-unmounted", "a mount is out of the kernel; its record still says ready"),
    ("container-pinned", "a new container's root mount is pinned; the container is not recorded"),
    ("container-start", "the shim runs and PID 1 is in its cgroup; the record does not say running"),
    ("container-started", "the record says running; PID 1 has not been let go"),
    ("container-stop", "the stop signal is sent; the record says stopping"),
    ("container-removed", "a container's record is gone; its root is still pinned and its directory there"),
    ("guest-disk-made", "one guest disk's zvol exists; the others of the request do not"),
    ("archive-object-replicated", "an archive's object is on the target and checked; its manifest is not"),
    ("restore-cloned", "a restore's clone exists; the live dataset is untouched"),
    ("restore-set-aside", "the live dataset is renamed aside; the clone does not have its name yet"),
    (
        "restore-swapped",
        "the clone has the live name and mountpoint; its children are not settled, nothing is promoted",
    ),
];

fn armed() -> Option<&'static str> {
    static FAULT: OnceLock<Option<String>> = OnceLock::new();
    FAULT.get_or_init(|| std::env::var("TANKD_FAULT").ok().filter(|f| !f.is_empty())).as_deref()
}

/// With `TANKD_FAULT_AFTER=<n>`, the hook lets `n` passes go by first (a crash half-way
/// through a loop).
fn passes_left() -> &'static std::sync::atomic::AtomicU64 {
    static LEFT: OnceLock<std::sync::atomic::AtomicU64> = OnceLock::new();
    LEFT.get_or_init(|| {
        let n = std::env::var("TANKD_FAULT_AFTER").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
        std::sync::atomic::AtomicU64::new(n)
    })
}

/// Abort here if `TANKD_FAULT` names `step`.
pub fn point(step: &'static str) {
    debug_assert!(STEPS.iter().any(|(s, _)| *s == step), "{step} is not in fault::STEPS");
    if armed() == Some(step) {
        use std::sync::atomic::Ordering;
        if passes_left().fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return;
        }
        tracing::error!(step, "TANKD_FAULT: aborting here as a crash would");
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_step_is_hooked_in_the_code() {
        // The list is the contract the tests and docs use: each step must appear as a
        // `fault::point("…")` somewhere in the agent's sources.
        let src = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
        let mut text = String::new();
        let mut dirs = vec![std::path::PathBuf::from(src)];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") && !p.ends_with("fault.rs") {
                    text.push_str(&std::fs::read_to_string(p).unwrap());
                }
            }
        }
        for (step, _) in super::STEPS {
            assert!(text.contains(&format!("fault::point(\"{step}\")")), "{step} has no hook");
        }
    }
}
