//! Striped locks by name: operations on the same key (or upload) take turns, without a
//! map of live names to grow and prune. Two names sharing a stripe only wait for each
//! other; that is rare with 256 stripes and never wrong.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Mutex, MutexGuard};

const STRIPES: usize = 256;

pub(crate) struct Stripes(Box<[Mutex<()>]>);

impl Stripes {
    pub(crate) fn new() -> Stripes {
        Stripes((0..STRIPES).map(|_| Mutex::new(())).collect())
    }

    pub(crate) fn lock(&self, name: &str) -> MutexGuard<'_, ()> {
        let mut hasher = DefaultHasher::new();
        name.hash(&mut hasher);
        let stripe = &self.0[(hasher.finish() % STRIPES as u64) as usize];
        // The lock guards no data, only turn-taking: a panic while holding it leaves
        // nothing inconsistent, so a poisoned lock is taken as is.
        stripe.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locked(stripes: &Stripes) -> usize {
        // Held, that is: a poisoned but free stripe does not count.
        stripes.0.iter().filter(|m| matches!(m.try_lock(), Err(std::sync::TryLockError::WouldBlock))).count()
    }

    #[test]
    fn a_name_holds_one_stripe_until_the_guard_drops() {
        let stripes = Stripes::new();
        let held = stripes.lock("a/b");
        assert_eq!(locked(&stripes), 1);
        drop(held);
        assert_eq!(locked(&stripes), 0);
    }

    #[test]
    fn a_panic_while_holding_does_not_lock_the_name_out() {
        let stripes = Stripes::new();
        std::thread::scope(|s| {
            let holder = s.spawn(|| {
                let _held = stripes.lock("k");
                panic!("while holding");
            });
            assert!(holder.join().is_err());
        });
        drop(stripes.lock("k"));
        assert_eq!(locked(&stripes), 0);
    }
}
