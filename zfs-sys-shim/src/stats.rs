//! Counts and durations of the commands the shim has run, per program and subcommand,
//! for the agent's metrics. Process-wide: one agent, one set of counters.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct CommandStat {
    /// `zfs` or `zpool`.
    pub program: String,
    /// The subcommand: `list`, `create`, `send`, ...
    pub verb: String,
    pub ok: u64,
    pub failed: u64,
    /// Wall time of all runs, successful or not.
    pub seconds: f64,
}

#[derive(Default, Clone, Copy)]
struct Counts {
    ok: u64,
    failed: u64,
    seconds: f64,
}

static STATS: Mutex<BTreeMap<(String, String), Counts>> = Mutex::new(BTreeMap::new());

pub(crate) fn record(program: &str, verb: &str, ok: bool, elapsed: Duration) {
    let mut stats = STATS.lock().unwrap_or_else(|p| p.into_inner());
    let c = stats.entry((program.to_owned(), verb.to_owned())).or_default();
    if ok {
        c.ok += 1;
    } else {
        c.failed += 1;
    }
    c.seconds += elapsed.as_secs_f64();
}

/// Every (program, subcommand) run so far, sorted.
pub fn command_stats() -> Vec<CommandStat> {
    let stats = STATS.lock().unwrap_or_else(|p| p.into_inner());
    stats
        .iter()
        .map(|((program, verb), c)| CommandStat {
            program: program.clone(),
            verb: verb.clone(),
            ok: c.ok,
            failed: c.failed,
            seconds: c.seconds,
        })
        .collect()
}
