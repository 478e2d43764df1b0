//! A tenant's database: one SQLite file in WAL mode with `synchronous=FULL`, so a write
//! is on disk when its transaction commits and a reply is sent only after that. A
//! collection is a table of (`_id` key, BSON document); the `_id` key is a canonical
//! encoding under which values MongoDB counts as equal (1 and 1.0) collide. A secondary
//! index is a table of (key, row id); see `index`. Every command runs in one
//! transaction ([`Store::read`], [`Store::write`]).

use std::path::Path;
use std::sync::Mutex;

use bson::{Bson, Document, oid::ObjectId};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::bsonx::cmp::rank;
use crate::error::{Code, CommandError};
use crate::index::{self, IndexSpec, Plan};

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
        // Stable query plans: without this, SQLite (built with STAT4) re-prepares a
        // cached statement whenever a bound key changes, parsing SQL on every lookup.
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true).map_err(internal)?;
        // WAL lets readers run beside the writer; FULL syncs the WAL at each commit.
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000;
             CREATE TABLE IF NOT EXISTS collections (name TEXT PRIMARY KEY, tbl TEXT NOT NULL UNIQUE);
             CREATE TABLE IF NOT EXISTS indexes (coll TEXT NOT NULL, name TEXT NOT NULL, spec BLOB NOT NULL,
                 uniq INTEGER NOT NULL, tbl TEXT NOT NULL UNIQUE, PRIMARY KEY (coll, name));",
        )
        .map_err(internal)?;
        Ok(Store { conn: Mutex::new(conn) })
    }

    /// Runs `f` in one read transaction: a consistent view across its statements.
    pub fn read<R>(&self, f: impl FnOnce(&Tx) -> Result<R, CommandError>) -> Result<R, CommandError> {
        let mut conn = self.conn.lock().expect("store lock");
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred).map_err(internal)?;
        f(&Tx { conn: &tx })
    }

    /// Runs `f` in one write transaction, committed (and so on disk) before this
    /// returns; an error rolls all of it back. A statement that reads then writes (an
    /// update, findAndModify) is atomic: no other write runs in between.
    pub fn write<R>(&self, f: impl FnOnce(&Tx) -> Result<R, CommandError>) -> Result<R, CommandError> {
        let mut conn = self.conn.lock().expect("store lock");
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(internal)?;
        let r = f(&Tx { conn: &tx })?;
        tx.commit().map_err(internal)?;
        Ok(r)
    }

    /// Makes the collection; whether it was new.
    pub fn create(&self, coll: &str) -> Result<bool, CommandError> {
        check_collection(coll)?;
        self.write(|tx| tx.ensure(coll).map(|(_, made)| made))
    }

    pub fn collections(&self) -> Result<Vec<String>, CommandError> {
        self.read(|tx| tx.collections())
    }

    /// Drops the collection and its indexes; whether it existed.
    pub fn drop_collection(&self, coll: &str) -> Result<bool, CommandError> {
        self.write(|tx| tx.drop_collection(coll))
    }

    /// Every document of the collection, in insertion order, with its row id.
    pub fn scan(&self, coll: &str) -> Result<Vec<(i64, Document)>, CommandError> {
        self.read(|tx| tx.candidates(coll, &Document::new()))
    }
}

/// The statements of one transaction on a tenant's database.
pub struct Tx<'a> {
    conn: &'a Connection,
}

fn decode(rid: i64, bytes: &[u8]) -> Result<(i64, Document), CommandError> {
    Document::from_reader(bytes)
        .map(|d| (rid, d))
        .map_err(|e| CommandError::new(Code::InternalError, format!("stored document {rid}: {e}")))
}

fn encode(doc: &Document) -> Result<Vec<u8>, CommandError> {
    let bytes = doc.to_vec().map_err(|e| CommandError::new(Code::BadValue, e.to_string()))?;
    if bytes.len() > crate::wire::MAX_BSON_SIZE {
        return Err(CommandError::new(Code::BsonObjectTooLarge, "a document is larger than 16 MiB"));
    }
    Ok(bytes)
}

impl Tx<'_> {
    fn table(&self, coll: &str) -> Result<Option<String>, CommandError> {
        self.conn
            .prepare_cached("SELECT tbl FROM collections WHERE name = ?1")
            .and_then(|mut st| st.query_row([coll], |r| r.get(0)).optional())
            .map_err(internal)
    }

    /// The collection's table, made if missing; and whether it was made.
    fn ensure(&self, coll: &str) -> Result<(String, bool), CommandError> {
        if let Some(t) = self.table(coll)? {
            return Ok((t, false));
        }
        // Table names are tankd's own, never the client's text.
        let tbl = format!("c_{}", self.next_number("collections")?);
        self.conn
            .execute_batch(&format!(
                "CREATE TABLE {tbl} (rid INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, doc BLOB NOT NULL);"
            ))
            .map_err(internal)?;
        self.conn
            .execute("INSERT INTO collections (name, tbl) VALUES (?1, ?2)", params![coll, tbl])
            .map_err(internal)?;
        Ok((tbl, true))
    }

    /// One more than the largest number in `catalog`'s table names (`c_7`, `x_3`).
    fn next_number(&self, catalog: &str) -> Result<i64, CommandError> {
        self.conn
            .query_row(
                &format!("SELECT COALESCE(MAX(CAST(substr(tbl, 3) AS INTEGER)), 0) + 1 FROM {catalog}"),
                [],
                |r| r.get(0),
            )
            .map_err(internal)
    }

    pub fn collections(&self) -> Result<Vec<String>, CommandError> {
        let mut st = self.conn.prepare("SELECT name FROM collections ORDER BY name").map_err(internal)?;
        let names = st.query_map([], |r| r.get(0)).map_err(internal)?.collect::<Result<Vec<String>, _>>();
        names.map_err(internal)
    }

    pub fn drop_collection(&self, coll: &str) -> Result<bool, CommandError> {
        let Some(tbl) = self.table(coll)? else { return Ok(false) };
        for spec in self.indexes(coll)? {
            self.conn.execute_batch(&format!("DROP TABLE {};", spec.table)).map_err(internal)?;
        }
        self.conn.execute("DELETE FROM indexes WHERE coll = ?1", [coll]).map_err(internal)?;
        self.conn.execute_batch(&format!("DROP TABLE {tbl};")).map_err(internal)?;
        self.conn.execute("DELETE FROM collections WHERE name = ?1", [coll]).map_err(internal)?;
        Ok(true)
    }

    /// The collection's secondary indexes (the `_id` index is the table's own).
    pub fn indexes(&self, coll: &str) -> Result<Vec<IndexSpec>, CommandError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT name, spec, uniq, tbl FROM indexes WHERE coll = ?1 ORDER BY tbl")
            .map_err(internal)?;
        let rows = st
            .query_map([coll], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, bool>(2)?, r.get::<_, String>(3)?))
            })
            .map_err(internal)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(internal)?;
        rows.into_iter()
            .map(|(name, spec, unique, table)| {
                let key = Document::from_reader(spec.as_slice())
                    .map_err(|e| CommandError::new(Code::InternalError, format!("stored index {name}: {e}")))?;
                Ok(IndexSpec { name, key, unique, table })
            })
            .collect()
    }

    /// Builds an index over the documents already there. A unique index that existing
    /// documents already break is refused and nothing is made.
    pub fn create_index(
        &self,
        db: &str,
        coll: &str,
        name: &str,
        key: &Document,
        unique: bool,
    ) -> Result<IndexSpec, CommandError> {
        let (tbl, _) = self.ensure(coll)?;
        let table = format!("x_{}", self.next_number("indexes")?);
        let uniq = if unique { format!("CREATE UNIQUE INDEX {table}_u ON {table} (key);") } else { String::new() };
        self.conn
            .execute_batch(&format!(
                "CREATE TABLE {table} (key BLOB NOT NULL, rid INTEGER NOT NULL, PRIMARY KEY (key, rid)) WITHOUT ROWID;
                 CREATE INDEX {table}_rid ON {table} (rid); {uniq}"
            ))
            .map_err(internal)?;
        let spec_bytes = key.to_vec().map_err(|e| CommandError::new(Code::BadValue, e.to_string()))?;
        self.conn
            .execute(
                "INSERT INTO indexes (coll, name, spec, uniq, tbl) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![coll, name, spec_bytes, unique, table],
            )
            .map_err(internal)?;
        let spec = IndexSpec { name: name.to_owned(), key: key.clone(), unique, table };
        let rows = self.rows(&format!("SELECT rid, doc FROM {tbl} ORDER BY rid"), &[])?;
        for (rid, doc) in rows {
            self.add_keys(db, coll, &spec, rid, &doc)?;
        }
        Ok(spec)
    }

    pub fn drop_index(&self, coll: &str, spec: &IndexSpec) -> Result<(), CommandError> {
        self.conn.execute_batch(&format!("DROP TABLE {};", spec.table)).map_err(internal)?;
        self.conn
            .execute("DELETE FROM indexes WHERE coll = ?1 AND name = ?2", params![coll, spec.name])
            .map_err(internal)?;
        Ok(())
    }

    fn rows(&self, sql: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<(i64, Document)>, CommandError> {
        let mut st = self.conn.prepare_cached(sql).map_err(internal)?;
        let rows = st
            .query_map(args, |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
            .map_err(internal)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(internal)?;
        rows.into_iter().map(|(rid, b)| decode(rid, &b)).collect()
    }

    /// The rows that may match `filter`, in insertion order: found through `_id` or an
    /// index when the filter pins one, else all of them. The caller still matches each.
    pub fn candidates(&self, coll: &str, filter: &Document) -> Result<Vec<(i64, Document)>, CommandError> {
        let Some(tbl) = self.table(coll)? else { return Ok(Vec::new()) };
        let indexes = if filter.is_empty() { Vec::new() } else { self.indexes(coll)? };
        let mut found = std::collections::BTreeMap::new();
        match index::plan(filter, &indexes) {
            Plan::Scan => return self.rows(&format!("SELECT rid, doc FROM {tbl} ORDER BY rid"), &[]),
            Plan::Ids(keys) => {
                for k in keys {
                    found.extend(self.rows(&format!("SELECT rid, doc FROM {tbl} WHERE id = ?1"), &[&k])?);
                }
            }
            Plan::Index { table, keys } => {
                let sql = format!("SELECT c.rid, c.doc FROM {table} x JOIN {tbl} c ON c.rid = x.rid WHERE x.key = ?1");
                for k in keys {
                    found.extend(self.rows(&sql, &[&k])?);
                }
            }
        }
        Ok(found.into_iter().collect())
    }

    /// Adds a document's keys to an index; a unique key another row holds is
    /// E11000 with the index and the key in the message.
    fn add_keys(&self, db: &str, coll: &str, spec: &IndexSpec, rid: i64, doc: &Document) -> Result<(), CommandError> {
        let mut st = self
            .conn
            .prepare_cached(&format!("INSERT INTO {} (key, rid) VALUES (?1, ?2)", spec.table))
            .map_err(internal)?;
        for key in index::keys(doc, spec)? {
            match st.execute(params![key, rid]) {
                Ok(_) => {}
                Err(rusqlite::Error::SqliteFailure(f, _)) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                    return Err(CommandError::new(
                        Code::DuplicateKey,
                        format!(
                            "E11000 duplicate key error collection: {db}.{coll} index: {} dup key: {}",
                            spec.name,
                            index::shown_key(doc, spec)
                        ),
                    ));
                }
                Err(e) => return Err(internal(e)),
            }
        }
        Ok(())
    }

    fn remove_keys(&self, spec: &IndexSpec, rid: i64) -> Result<(), CommandError> {
        self.conn
            .prepare_cached(&format!("DELETE FROM {} WHERE rid = ?1", spec.table))
            .and_then(|mut st| st.execute([rid]))
            .map_err(internal)?;
        Ok(())
    }

    /// Inserts `docs` (an `_id` is added where missing). Ordered: the first refused
    /// document stops the rest; unordered: the others go on. Returns how many went in
    /// and what was refused; a refused document leaves no trace (its own savepoint).
    pub fn insert(
        &self,
        db: &str,
        coll: &str,
        docs: Vec<Document>,
        ordered: bool,
    ) -> Result<(usize, Vec<WriteError>), CommandError> {
        check_collection(coll)?;
        let (tbl, _) = self.ensure(coll)?;
        let indexes = self.indexes(coll)?;
        let mut n = 0;
        let mut errors = Vec::new();
        for (index, doc) in docs.into_iter().enumerate() {
            let doc = with_id(doc);
            match self.insert_one(db, coll, &tbl, &indexes, &doc) {
                Ok(()) => n += 1,
                Err(e)
                    if matches!(
                        e.code,
                        Code::DuplicateKey | Code::CannotIndexParallelArrays | Code::BsonObjectTooLarge
                    ) =>
                {
                    errors.push(WriteError { index, code: e.code.number(), message: e.message });
                    if ordered {
                        break;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok((n, errors))
    }

    fn insert_one(
        &self,
        db: &str,
        coll: &str,
        tbl: &str,
        indexes: &[IndexSpec],
        doc: &Document,
    ) -> Result<(), CommandError> {
        let id = doc.get("_id").cloned().unwrap_or(Bson::Null);
        let bytes = encode(doc)?;
        let dup = |e: rusqlite::Error| match e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                CommandError::new(
                    Code::DuplicateKey,
                    format!("E11000 duplicate key error collection: {db}.{coll} index: _id_ dup key: {{ _id: {id} }}"),
                )
            }
            e => internal(e),
        };
        if indexes.is_empty() {
            // No index rows to undo: the row insert is all or nothing by itself.
            let mut st =
                self.conn.prepare_cached(&format!("INSERT INTO {tbl} (id, doc) VALUES (?1, ?2)")).map_err(internal)?;
            st.execute(params![id_key(&id), bytes]).map_err(dup)?;
            return Ok(());
        }
        self.conn.execute_batch("SAVEPOINT doc").map_err(internal)?;
        let r = (|| {
            let mut st =
                self.conn.prepare_cached(&format!("INSERT INTO {tbl} (id, doc) VALUES (?1, ?2)")).map_err(internal)?;
            st.execute(params![id_key(&id), bytes]).map_err(dup)?;
            let rid = self.conn.last_insert_rowid();
            for spec in indexes {
                self.add_keys(db, coll, spec, rid, doc)?;
            }
            Ok(())
        })();
        let end = if r.is_ok() { "RELEASE doc" } else { "ROLLBACK TO doc; RELEASE doc" };
        self.conn.execute_batch(end).map_err(internal)?;
        r
    }

    /// Writes new versions of documents by row id (their `_id`s do not change: the
    /// update checked that), keeping the indexes in step; how many were written.
    pub fn replace(&self, db: &str, coll: &str, docs: &[(i64, Document)]) -> Result<usize, CommandError> {
        let Some(tbl) = self.table(coll)? else { return Ok(0) };
        let indexes = self.indexes(coll)?;
        let mut n = 0;
        for (rid, doc) in docs {
            let bytes = encode(doc)?;
            n += self
                .conn
                .prepare_cached(&format!("UPDATE {tbl} SET doc = ?2 WHERE rid = ?1"))
                .and_then(|mut st| st.execute(params![rid, bytes]))
                .map_err(internal)?;
            for spec in &indexes {
                self.remove_keys(spec, *rid)?;
                self.add_keys(db, coll, spec, *rid, doc)?;
            }
        }
        Ok(n)
    }

    /// Deletes rows by id and their index keys; how many went.
    pub fn delete(&self, coll: &str, rids: &[i64]) -> Result<usize, CommandError> {
        let Some(tbl) = self.table(coll)? else { return Ok(0) };
        let indexes = self.indexes(coll)?;
        let mut n = 0;
        for rid in rids {
            n += self
                .conn
                .prepare_cached(&format!("DELETE FROM {tbl} WHERE rid = ?1"))
                .and_then(|mut st| st.execute([rid]))
                .map_err(internal)?;
            for spec in &indexes {
                self.remove_keys(spec, *rid)?;
            }
        }
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
        let (n, errs) = s
            .write(|tx| {
                tx.insert("d", "c", vec![doc! {"_id": 1, "a": 1}, doc! {"a": 2}, doc! {"b": 0, "_id": "k"}], true)
            })
            .unwrap();
        assert_eq!((n, errs.len()), (3, 0));
        let (n, errs) = s.write(|tx| tx.insert("d", "c", vec![doc! {"_id": 1.0}, doc! {"_id": 2}], true)).unwrap();
        assert_eq!(n, 0, "ordered: stops at the first duplicate");
        assert_eq!((errs[0].index, errs[0].code), (0, 11000));
        assert!(errs[0].message.contains("E11000") && errs[0].message.contains("d.c"), "{}", errs[0].message);
        let (n, errs) = s.write(|tx| tx.insert("d", "c", vec![doc! {"_id": 1}, doc! {"_id": 2}], false)).unwrap();
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

    #[test]
    fn indexes_find_rows_and_unique_keys_refuse_duplicates_without_a_trace() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db.sqlite")).unwrap();
        s.write(|tx| {
            tx.insert("d", "c", vec![doc! {"_id": 1, "a": 1, "t": ["x", "y"]}, doc! {"_id": 2, "a": 2}], true)
        })
        .unwrap();
        let key = doc! {"a": 1};
        s.write(|tx| tx.create_index("d", "c", "a_1", &key, true)).unwrap();
        s.write(|tx| tx.create_index("d", "c", "t_1", &doc! {"t": 1}, false)).unwrap();
        // A duplicate on the unique index: refused, and neither the row nor its other
        // index keys stay.
        let (n, errs) = s.write(|tx| tx.insert("d", "c", vec![doc! {"_id": 3, "a": 1.0, "t": "z"}], true)).unwrap();
        assert_eq!(n, 0);
        assert!(errs[0].message.contains("index: a_1 dup key: { a: 1 }"), "{}", errs[0].message);
        let by =
            |f: Document| s.read(|tx| tx.candidates("c", &f)).unwrap().into_iter().map(|(_, d)| d).collect::<Vec<_>>();
        assert!(by(doc! {"t": "z"}).is_empty());
        assert_eq!(by(doc! {"a": 2})[0].get_i32("_id").unwrap(), 2);
        assert_eq!(by(doc! {"t": "y"})[0].get_i32("_id").unwrap(), 1, "array elements are keys");
        assert_eq!(by(doc! {"_id": {"$in": [2, 1]}}).len(), 2);
        // An update that would break uniqueness rolls back as a whole.
        let e = s.write(|tx| tx.replace("d", "c", &[(2, doc! {"_id": 2, "a": 1})])).unwrap_err();
        assert_eq!(e.code, Code::DuplicateKey);
        assert_eq!(by(doc! {"a": 2}).len(), 1);
        s.write(|tx| tx.replace("d", "c", &[(2, doc! {"_id": 2, "a": 5})])).unwrap();
        assert!(by(doc! {"a": 2}).is_empty());
        assert_eq!(by(doc! {"a": 5}).len(), 1);
        s.write(|tx| tx.delete("c", &[2])).unwrap();
        assert!(by(doc! {"a": 5}).is_empty());
        // A unique index the data already breaks is not made.
        let (n, _) =
            s.write(|tx| tx.insert("d", "c", vec![doc! {"_id": 4, "b": 1}, doc! {"_id": 5, "b": 1}], true)).unwrap();
        assert_eq!(n, 1, "a missing unique field is null, and two nulls collide");
        s.write(|tx| tx.insert("d", "c", vec![doc! {"_id": 6, "a": 6, "b": 1}], true)).unwrap();
        let e = s.write(|tx| tx.create_index("d", "c", "b_1", &doc! {"b": 1}, true)).unwrap_err();
        assert_eq!(e.code, Code::DuplicateKey);
        assert_eq!(s.read(|tx| tx.indexes("c")).unwrap().len(), 2);
        assert!(s.drop_collection("c").unwrap());
        assert!(s.read(|tx| tx.indexes("c")).unwrap().is_empty());
    }
}
