//! Reading: `zfs list` and `zfs get`, always `-H -p` (tab-separated, exact numbers) and
//! always scoped to a root with `-r` or `-d`: listing a whole pool is what makes peers slow.

use std::collections::BTreeMap;

use crate::command::Invocation;
use crate::name::{DatasetName, UserProp, ZfsName};
use crate::{Error, Zfs};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetType {
    Filesystem,
    Volume,
    Snapshot,
    Bookmark,
}

impl DatasetType {
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetType::Filesystem => "filesystem",
            DatasetType::Volume => "volume",
            DatasetType::Snapshot => "snapshot",
            DatasetType::Bookmark => "bookmark",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "filesystem" => DatasetType::Filesystem,
            "volume" => DatasetType::Volume,
            "snapshot" => DatasetType::Snapshot,
            "bookmark" => DatasetType::Bookmark,
            _ => return None,
        })
    }
}

/// A property tankd reads. Native ones parse into typed fields of [`Dataset`];
/// user properties land in [`Dataset::user`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Prop {
    Used,
    Available,
    Referenced,
    Written,
    Volsize,
    Volblocksize,
    Creation,
    Createtxg,
    Guid,
    Origin,
    Compression,
    Mountpoint,
    Mounted,
    /// `on`, `off` or `noauto`.
    Canmount,
    ReceiveResumeToken,
    /// Number of user holds on a snapshot.
    Userrefs,
    Quota,
    Refquota,
    /// `off`, or the cipher (`aes-256-gcm`, ...) of a natively encrypted dataset.
    Encryption,
    User(UserProp),
}

impl Prop {
    pub fn name(&self) -> &str {
        match self {
            Prop::Used => "used",
            Prop::Available => "available",
            Prop::Referenced => "referenced",
            Prop::Written => "written",
            Prop::Volsize => "volsize",
            Prop::Volblocksize => "volblocksize",
            Prop::Creation => "creation",
            Prop::Createtxg => "createtxg",
            Prop::Guid => "guid",
            Prop::Origin => "origin",
            Prop::Compression => "compression",
            Prop::Mountpoint => "mountpoint",
            Prop::Mounted => "mounted",
            Prop::Canmount => "canmount",
            Prop::ReceiveResumeToken => "receive_resume_token",
            Prop::Userrefs => "userrefs",
            Prop::Quota => "quota",
            Prop::Refquota => "refquota",
            Prop::Encryption => "encryption",
            Prop::User(p) => p.as_str(),
        }
    }

    pub fn user(name: &str) -> Result<Prop, Error> {
        Ok(Prop::User(name.parse()?))
    }
}

/// One row of `zfs list`/`zfs get`. Fields not asked for, and `-` values, are `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Dataset {
    pub name: String,
    pub kind: Option<DatasetType>,
    pub used: Option<u64>,
    pub available: Option<u64>,
    pub referenced: Option<u64>,
    pub written: Option<u64>,
    pub volsize: Option<u64>,
    pub volblocksize: Option<u64>,
    /// Seconds since the epoch.
    pub creation: Option<u64>,
    pub createtxg: Option<u64>,
    pub guid: Option<u64>,
    pub origin: Option<String>,
    pub compression: Option<String>,
    pub mountpoint: Option<String>,
    pub mounted: Option<bool>,
    pub canmount: Option<String>,
    pub receive_resume_token: Option<String>,
    pub userrefs: Option<u64>,
    /// Bytes; `None` when unset (ZFS reports 0 for "no quota").
    pub quota: Option<u64>,
    pub refquota: Option<u64>,
    /// `None` when not asked for or `off`; else the cipher.
    pub encryption: Option<String>,
    pub user: BTreeMap<String, String>,
}

impl Dataset {
    fn set(&mut self, prop: &Prop, raw: &str, command: &str) -> Result<(), Error> {
        if raw == "-" {
            return Ok(());
        }
        let num = || {
            raw.parse::<u64>().map_err(|_| Error::Parse {
                command: command.to_owned(),
                reason: format!("{} is not a number: {raw:?}", prop.name()),
            })
        };
        let text = || Some(raw.to_owned());
        match prop {
            Prop::Used => self.used = Some(num()?),
            Prop::Available => self.available = Some(num()?),
            Prop::Referenced => self.referenced = Some(num()?),
            Prop::Written => self.written = Some(num()?),
            Prop::Volsize => self.volsize = Some(num()?),
            Prop::Volblocksize => self.volblocksize = Some(num()?),
            Prop::Creation => self.creation = Some(num()?),
            Prop::Createtxg => self.createtxg = Some(num()?),
            Prop::Guid => self.guid = Some(num()?),
            Prop::Origin => self.origin = text(),
            Prop::Compression => self.compression = text(),
            Prop::Mountpoint => self.mountpoint = text(),
            Prop::Mounted => self.mounted = Some(raw == "yes"),
            Prop::Canmount => self.canmount = text(),
            Prop::ReceiveResumeToken => self.receive_resume_token = text(),
            Prop::Userrefs => self.userrefs = Some(num()?),
            Prop::Quota => self.quota = Some(num()?).filter(|q| *q > 0),
            Prop::Refquota => self.refquota = Some(num()?).filter(|q| *q > 0),
            Prop::Encryption => self.encryption = text().filter(|e| e != "off"),
            Prop::User(p) => {
                self.user.insert(p.as_str().to_owned(), raw.to_owned());
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// `-r`: every descendant.
    Recursive,
    /// `-d N`: at most N levels below the root (snapshots of the root are depth 1).
    Max(u32),
}

/// What to list: one type (or several) under one root, with the properties to read.
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub root: DatasetName,
    pub types: Vec<DatasetType>,
    pub depth: Depth,
    pub props: Vec<Prop>,
}

impl ListQuery {
    pub fn recursive(root: DatasetName, kind: DatasetType, props: &[Prop]) -> Self {
        ListQuery { root, types: vec![kind], depth: Depth::Recursive, props: props.to_vec() }
    }

    pub fn depth(mut self, depth: Depth) -> Self {
        self.depth = depth;
        self
    }

    pub fn types(mut self, types: &[DatasetType]) -> Self {
        self.types = types.to_vec();
        self
    }

    /// The `-o` list: name and type first, then what was asked for. This list and
    /// [`parse_list`] are the two halves of one contract.
    fn columns(&self) -> String {
        std::iter::once("name")
            .chain(std::iter::once("type"))
            .chain(self.props.iter().map(Prop::name))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Parse `zfs list -H -p -o name,type,<props>` output.
pub(crate) fn parse_list(stdout: &str, props: &[Prop], command: &str) -> Result<Vec<Dataset>, Error> {
    let mut rows = Vec::new();
    for line in stdout.lines().filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() != props.len() + 2 {
            return Err(Error::Parse {
                command: command.to_owned(),
                reason: format!("expected {} columns, got {}: {line:?}", props.len() + 2, fields.len()),
            });
        }
        let mut ds = Dataset { name: fields[0].to_owned(), ..Default::default() };
        ds.kind = DatasetType::parse(fields[1]);
        if ds.kind.is_none() {
            return Err(Error::Parse { command: command.to_owned(), reason: format!("unknown type {:?}", fields[1]) });
        }
        for (prop, raw) in props.iter().zip(&fields[2..]) {
            ds.set(prop, raw, command)?;
        }
        rows.push(ds);
    }
    Ok(rows)
}

/// Parse `zfs get -H -p -o property,value` output for one dataset.
pub(crate) fn parse_get(name: &str, stdout: &str, props: &[Prop], command: &str) -> Result<Dataset, Error> {
    let mut ds = Dataset { name: name.to_owned(), ..Default::default() };
    for line in stdout.lines().filter(|l| !l.is_empty()) {
        let Some((key, value)) = line.split_once('\t') else {
            return Err(Error::Parse { command: command.to_owned(), reason: format!("bad line {line:?}") });
        };
        if key == "type" {
            ds.kind = DatasetType::parse(value);
        } else if let Some(prop) = props.iter().find(|p| p.name() == key) {
            ds.set(prop, value, command)?;
        }
    }
    Ok(ds)
}

impl Zfs {
    /// List datasets of the given types under a root, in one command, sorted by
    /// creation order (`-s createtxg`) so snapshot lists come out oldest first.
    pub async fn list(&self, query: &ListQuery) -> Result<Vec<Dataset>, Error> {
        let types = query.types.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(",");
        let inv = self.zfs(&query.root)?.args(["list", "-H", "-p", "-o"]).arg(query.columns());
        let inv = match query.depth {
            Depth::Recursive => inv.arg("-r"),
            Depth::Max(n) => inv.arg("-d").arg(n.to_string()),
        };
        let inv = inv.args(["-t", &types, "-s", "createtxg"]).arg(query.root.as_str());
        let out = inv.run().await?;
        parse_list(&out, &query.props, &inv.display())
    }

    /// Read properties of one dataset, snapshot or bookmark.
    pub async fn get(&self, name: &dyn ZfsName, props: &[Prop]) -> Result<Dataset, Error> {
        let wanted = std::iter::once("type").chain(props.iter().map(Prop::name)).collect::<Vec<_>>().join(",");
        let inv = self.zfs(name)?.args(["get", "-H", "-p", "-o", "property,value"]).arg(wanted).arg(name.as_str());
        let out = inv.run().await?;
        parse_get(name.as_str(), &out, props, &inv.display())
    }

    /// All user properties of a dataset whose name starts with `prefix` (e.g. `tankd:`),
    /// including inherited ones.
    pub async fn user_props(&self, name: &dyn ZfsName, prefix: &str) -> Result<BTreeMap<String, String>, Error> {
        let inv = self.zfs(name)?.args(["get", "-H", "-p", "-o", "property,value", "all"]).arg(name.as_str());
        let out = inv.run().await?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .filter(|(k, v)| k.starts_with(prefix) && k.contains(':') && *v != "-")
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect())
    }

    /// Properties set locally on a dataset (`zfs get -s local`), user properties included:
    /// what a clone must be given to look like its origin's dataset.
    pub async fn local_props(&self, name: &dyn ZfsName) -> Result<Vec<(String, String)>, Error> {
        let inv =
            self.zfs(name)?.args(["get", "-H", "-p", "-s", "local", "-o", "property,value", "all"]).arg(name.as_str());
        let out = inv.run().await?;
        Ok(out.lines().filter_map(|l| l.split_once('\t')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect())
    }

    /// [`Zfs::list`], with a missing root answered as nothing: one command where a probe
    /// and a list would be two (each a second or more on a slow host).
    pub async fn list_if_exists(&self, query: &ListQuery) -> Result<Vec<Dataset>, Error> {
        match self.list(query).await {
            Err(e) if e.is_not_found() => Ok(Vec::new()),
            other => other,
        }
    }

    /// Whether a dataset, snapshot or bookmark exists.
    pub async fn exists(&self, name: &dyn ZfsName) -> Result<bool, Error> {
        match self.get(name, &[]).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Names of the holds on a snapshot.
    pub async fn holds(&self, snap: &crate::SnapshotName) -> Result<Vec<String>, Error> {
        let inv = self.zfs(snap)?.args(["holds", "-H"]).arg(snap.as_str());
        let out = inv.run().await?;
        Ok(out.lines().filter_map(|l| l.split('\t').nth(1)).map(str::to_owned).collect())
    }

    /// A `zfs` invocation with no root check, for commands that name no dataset
    /// (`zfs version`) or whose target is validated separately (a resume token's toname).
    pub(crate) fn zfs_unscoped(&self, target: &str) -> Invocation {
        Invocation::new(&self.inner.zfs_bin, target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_list_rows_exactly() {
        let props = [Prop::Used, Prop::Volsize, Prop::Origin, Prop::user("tankd:status").unwrap()];
        let out = "tank/a\tfilesystem\t98304\t-\t-\tcomplete\n\
                   tank/v\tvolume\t1090519040\t1073741824\ttank/a@s\t-\n";
        let rows = parse_list(out, &props, "zfs list").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].name, "tank/a");
        assert_eq!(rows[0].kind, Some(DatasetType::Filesystem));
        assert_eq!(rows[0].used, Some(98304));
        assert_eq!(rows[0].volsize, None);
        assert_eq!(rows[0].user.get("tankd:status").map(String::as_str), Some("complete"));
        assert_eq!(rows[1].volsize, Some(1073741824));
        assert_eq!(rows[1].origin.as_deref(), Some("tank/a@s"));
        assert!(rows[1].user.is_empty());
    }

    #[test]
    fn encryption_is_the_cipher_or_none() {
        let props = [Prop::Encryption];
        let out = "tank/plain@s\tsnapshot\toff\ntank/sealed@s\tsnapshot\taes-256-gcm\n";
        let rows = parse_list(out, &props, "zfs list").unwrap();
        assert_eq!(rows[0].encryption, None);
        assert_eq!(rows[1].encryption.as_deref(), Some("aes-256-gcm"));
    }

    #[test]
    fn refuses_malformed_rows() {
        let props = [Prop::Used];
        assert!(parse_list("tank/a\tfilesystem\n", &props, "zfs list").is_err());
        assert!(parse_list("tank/a\tfilesystem\t12k\n", &props, "zfs list").is_err());
        assert!(parse_list("tank/a\tweird\t1\n", &props, "zfs list").is_err());
        assert_eq!(parse_list("", &props, "zfs list").unwrap(), vec![]);
    }

    #[test]
    fn parses_get_output() {
        let props = [Prop::Guid, Prop::Written, Prop::ReceiveResumeToken];
        let out = "type\tsnapshot\nguid\t1234567890123\nwritten\t0\nreceive_resume_token\t-\n";
        let ds = parse_get("tank/a@s", out, &props, "zfs get").unwrap();
        assert_eq!(ds.kind, Some(DatasetType::Snapshot));
        assert_eq!(ds.guid, Some(1234567890123));
        assert_eq!(ds.written, Some(0));
        assert_eq!(ds.receive_resume_token, None);
    }

    #[test]
    fn columns_match_the_parser() {
        let q = ListQuery::recursive("tank/x".parse().unwrap(), DatasetType::Snapshot, &[Prop::Used, Prop::Guid]);
        assert_eq!(q.columns(), "name,type,used,guid");
    }
}
