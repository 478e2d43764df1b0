//! Benchmark: the shim against the same `zfs` commands typed in a shell loop.
//! Run by `scripts/bench/shim` inside the test VM; prints one line per measurement and
//! the worst ratio last.
//!
//!   bench <root-dataset> <snapshots: 2000> <rounds>

use std::process::Command;
use std::time::{Duration, Instant};

use zfs_sys_shim::{DatasetName, DatasetType, ListQuery, Prop, Roots, Zfs};

fn shell(script: &str) -> Duration {
    let started = Instant::now();
    let st = Command::new("bash").arg("-c").arg(script).status().expect("bash");
    assert!(st.success(), "shell loop failed: {script}");
    started.elapsed()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let root: DatasetName = args[1].parse().expect("root dataset");
    let snapshots: usize = args[2].parse().expect("snapshot count");
    let rounds: usize = args[3].parse().expect("rounds");
    let zfs = Zfs::new(Roots::new(vec![root.clone()]));

    // Setup: `snapshots` snapshots over 40 datasets, one multi-dataset `zfs snapshot`
    // per generation so setup takes ~100 commands, not 2,000.
    let per = snapshots / 40;
    let datasets: Vec<DatasetName> = (0..40).map(|i| root.join(&format!("list/d{i}")).unwrap()).collect();
    for ds in &datasets {
        zfs.create_filesystem(ds, true, &[]).await.unwrap();
    }
    let started = Instant::now();
    for g in 0..per {
        let snaps: Vec<_> = datasets.iter().map(|d| d.snapshot(&format!("g{g}")).unwrap()).collect();
        zfs.snapshot(&snaps, false, &[]).await.unwrap();
    }
    eprintln!("setup: {} snapshots in {:.1}s", per * 40, started.elapsed().as_secs_f64());

    // 1. List every snapshot with the properties ListSnapshots needs.
    let list_root = root.join("list").unwrap();
    let props = [Prop::Used, Prop::Written, Prop::Referenced, Prop::Createtxg];
    let query = ListQuery::recursive(list_root.clone(), DatasetType::Snapshot, &props);
    let cli = format!(
        "zfs list -H -p -o name,type,used,written,referenced,createtxg -r -t snapshot -s createtxg {list_root} >/dev/null"
    );
    let (mut shim_t, mut cli_t) = (Duration::ZERO, Duration::ZERO);
    // A listing of 2,000 snapshots with `written` costs ~90 s under TCG: one round of
    // two listings per side is enough to compare (both sides alternate).
    let per_round = 2;
    for _ in 0..1 {
        let started = Instant::now();
        for _ in 0..per_round {
            let rows = zfs.list(&query).await.unwrap();
            assert_eq!(rows.len(), per * 40);
        }
        shim_t += started.elapsed();
        cli_t += shell(&format!("for i in $(seq {per_round}); do {cli}; done"));
        eprintln!("list round: shim {:.2}s, shell {:.2}s", shim_t.as_secs_f64(), cli_t.as_secs_f64());
    }
    let list_ratio = shim_t.as_secs_f64() / cli_t.as_secs_f64();
    println!(
        "list {} snapshots x{}: shim {:.3}s, shell {:.3}s, ratio {list_ratio:.3}",
        per * 40,
        per_round,
        shim_t.as_secs_f64(),
        cli_t.as_secs_f64()
    );

    // 2. create / snapshot / clone, the guest-disk pattern.
    let (mut shim_t, mut cli_t) = (Duration::ZERO, Duration::ZERO);
    let steps = 3;
    for r in 0..rounds {
        let started = Instant::now();
        for i in 0..steps {
            let fs = root.join(&format!("seq/shim{r}x{i}")).unwrap();
            zfs.create_filesystem(&fs, true, &[]).await.unwrap();
            let snap = fs.snapshot("s").unwrap();
            zfs.snapshot(std::slice::from_ref(&snap), false, &[]).await.unwrap();
            zfs.clone_snapshot(&snap, &root.join(&format!("seq/shim{r}x{i}c")).unwrap(), false, &[]).await.unwrap();
        }
        shim_t += started.elapsed();
        cli_t += shell(&format!(
            "for i in $(seq {steps}); do fs={root}/seq/cli{r}x$i; zfs create -p $fs && zfs snapshot $fs@s && zfs clone $fs@s ${{fs}}c || exit 1; done"
        ));
    }
    let seq_ratio = shim_t.as_secs_f64() / cli_t.as_secs_f64();
    println!(
        "create/snapshot/clone x{}: shim {:.3}s, shell {:.3}s, ratio {seq_ratio:.3}",
        rounds * steps,
        shim_t.as_secs_f64(),
        cli_t.as_secs_f64()
    );
    println!("worst {:.3}", list_ratio.max(seq_ratio));
}
