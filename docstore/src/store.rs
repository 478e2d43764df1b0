//! A tenant's database: one SQLite file in WAL mode with `synchronous=FULL`, so a write
//! is on disk when its transaction commits and a reply is sent only after that. A
//! collection is a table of (`_id` key, BSON document); the `_id` key is a canonical
//! encoding under which values MongoDB counts as equal (1 and 1.0) collide.

use std::path::Path;
use std::sync::Mutex;

use bson::{Bson, Document, oid::ObjectId};
use rusqlite::{Connection, OptionalExtension, params};

use crate::bsonx::cmp::rank;
use crate::error::{Code, CommandError};

pub struct Store {
    conn: Mutex<Connection>,
}

/// One document a write refused, by its index in the request.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteError {
    pub index: usize,
    pub code: i32,
    pub message: String,
}

fn internal(e: rusqlite::Error) -> CommandError {
    CommandError::new(Code::InternalError, format!("storage: {e}"))
}

/// Checks a collection name as MongoDB does (and keeps `system.` to the server).
pub fn check_collection(name: &str) -> Result<(), CommandError> {
    if name.is_empty() || name.contains('$') || name.contains('\0') || name.starts_with("system.") || name.len() > 200 {
        return Err(CommandError::new(Code::InvalidNamespace, format!("Invalid collection name: {name:?}")));
    }
    Ok(())
}

/// The `_id` key: the canonical type rank, then a value encoding under which equal
/// values are equal bytes.
pub fn id_key(v: &Bson) -> Vec<u8> {
    let mut out = vec![rank(v) as u8];
    match v {
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) => {
            let n = crate::bsonx::cmp::number(v).unwrap_or(0.0);
            match v {
                Bson::Int64(i) => {
                    out.push(b'i');
                    out.extend(i.to_be_bytes());
                }
                _ if n.fract() == 0.0 && n.abs() < 9.0e15 => {
                    out.push(b'i');
                    out.extend((n as i64).to_be_bytes());
                }
                _ => {
                    out.push(b'd');
                    out.extend(n.to_bits().to_be_bytes());
                }
            }
        }
        Bson::String(s) | Bson::Symbol(s) => out.extend(s.as_bytes()),
        Bson::ObjectId(o) => out.extend(o.bytes()),
        other => {
            let mut d = Document::new();
            d.insert("", other.clone());
            out.extend(d.to_vec().unwrap_or_default());
        }
    }
    out
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, CommandError> {
        let conn = Connection::open(path).map_err(internal)?;
        // WAL lets readers run beside the writer; FULL syncs the WAL at each commit.
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000;
             CREATE TABLE IF NOT EXISTS collections (name TEXT PRIMARY KEY, tbl TEXT NOT NULL UNIQUE);",
        )
        .map_err(internal)?;
        Ok(Store { conn: Mutex::new(conn) })
    }

    fn table(conn: &Connection, coll: &str) -> Result<Option<String>, CommandError> {
        conn.query_row("SELECT tbl FROM collections WHERE name = ?1", [coll], |r| r.get(0)).optional().map_err(internal)
    }

    /// Makes the collection; whether it was new.
    pub fn create(&self, coll: &str) -> Result<bool, CommandError> {
        check_collection(coll)?;
        let conn = self.conn.lock().expect("store lock");
        Self::create_in(&conn, coll).map(|(_, made)| made)
    }

    fn create_in(conn: &Connection, coll: &str) -> Result<(String, bool), CommandError> {
        if let Some(t) = Self::table(conn, coll)? {
            return Ok((t, false));
        }
        // Table names are tankd's own, never the client's text.
        let n: i64 = conn
            .query_row("SELECT COALESCE(MAX(CAST(substr(tbl, 3) AS INTEGER)), 0) + 1 FROM collections", [], |r| {
                r.get(0)
            })
            .map_err(internal)?;
        let tbl = format!("c_{n}");
        conn.execute_batch(&format!(
            "CREATE TABLE {tbl} (rid INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, doc BLOB NOT NULL);"
        ))
        .map_err(internal)?;
        conn.execute("INSERT INTO collections (name, tbl) VALUES (?1, ?2)", params![coll, tbl]).map_err(internal)?;
        Ok((tbl, true))
    }

    pub fn collections(&self) -> Result<Vec<String>, CommandError> {
        let conn = self.conn.lock().expect("store lock");
        let mut st = conn.prepare("SELECT name FROM collections ORDER BY name").map_err(internal)?;
        let names = st.query_map([], |r| r.get(0)).map_err(internal)?.collect::<Result<Vec<String>, _>>();
        names.map_err(internal)
    }

    /// Drops the collection; whether it existed.
    pub fn drop_collection(&self, coll: &str) -> Result<bool, CommandError> {
        let mut conn = self.conn.lock().expect("store lock");
        let tx = conn.transaction().map_err(internal)?;
        let Some(tbl) = Self::table(&tx, coll)? else { return Ok(false) };
        tx.execute_batch(&format!("DROP TABLE {tbl};")).map_err(internal)?;
        tx.execute("DELETE FROM collections WHERE name = ?1", [coll]).map_err(internal)?;
        tx.commit().map_err(internal)?;
        Ok(true)
    }

    /// Inserts `docs` in one transaction (an `_id` is added where missing). Ordered: the
    /// first refused document stops the rest; unordered: the others go on. Returns how
    /// many went in and what was refused.
    pub fn insert(
        &self,
        db: &str,
        coll: &str,
        docs: Vec<Document>,
        ordered: bool,
    ) -> Result<(usize, Vec<WriteError>), CommandError> {
        check_collection(coll)?;
        let mut conn = self.conn.lock().expect("store lock");
        let tx = conn.transaction().map_err(internal)?;
        let (tbl, _) = Self::create_in(&tx, coll)?;
        let mut n = 0;
        let mut errors = Vec::new();
        {
            let mut st = tx.prepare(&format!("INSERT INTO {tbl} (id, doc) VALUES (?1, ?2)")).map_err(internal)?;
            for (index, doc) in docs.into_iter().enumerate() {
                let doc = with_id(doc);
                let id = doc.get("_id").cloned().unwrap_or(Bson::Null);
                let bytes = doc.to_vec().map_err(|e| CommandError::new(Code::BadValue, e.to_string()))?;
                match st.execute(params![id_key(&id), bytes]) {
                    Ok(_) => n += 1,
                    Err(rusqlite::Error::SqliteFailure(f, _)) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                        errors.push(WriteError {
                            index,
                            code: 11000,
                            message: format!("E11000 duplicate key error collection: {db}.{coll} index: _id_ dup key: {{ _id: {id} }}"),
                        });
                        if ordered {
                            break;
                        }
                    }
                    Err(e) => return Err(internal(e)),
                }
            }
        }
        tx.commit().map_err(internal)?;
        Ok((n, errors))
    }

    /// Every document of the collection, in insertion order, with its row id.
    pub fn scan(&self, coll: &str) -> Result<Vec<(i64, Document)>, CommandError> {
        let conn = self.conn.lock().expect("store lock");
        let Some(tbl) = Self::table(&conn, coll)? else { return Ok(Vec::new()) };
        let mut st = conn.prepare(&format!("SELECT rid, doc FROM {tbl} ORDER BY rid")).map_err(internal)?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
            .map_err(internal)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(internal)?;
        rows.into_iter()
            .map(|(rid, b)| {
                Document::from_reader(b.as_slice())
                    .map(|d| (rid, d))
                    .map_err(|e| CommandError::new(Code::InternalError, format!("stored document {rid}: {e}")))
            })
            .collect()
    }

    /// Writes new versions of documents by row id, in one transaction (their `_id`s do
    /// not change: the update checked that).
    pub fn replace(&self, coll: &str, docs: &[(i64, Document)]) -> Result<usize, CommandError> {
        let mut conn = self.conn.lock().expect("store lock");
        let tx = conn.transaction().map_err(internal)?;
        let Some(tbl) = Self::table(&tx, coll)? else { return Ok(0) };
        let mut n = 0;
        {
            let mut st = tx.prepare(&format!("UPDATE {tbl} SET doc = ?2 WHERE rid = ?1")).map_err(internal)?;
            for (rid, doc) in docs {
                let bytes = doc.to_vec().map_err(|e| CommandError::new(Code::BadValue, e.to_string()))?;
                if bytes.len() > crate::wire::MAX_BSON_SIZE {
                    return Err(CommandError::new(
                        Code::BsonObjectTooLarge,
                        "the updated document is larger than 16 MiB",
                    ));
                }
                n += st.execute(params![rid, bytes]).map_err(internal)?;
            }
        }
        tx.commit().map_err(internal)?;
        Ok(n)
    }

    /// Deletes rows by id in one transaction; how many went.
    pub fn delete(&self, coll: &str, rids: &[i64]) -> Result<usize, CommandError> {
        let mut conn = self.conn.lock().expect("store lock");
        let tx = conn.transaction().map_err(internal)?;
        let Some(tbl) = Self::table(&tx, coll)? else { return Ok(0) };
        let mut n = 0;
        {
            let mut st = tx.prepare(&format!("DELETE FROM {tbl} WHERE rid = ?1")).map_err(internal)?;
            for rid in rids {
                n += st.execute([rid]).map_err(internal)?;
            }
        }
        tx.commit().map_err(internal)?;
        Ok(n)
    }
}

/// The document with an `_id` first: the client's, or a new ObjectId.
fn with_id(doc: Document) -> Document {
    if let Some(id) = doc.get("_id") {
        if doc.keys().next().is_some_and(|k| k == "_id") {
            return doc;
        }
        let mut out = Document::new();
        out.insert("_id", id.clone());
        out.extend(doc.into_iter().filter(|(k, _)| k != "_id"));
        return out;
    }
    let mut out = Document::new();
    out.insert("_id", ObjectId::new());
    out.extend(doc);
    out
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;

    #[test]
    fn inserts_are_durable_and_ids_unique_across_numeric_types() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let s = Store::open(&path).unwrap();
        let (n, errs) =
            s.insert("d", "c", vec![doc! {"_id": 1, "a": 1}, doc! {"a": 2}, doc! {"b": 0, "_id": "k"}], true).unwrap();
        assert_eq!((n, errs.len()), (3, 0));
        let (n, errs) = s.insert("d", "c", vec![doc! {"_id": 1.0}, doc! {"_id": 2}], true).unwrap();
        assert_eq!(n, 0, "ordered: stops at the first duplicate");
        assert_eq!((errs[0].index, errs[0].code), (0, 11000));
        assert!(errs[0].message.contains("E11000") && errs[0].message.contains("d.c"), "{}", errs[0].message);
        let (n, errs) = s.insert("d", "c", vec![doc! {"_id": 1}, doc! {"_id": 2}], false).unwrap();
        assert_eq!((n, errs.len()), (1, 1), "unordered: the rest goes on");
        drop(s);
        // Reopened (as after a restart): everything committed is there, `_id` first.
        let s = Store::open(&path).unwrap();
        let docs: Vec<Document> = s.scan("c").unwrap().into_iter().map(|(_, d)| d).collect();
        assert_eq!(docs.len(), 4);
        assert_eq!(docs[2], doc! {"_id": "k", "b": 0});
        assert!(matches!(docs[1].get("_id"), Some(Bson::ObjectId(_))));
        assert_eq!(s.collections().unwrap(), vec!["c".to_owned()]);
        assert!(s.drop_collection("c").unwrap());
        assert!(!s.drop_collection("c").unwrap());
        assert_eq!(check_collection("a$b").unwrap_err().code, Code::InvalidNamespace);
    }
}
