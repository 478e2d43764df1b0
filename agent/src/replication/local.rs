//! What a node has of a dataset, as [`super::plan`] takes it: its snapshots and
//! bookmarks with GUIDs and creation txgs, and the resume token a cut transfer left on
//! it. One `zfs list` (the dataset and its snapshots and bookmarks, `-d 1`).

use zfs_sys_shim::{Dataset, DatasetName, DatasetType, Depth, ListQuery, Prop, Zfs};

use super::plan::{Point, Replica};
use crate::error::Result;

fn query(dataset: &DatasetName) -> ListQuery {
    ListQuery::recursive(
        dataset.clone(),
        DatasetType::Filesystem,
        &[Prop::Guid, Prop::Createtxg, Prop::ReceiveResumeToken],
    )
    .types(&[DatasetType::Filesystem, DatasetType::Volume, DatasetType::Snapshot, DatasetType::Bookmark])
    .depth(Depth::Max(1))
}

/// The receiving side: `None` when `dataset` does not exist.
pub async fn replica(zfs: &Zfs, dataset: &DatasetName) -> Result<Option<Replica>> {
    let rows = zfs.list_if_exists(&query(dataset)).await?;
    let Some(own) = rows.iter().find(|r| r.name == dataset.as_str()) else { return Ok(None) };
    Ok(Some(Replica { resume_token: own.receive_resume_token.clone(), snapshots: points_of(dataset, &rows) }))
}

/// The sending side: the snapshots and bookmarks of `dataset` (which must exist).
pub async fn points(zfs: &Zfs, dataset: &DatasetName) -> Result<Vec<Point>> {
    Ok(points_of(dataset, &zfs.list(&query(dataset)).await?))
}

/// The rows that are `dataset`'s own snapshots and bookmarks (not its children's, which
/// `-d 1` lists as filesystems).
fn points_of(dataset: &DatasetName, rows: &[Dataset]) -> Vec<Point> {
    let (at, hash) = (format!("{dataset}@"), format!("{dataset}#"));
    rows.iter()
        .filter_map(|r| {
            let (name, bookmark) = match r.kind? {
                DatasetType::Snapshot => (r.name.strip_prefix(&at)?, false),
                DatasetType::Bookmark => (r.name.strip_prefix(&hash)?, true),
                _ => return None,
            };
            Some(Point { name: name.to_owned(), guid: r.guid?, createtxg: r.createtxg?, bookmark })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FakeZfs, rule};

    #[tokio::test]
    async fn one_list_gives_the_points_and_the_resume_token() {
        let rows = "tank/tankd/r\tfilesystem\t1\t50\t1-abc-123\n\
                    tank/tankd/r/child\tfilesystem\t2\t51\t-\n\
                    tank/tankd/r#s0\tbookmark\t10\t40\t-\n\
                    tank/tankd/r@s1\tsnapshot\t11\t60\t-\n";
        let fake = FakeZfs::new(
            "tank/tankd",
            vec![
                rule("list*tank/tankd/r", 0, rows),
                rule("list*tank/tankd/gone", 1, "cannot open 'tank/tankd/gone': dataset does not exist\n"),
            ],
        );
        let r: DatasetName = "tank/tankd/r".parse().unwrap();
        let have = replica(&fake.zfs, &r).await.unwrap().expect("it exists");
        assert_eq!(have.resume_token.as_deref(), Some("1-abc-123"));
        assert_eq!(have.snapshots, vec![Point::bookmark("s0", 10, 40), Point::snapshot("s1", 11, 60)]);
        assert_eq!(points(&fake.zfs, &r).await.unwrap(), have.snapshots);
        let list = fake.calls_of("list");
        assert_eq!(
            list[0],
            "list -H -p -o name,type,guid,createtxg,receive_resume_token -d 1 \
             -t filesystem,volume,snapshot,bookmark -s createtxg tank/tankd/r"
        );
        let gone: DatasetName = "tank/tankd/gone".parse().unwrap();
        assert!(replica(&fake.zfs, &gone).await.unwrap().is_none(), "a replica that does not exist yet");
        assert!(points(&fake.zfs, &gone).await.is_err(), "a source that does not exist");
    }
}
