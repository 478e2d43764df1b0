//! Archives and ZFS: which stream an archive of a snapshot is (`zfs send -c -L`, or
//! `zfs send -w` for a natively encrypted dataset; full or incremental from the newest
//! archived snapshot of the same dataset that still exists), and a restore fed to
//! `zfs receive -s`, the chain oldest first.

use std::io::Read;

use zfs_sys_shim::{
    DatasetName, DatasetType, DestroyOptions, ListQuery, Prop, ReceiveArgs, SendArgs, SendFrom, SendStream,
    SnapshotName, Zfs,
};

use super::manifest::Manifest;
use super::restore::RestorePlan;
use super::{Archives, NewArchive};
use crate::error::{Error, Result};

/// What an archive of a snapshot applies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// A full stream.
    Full,
    /// Incremental on the newest archived earlier snapshot; refused when there is none.
    Required,
    /// Incremental when there is such a snapshot, else full.
    WhenPossible,
}

/// A `zfs send` stream read on a blocking thread. Its end includes `zfs send`'s exit:
/// a send that failed part-way is a read error, so no manifest is written for it.
struct SendReader {
    bridge: Option<tokio_util::io::SyncIoBridge<SendStream>>,
    handle: tokio::runtime::Handle,
}

impl Read for SendReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some(bridge) = self.bridge.as_mut() else { return Ok(0) };
        let n = bridge.read(buf)?;
        if n == 0 {
            let stream = self.bridge.take().expect("checked").into_inner();
            self.handle.block_on(stream.finish()).map_err(std::io::Error::other)?;
        }
        Ok(n)
    }
}

impl Archives {
    /// Archives `snap` (a snapshot under `root`): full, or incremental on the newest
    /// earlier snapshot of the dataset that has an archive here, as `base` says.
    pub async fn archive_snapshot(
        &self,
        zfs: &Zfs,
        root: &DatasetName,
        snap: &SnapshotName,
        service: Option<String>,
        base: Base,
        tags: std::collections::BTreeMap<String, String>,
    ) -> Result<Manifest> {
        self.ready().await?;
        let dataset = snap.dataset();
        let relative = dataset.relative_to(root).unwrap_or(dataset.as_str()).to_owned();
        let snaps = zfs
            .list(
                &ListQuery::recursive(
                    dataset.clone(),
                    DatasetType::Snapshot,
                    &[Prop::Guid, Prop::Createtxg, Prop::Encryption],
                )
                .depth(zfs_sys_shim::Depth::Max(1)),
            )
            .await?;
        let this = snaps
            .iter()
            .find(|s| s.name == snap.as_str())
            .ok_or_else(|| Error::not_found(format!("no snapshot {snap}")).with_field("snapshotId"))?;
        let (guid, txg) = (this.guid.unwrap_or(0).to_string(), this.createtxg.unwrap_or(0));
        let parent = if base != Base::Full {
            // The newest earlier snapshot of this dataset that has an archive here.
            let archived = self.repo.manifests()?;
            let found = snaps
                .iter()
                .filter(|s| s.createtxg.unwrap_or(0) < txg)
                .filter_map(|s| {
                    let g = s.guid?.to_string();
                    archived.iter().find(|m| m.dataset == relative && m.guid == g).map(|m| (s, m))
                })
                .max_by_key(|(s, _)| s.createtxg);
            // With retention, a chain as long as what is kept starts over with a full
            // archive: otherwise every archive would depend on the first and none
            // could ever go.
            match found {
                Some((_, m))
                    if base == Base::WhenPossible && self.keep_last.is_some_and(|n| self.chain_len(m) >= n) =>
                {
                    None
                }
                Some((s, m)) => {
                    Some((s.name.parse::<SnapshotName>().map_err(|e| Error::internal(e.to_string()))?, m.clone()))
                }
                None if base == Base::WhenPossible => None,
                None => {
                    return Err(Error::conflict(format!(
                        "no earlier snapshot of {dataset} has an archive here to apply on: archive without incremental first"
                    ))
                    .with_field("incremental"));
                }
            }
        } else {
            None
        };
        let mut args = match &parent {
            Some((from, _)) => SendArgs::incremental(snap.clone(), SendFrom::Snapshot(from.clone()))?,
            None => SendArgs::full(snap.clone()),
        };
        let send_flags = send_flags(&mut args, this.encryption.as_deref());
        let stream = zfs.send(&args).await?;
        let reader = SendReader {
            bridge: Some(tokio_util::io::SyncIoBridge::new_with_handle(stream, tokio::runtime::Handle::current())),
            handle: tokio::runtime::Handle::current(),
        };
        let new = NewArchive {
            service,
            dataset: relative,
            snapshot: snap.short().to_owned(),
            guid,
            parent: parent.map(|(_, m)| m),
            send_flags,
            tags,
        };
        self.archive(new, reader).await
    }

    /// Receives a checked chain into `into` (which must not exist): the full archive
    /// makes it, each incremental applies on it. Any failure destroys what this restore
    /// made: no half-made dataset stays.
    pub async fn restore_into(&self, zfs: &Zfs, plan: RestorePlan, into: &DatasetName) -> Result<Vec<String>> {
        if zfs.exists(into).await? {
            return Err(Error::conflict(format!("{into} exists: restore into a new name")).with_field("into"));
        }
        // zfs receive makes the dataset, not its parents.
        if let Some(parent) = into.parent()
            && !zfs.exists(&parent).await?
        {
            zfs.create_filesystem(&parent, true, &[]).await?;
        }
        let plan = std::sync::Arc::new(plan);
        let mut received = Vec::new();
        for i in 0..plan.chain.len() {
            if let Err(e) = self.receive_one(zfs, &plan, i, into).await {
                let _ = zfs.abort_receive(into).await;
                if zfs.exists(into).await.unwrap_or(false) {
                    let _ = zfs.destroy(into, DestroyOptions { recursive: true, ..Default::default() }).await;
                }
                return Err(e);
            }
            received.push(format!("{into}@{}", plan.chain[i].snapshot));
        }
        Ok(received)
    }

    async fn receive_one(
        &self,
        zfs: &Zfs,
        plan: &std::sync::Arc<RestorePlan>,
        index: usize,
        into: &DatasetName,
    ) -> Result<()> {
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(4);
        let this = self.clone();
        let p = plan.clone();
        let writer = tokio::task::spawn_blocking(move || {
            let mut sink = ChannelWriter { tx };
            let result = this.unpack(&p, index, &mut sink);
            if let Err(e) = &result {
                let _ = sink.tx.blocking_send(Err(std::io::Error::other(e.message.clone())));
            }
            result
        });
        let stream =
            Box::pin(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }));
        let reader = tokio_util::io::StreamReader::new(stream);
        let mut args = ReceiveArgs::into(into.clone());
        args.resumable = true;
        let received = zfs.receive(&args, reader).await;
        let unpacked = writer.await.map_err(|e| Error::internal(format!("restore task: {e}")))?;
        unpacked?;
        received?;
        Ok(())
    }
}

/// How a snapshot is sent, set on `args`; the flags for the manifest. A natively
/// encrypted dataset goes raw (`-w`): its blocks as stored, still encrypted with its own
/// key, which tankd never holds (a plain send would need the key loaded and would put
/// its data in the clear into the stream). A raw stream is received as an encrypted
/// dataset whose key the operator loads. Anything else goes as stored compressed
/// (`-c`, `-L`): smaller archives, no recompression on receive.
fn send_flags(args: &mut SendArgs, encryption: Option<&str>) -> Vec<String> {
    if encryption.is_some() {
        args.raw = true;
        vec!["-w".to_owned()]
    } else {
        args.compressed = true;
        args.large_blocks = true;
        vec!["-c".to_owned(), "-L".to_owned()]
    }
}

/// The decrypted stream, handed from the blocking unpack to `zfs receive`.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Ok(bytes::Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "zfs receive stopped reading"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archives::{Keys, Repo};
    use crate::testing::{FakeZfs, rule};

    /// The send flags follow the dataset's `encryption`, read in the same `zfs list`
    /// that finds the snapshot (what ZFS does with them is the VM test's).
    #[tokio::test]
    async fn a_natively_encrypted_dataset_is_sent_raw_and_others_compressed() {
        let fake = FakeZfs::new(
            "tank/tankd",
            vec![
                rule("list*tank/tankd/sealed", 0, "tank/tankd/sealed@s1\tsnapshot\t77\t10\taes-256-gcm\n"),
                rule("list*tank/tankd/plain", 0, "tank/tankd/plain@s1\tsnapshot\t78\t11\toff\n"),
                rule("send*", 0, "a stream"),
            ],
        );
        let dir = tempfile::tempdir().unwrap();
        let a = Archives::new(Repo::open(dir.path()).unwrap(), Keys::none(), Vec::new(), 1 << 20);
        let root: DatasetName = "tank/tankd".parse().unwrap();
        for (dataset, flags) in [("sealed", vec!["-w"]), ("plain", vec!["-c", "-L"])] {
            let snap: SnapshotName = format!("tank/tankd/{dataset}@s1").parse().unwrap();
            let m = a.archive_snapshot(&fake.zfs, &root, &snap, None, Base::Full, Default::default()).await.unwrap();
            assert_eq!(m.send_flags, flags, "{dataset}'s manifest");
            assert_eq!(m.original_size, 8, "the stream archived");
            let sent = fake.calls().into_iter().rfind(|c| c.starts_with("send")).unwrap();
            assert_eq!(sent, format!("send {} {}", flags.join(" "), snap), "{dataset}'s send");
        }
    }
}
