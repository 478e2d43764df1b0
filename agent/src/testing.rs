//! Test seams for host-tier unit tests: a recording `zfs` double (a script the shim
//! runs through its binary override, `Zfs::with_binaries`) and an [`AppState`] built by
//! [`crate::assemble`] on it, so routes can be driven in-process with `oneshot`.
//!
//! The double answers what a rule says and records every call; it knows nothing of
//! ZFS. It is for tankd's own logic (what is undone after a failure, which routes
//! refuse whom); anything about ZFS's behaviour is tested on kernel ZFS in the VM.

use std::path::PathBuf;

use zfs_sys_shim::{DatasetName, Roots, Zfs};

use crate::config::{Config, Layer};
use crate::state::AppState;

/// One answer of the double: when the call's arguments (joined by spaces) match the
/// bash `case` pattern, print `output` (to stdout on exit 0, stderr otherwise) and
/// exit with `code`. The first matching rule answers; no match is exit 0, no output.
pub struct Rule {
    pub pattern: &'static str,
    pub code: i32,
    pub output: String,
    /// `output` is a bash command list run in place of printing it (it sees `$CALLS`,
    /// the file of calls so far, to answer from what earlier calls did).
    pub shell: bool,
}

pub fn rule(pattern: &'static str, code: i32, output: impl Into<String>) -> Rule {
    Rule { pattern, code, output: output.into(), shell: false }
}

/// A rule answered by a bash command list.
pub fn answer(pattern: &'static str, commands: impl Into<String>) -> Rule {
    Rule { pattern, code: 0, output: commands.into(), shell: true }
}

pub struct FakeZfs {
    pub dir: tempfile::TempDir,
    pub zfs: Zfs,
}

impl FakeZfs {
    /// A double for `zfs` and `zpool`, scoped to `root`.
    pub fn new(root: &str, rules: Vec<Rule>) -> FakeZfs {
        let dir = tempfile::tempdir().expect("tempdir");
        let calls = dir.path().join("calls");
        let mut script =
            format!("#!/bin/bash\nCALLS='{}'\nprintf '%s\\n' \"$*\" >> \"$CALLS\"\ncase \"$*\" in\n", calls.display());
        for (n, r) in rules.iter().enumerate() {
            if r.shell {
                script.push_str(&format!("  {}) {}; exit {};;\n", r.pattern, r.output, r.code));
                continue;
            }
            let out = dir.path().join(format!("rule-{n}"));
            std::fs::write(&out, &r.output).expect("rule output");
            let to = if r.code == 0 { "" } else { " >&2" };
            script.push_str(&format!("  {}) /bin/cat '{}'{to}; exit {};;\n", r.pattern, out.display(), r.code));
        }
        // Unless a rule says otherwise, the node is laid out already: tankd's start lists
        // the root's children to learn which of its parents it must make.
        script.push_str(&format!(
            "  \"list -H -p -o name,type -d 1 -t filesystem -s createtxg {root}\") \
             printf '{root}\\tfilesystem\\n'; for c in images volumes services prerestore; do \
             printf '{root}/%s\\tfilesystem\\n' \"$c\"; done; exit 0;;\n"
        ));
        script.push_str("esac\nexit 0\n");
        // The script is written under another name and installed by `install(1)`: a write
        // fd open in this multi-threaded test process is inherited by a child another test
        // forks meanwhile, and exec'ing the file while that child holds it fails (ETXTBSY).
        let source = dir.path().join("zfs.script");
        std::fs::write(&source, script).expect("script");
        let bin = dir.path().join("zfs");
        let installed = std::process::Command::new("install")
            .args(["-m", "0755"])
            .arg(&source)
            .arg(&bin)
            .status()
            .expect("install");
        assert!(installed.success(), "install {}", bin.display());
        let root: DatasetName = root.parse().expect("root");
        let zfs = Zfs::with_binaries(Roots::new(vec![root]), bin.clone(), bin);
        FakeZfs { dir, zfs }
    }

    /// Every call so far, one line of arguments each.
    pub fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("calls")).unwrap_or_default().lines().map(str::to_owned).collect()
    }

    /// The calls whose arguments start with `verb` (`destroy`, `create`).
    pub fn calls_of(&self, verb: &str) -> Vec<String> {
        self.calls().into_iter().filter(|c| c.split(' ').next() == Some(verb)).collect()
    }
}

/// The dataset capabilities' handle on the double (data, and the image spool, under
/// `data_dir`).
pub fn store(fake: &FakeZfs, data_dir: PathBuf) -> crate::store::Store {
    crate::store::Store::new(&config(data_dir, "unused-token-0123456789abcdef"), fake.zfs.clone())
}

/// A node's configuration for an in-process test: data under `data_dir`, the dataset
/// root `tank/tankd`, the given API token, ZFS on (through the double).
pub fn config(data_dir: PathBuf, token: &str) -> Config {
    let flags = Layer {
        data_dir: Some(data_dir),
        pool: Some("tank".into()),
        dataset_root: Some("tank/tankd".into()),
        api_token: Some(token.into()),
        zfs: Some(true),
        ..Layer::default()
    };
    Config::resolve(Layer::default(), Layer::default(), flags).expect("test config")
}

/// The whole agent's state on the double, as `tankd` assembles it at start.
pub async fn state(fake: &FakeZfs, data_dir: PathBuf, token: &str) -> AppState {
    let config = config(data_dir, token);
    crate::assemble(config, fake.zfs.clone(), Some("a test master secret of at least 32 chars".into()))
        .await
        .expect("assemble")
}
