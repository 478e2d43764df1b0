//! The data commands on a tenant's database: insert, find (with getMore and
//! killCursors), delete, count, and the collection commands (create, drop,
//! listCollections, dropDatabase); the index commands are in `index_commands`. Every
//! write statement is one SQLite transaction, committed before the reply.

use std::cmp::Ordering;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bson::{Bson, Document, doc};

use crate::bsonx::cmp::compare;
use crate::bsonx::path::lookup;
use crate::error::{Code, CommandError, CommandResult};
use crate::projection::project;
use crate::query;
use crate::store::{Store, Tx, check_collection};

/// A find's documents beyond its first batch, for getMore. Drivers may ask for the next
/// batch on another pooled connection, so cursors are the server's, tied to a user.
struct Cursor {
    user: String,
    ns: String,
    docs: VecDeque<Document>,
    touched: Instant,
}

#[derive(Default)]
pub struct Cursors {
    open: Mutex<HashMap<i64, Cursor>>,
}

/// Open cursors kept at most, and how long an idle one lives (MongoDB's default).
const MAX_CURSORS: usize = 10_000;
const CURSOR_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const DEFAULT_BATCH: usize = 101;

impl Cursors {
    pub fn forget_user(&self, user: &str) {
        self.open.lock().expect("cursors lock").retain(|_, c| c.user != user);
    }

    fn open(&self, user: &str, ns: &str, docs: VecDeque<Document>) -> i64 {
        let mut open = self.open.lock().expect("cursors lock");
        open.retain(|_, c| c.touched.elapsed() < CURSOR_TIMEOUT);
        if open.len() >= MAX_CURSORS
            && let Some(oldest) = open.iter().min_by_key(|(_, c)| c.touched).map(|(id, _)| *id)
        {
            open.remove(&oldest);
        }
        let mut id = 0i64;
        while id <= 0 || open.contains_key(&id) {
            let mut b = [0u8; 8];
            getrandom::fill(&mut b).expect("the OS has randomness");
            id = i64::from_le_bytes(b) & i64::MAX;
        }
        open.insert(id, Cursor { user: user.to_owned(), ns: ns.to_owned(), docs, touched: Instant::now() });
        id
    }
}

/// What a data command runs with: the tenant's store, its database name and user.
pub struct Ctx {
    pub store: Arc<Store>,
    pub db: String,
    pub user: String,
    pub cursors: Arc<Cursors>,
}

pub(crate) fn bad(message: impl Into<String>) -> CommandError {
    CommandError::new(Code::BadValue, message)
}

/// The collection a command names in its `name` field, checked.
pub(crate) fn collection<'a>(cmd: &'a Document, name: &str) -> Result<&'a str, CommandError> {
    let c = cmd.get_str(name).map_err(|_| bad(format!("{name} needs a collection name")))?;
    check_collection(c)?;
    Ok(c)
}

fn count_arg(cmd: &Document, name: &str) -> Result<Option<usize>, CommandError> {
    match cmd.get(name) {
        None | Some(Bson::Null) => Ok(None),
        Some(v) => match crate::bsonx::cmp::number(v) {
            Some(n) if n >= 0.0 => Ok(Some(n as usize)),
            _ => Err(bad(format!("{name} must be a non-negative number"))),
        },
    }
}

fn documents(cmd: &Document, field: &str) -> Result<Vec<Document>, CommandError> {
    match cmd.get(field) {
        Some(Bson::Array(items)) => items
            .iter()
            .map(|i| match i {
                Bson::Document(d) => Ok(d.clone()),
                _ => Err(bad(format!("{field} entries must be documents"))),
            })
            .collect(),
        _ => Err(bad(format!("{field} must be an array of documents"))),
    }
}

/// Runs `name` if it is a data command; `None` when it is not one.
pub fn run(ctx: &Ctx, name: &str, cmd: &Document) -> Option<CommandResult> {
    Some(match name {
        "insert" => insert(ctx, cmd),
        "find" => find(ctx, cmd),
        "getMore" => get_more(ctx, cmd),
        "killCursors" => kill_cursors(ctx, cmd),
        "delete" => delete(ctx, cmd),
        "update" => update(ctx, cmd),
        "findAndModify" | "findandmodify" => find_and_modify(ctx, cmd),
        "count" => count(ctx, cmd),
        "distinct" => distinct(ctx, cmd),
        "aggregate" => aggregate(ctx, cmd),
        // Creating a collection that exists (with no options: this server has none) is
        // ok, as in MongoDB 7.0.
        "create" => collection(cmd, "create").and_then(|c| {
            ctx.store.create(c)?;
            Ok(doc! {"ok": 1.0})
        }),
        "drop" => collection(cmd, "drop").and_then(|c| {
            let was = ctx.store.write(|tx| {
                let was = tx.indexes(c)?.len() + 1;
                tx.drop_collection(c)?;
                Ok(was)
            })?;
            Ok(doc! {"ns": format!("{}.{c}", ctx.db), "nIndexesWas": was as i32, "ok": 1.0})
        }),
        "dropDatabase" => ctx.store.write(|tx| {
            for c in tx.collections()? {
                tx.drop_collection(&c)?;
            }
            Ok(doc! {"dropped": &ctx.db, "ok": 1.0})
        }),
        "listCollections" => list_collections(ctx, cmd),
        "listIndexes" => crate::index_commands::list_indexes(ctx, cmd),
        "createIndexes" => crate::index_commands::create_indexes(ctx, cmd),
        "dropIndexes" | "deleteIndexes" => crate::index_commands::drop_indexes(ctx, cmd),
        _ => return None,
    })
}

fn insert(ctx: &Ctx, cmd: &Document) -> CommandResult {
    let coll = collection(cmd, "insert")?;
    let docs = documents(cmd, "documents")?;
    let ordered = cmd.get_bool("ordered").unwrap_or(true);
    let (n, errors) = ctx.store.write(|tx| tx.insert(&ctx.db, coll, docs, ordered))?;
    let mut reply = doc! {"n": n as i32, "ok": 1.0};
    if !errors.is_empty() {
        let list: Vec<Bson> = errors
            .into_iter()
            .map(|e| Bson::Document(doc! {"index": e.index as i32, "code": e.code, "errmsg": e.message}))
            .collect();
        reply.insert("writeErrors", list);
    }
    Ok(reply)
}

/// The documents of `coll` that match `filter`, with their row ids.
fn matching(tx: &Tx, coll: &str, filter: Option<&Document>) -> Result<Vec<(i64, Document)>, CommandError> {
    let empty = Document::new();
    let filter = filter.unwrap_or(&empty);
    let f = query::compile(filter)?;
    Ok(tx.candidates(coll, filter)?.into_iter().filter(|(_, d)| f.matches(d)).collect())
}

/// A document's sort key on `path` in one direction: MongoDB sorts an array by its
/// smallest element ascending and its largest descending, an empty array before null,
/// and a missing field as null.
fn sort_key(doc: &Document, path: &str, descending: bool) -> Bson {
    let reached = lookup(doc, path);
    let mut best: Option<&Bson> = None;
    let mut empty_array = false;
    for v in &reached.values {
        let items: Vec<&Bson> = match v {
            Bson::Array(items) if items.is_empty() => {
                empty_array = true;
                continue;
            }
            Bson::Array(items) => items.iter().collect(),
            other => vec![*other],
        };
        for v in items {
            let better = best.is_none_or(|b| {
                let o = compare(v, b);
                if descending { o == Ordering::Greater } else { o == Ordering::Less }
            });
            if better {
                best = Some(v);
            }
        }
    }
    match best {
        Some(v) => v.clone(),
        None if empty_array && !descending => Bson::Undefined,
        None if reached.missing || reached.values.is_empty() || !descending => Bson::Null,
        None => Bson::Undefined,
    }
}

/// Sorts documents by a `{field: 1 | -1}` spec.
pub(crate) fn sort(docs: &mut [Document], spec: &Document) -> Result<(), CommandError> {
    let order = order_of(spec)?;
    docs.sort_by(|a, b| order(a, b));
    Ok(())
}

/// Sorts (row id, document) pairs by a sort spec, as [`sort`] does documents.
fn sort_rows(rows: &mut [(i64, Document)], spec: &Document) -> Result<(), CommandError> {
    let order = order_of(spec)?;
    rows.sort_by(|a, b| order(&a.1, &b.1));
    Ok(())
}

fn order_of(spec: &Document) -> Result<impl Fn(&Document, &Document) -> Ordering, CommandError> {
    let mut keys = Vec::new();
    for (k, v) in spec {
        let dir = match crate::bsonx::cmp::number(v) {
            Some(1.0) => Ordering::Less,
            Some(-1.0) => Ordering::Greater,
            _ => return Err(bad(format!("$sort key ordering must be 1 (for ascending) or -1 (for descending): {k}"))),
        };
        keys.push((k.clone(), dir));
    }
    Ok(move |a: &Document, b: &Document| {
        for (k, dir) in &keys {
            let descending = *dir == Ordering::Greater;
            let o = compare(&sort_key(a, k, descending), &sort_key(b, k, descending));
            if o != Ordering::Equal {
                return if *dir == Ordering::Less { o } else { o.reverse() };
            }
        }
        Ordering::Equal
    })
}

fn find(ctx: &Ctx, cmd: &Document) -> CommandResult {
    let coll = collection(cmd, "find")?;
    let filter = cmd.get_document("filter").ok();
    let mut docs: Vec<Document> =
        ctx.store.read(|tx| matching(tx, coll, filter))?.into_iter().map(|(_, d)| d).collect();
    if let Ok(spec) = cmd.get_document("sort") {
        sort(&mut docs, spec)?;
    }
    let skip = count_arg(cmd, "skip")?.unwrap_or(0);
    let limit = count_arg(cmd, "limit")?.filter(|l| *l > 0).unwrap_or(usize::MAX);
    let projection = cmd.get_document("projection").cloned().unwrap_or_default();
    let docs: VecDeque<Document> =
        docs.into_iter().skip(skip).take(limit).map(|d| project(d, &projection)).collect::<Result<_, _>>()?;
    let batch = count_arg(cmd, "batchSize")?.unwrap_or(DEFAULT_BATCH);
    let single = cmd.get_bool("singleBatch").unwrap_or(false);
    Ok(first_batch(ctx, coll, docs, batch, single))
}

fn first_batch(ctx: &Ctx, coll: &str, mut docs: VecDeque<Document>, batch: usize, single: bool) -> Document {
    let ns = format!("{}.{coll}", ctx.db);
    let first: Vec<Bson> = docs.drain(..batch.min(docs.len())).map(Bson::Document).collect();
    let id = if docs.is_empty() || single { 0 } else { ctx.cursors.open(&ctx.user, &ns, docs) };
    doc! {"cursor": {"firstBatch": first, "id": id, "ns": ns}, "ok": 1.0}
}

fn get_more(ctx: &Ctx, cmd: &Document) -> CommandResult {
    let id = cmd.get_i64("getMore").map_err(|_| bad("getMore needs a cursor id (a long)"))?;
    let coll = collection(cmd, "collection")?;
    let batch = count_arg(cmd, "batchSize")?.unwrap_or(DEFAULT_BATCH).max(1);
    let ns = format!("{}.{coll}", ctx.db);
    let mut open = ctx.cursors.open.lock().expect("cursors lock");
    let not_found = || CommandError::new(Code::CursorNotFound, format!("cursor id {id} not found"));
    let cursor = open.get_mut(&id).filter(|c| c.user == ctx.user && c.ns == ns).ok_or_else(not_found)?;
    if cursor.touched.elapsed() >= CURSOR_TIMEOUT {
        open.remove(&id);
        return Err(not_found());
    }
    cursor.touched = Instant::now();
    let next: Vec<Bson> = cursor.docs.drain(..batch.min(cursor.docs.len())).map(Bson::Document).collect();
    let left = if cursor.docs.is_empty() {
        open.remove(&id);
        0
    } else {
        id
    };
    Ok(doc! {"cursor": {"nextBatch": next, "id": left, "ns": ns}, "ok": 1.0})
}

fn kill_cursors(ctx: &Ctx, cmd: &Document) -> CommandResult {
    let coll = collection(cmd, "killCursors")?;
    let ns = format!("{}.{coll}", ctx.db);
    let ids = cmd.get_array("cursors").map_err(|_| bad("cursors must be an array"))?;
    let mut open = ctx.cursors.open.lock().expect("cursors lock");
    let (mut killed, mut missing) = (Vec::new(), Vec::new());
    for id in ids {
        let Bson::Int64(id) = id else { return Err(bad("cursor ids are longs")) };
        if open.get(id).is_some_and(|c| c.user == ctx.user && c.ns == ns) {
            open.remove(id);
            killed.push(Bson::Int64(*id));
        } else {
            missing.push(Bson::Int64(*id));
        }
    }
    Ok(doc! {"cursorsKilled": killed, "cursorsNotFound": missing, "cursorsAlive": [], "cursorsUnknown": [], "ok": 1.0})
}

/// One update statement: how many matched and were changed, and an upserted `_id`.
struct Updated {
    matched: usize,
    modified: usize,
    upserted: Option<Bson>,
    /// The document before and after, for findAndModify.
    before: Option<Document>,
    after: Option<Document>,
}

/// One update statement's arguments.
struct Statement<'a> {
    q: &'a Document,
    u: &'a Document,
    multi: bool,
    upsert: bool,
    sort_by: Option<&'a Document>,
}

fn update_one_statement(ctx: &Ctx, tx: &Tx, coll: &str, st: &Statement) -> Result<Updated, CommandError> {
    let Statement { q, u, multi, upsert, sort_by } = *st;
    if multi && !crate::update::is_operators(u) {
        return Err(CommandError::new(
            Code::FailedToParse,
            "multi update is not supported for replacement-style update",
        ));
    }
    let mut found = matching(tx, coll, Some(q))?;
    if let Some(spec) = sort_by {
        sort_rows(&mut found, spec)?;
    }
    if !multi {
        found.truncate(1);
    }
    if found.is_empty() {
        if !upsert {
            return Ok(Updated { matched: 0, modified: 0, upserted: None, before: None, after: None });
        }
        let seed = crate::update::seed_from_filter(q);
        let mut new = if crate::update::is_operators(u) {
            crate::update::apply(&seed, u, true)?
        } else {
            let mut r = crate::update::apply(&Document::new(), u, true)?;
            if let Some(id) = seed.get("_id") {
                r.insert("_id", id.clone());
            }
            r
        };
        if !new.contains_key("_id") {
            let mut with = doc! {"_id": bson::oid::ObjectId::new()};
            with.extend(new);
            new = with;
        }
        let id = new.get("_id").cloned();
        let (_, errors) = tx.insert(&ctx.db, coll, vec![new.clone()], true)?;
        if let Some(e) = errors.into_iter().next() {
            return Err(CommandError::new(Code::DuplicateKey, e.message));
        }
        return Ok(Updated { matched: 0, modified: 0, upserted: id, before: None, after: Some(new) });
    }
    let mut changed = Vec::new();
    let mut before = None;
    let mut after = None;
    for (rid, doc) in &found {
        let next = crate::update::apply(doc, u, false)?;
        if before.is_none() {
            before = Some(doc.clone());
            after = Some(next.clone());
        }
        if next != *doc {
            changed.push((*rid, next));
        }
    }
    let modified = tx.replace(&ctx.db, coll, &changed)?;
    Ok(Updated { matched: found.len(), modified, upserted: None, before, after })
}

fn update(ctx: &Ctx, cmd: &Document) -> CommandResult {
    let coll = collection(cmd, "update")?;
    let ordered = cmd.get_bool("ordered").unwrap_or(true);
    let (mut n, mut modified) = (0usize, 0usize);
    let mut upserted = Vec::new();
    let mut write_errors = Vec::new();
    for (index, st) in documents(cmd, "updates")?.into_iter().enumerate() {
        let q = st.get_document("q").map_err(|_| bad("an update needs q"))?;
        let u = match st.get("u") {
            Some(Bson::Document(u)) => u,
            Some(Bson::Array(_)) => {
                return Err(CommandError::new(Code::NotImplemented, "pipeline-style updates are not supported yet"));
            }
            _ => return Err(bad("an update needs u")),
        };
        let multi = st.get_bool("multi").unwrap_or(false);
        let upsert = st.get_bool("upsert").unwrap_or(false);
        // Each statement is atomic and durable on its own, as MongoDB's are.
        match ctx
            .store
            .write(|tx| update_one_statement(ctx, tx, coll, &Statement { q, u, multi, upsert, sort_by: None }))
        {
            Ok(r) => {
                n += r.matched;
                modified += r.modified;
                if let Some(id) = r.upserted {
                    n += 1;
                    upserted.push(Bson::Document(doc! {"index": index as i32, "_id": id}));
                }
            }
            // A statement's own failure is a write error, as MongoDB reports it; the
            // server's (storage, shutdown) fails the command.
            Err(e) if !matches!(e.code, Code::InternalError | Code::ShutdownInProgress) => {
                write_errors
                    .push(Bson::Document(doc! {"index": index as i32, "code": e.code.number(), "errmsg": e.message}));
                if ordered {
                    break;
                }
            }
            Err(e) => return Err(e),
        }
    }
    let mut reply = doc! {"n": n as i32, "nModified": modified as i32, "ok": 1.0};
    if !upserted.is_empty() {
        reply.insert("upserted", upserted);
    }
    if !write_errors.is_empty() {
        reply.insert("writeErrors", write_errors);
    }
    Ok(reply)
}

fn find_and_modify(ctx: &Ctx, cmd: &Document) -> CommandResult {
    let coll = collection(cmd, if cmd.contains_key("findAndModify") { "findAndModify" } else { "findandmodify" })?;
    let empty = Document::new();
    let q = cmd.get_document("query").unwrap_or(&empty);
    let sort_by = cmd.get_document("sort").ok();
    let fields = cmd.get_document("fields").cloned().unwrap_or_default();
    let new = cmd.get_bool("new").unwrap_or(false);
    if cmd.get_bool("remove").unwrap_or(false) {
        let removed = ctx.store.write(|tx| {
            let mut found = matching(tx, coll, Some(q))?;
            if let Some(spec) = sort_by {
                sort_rows(&mut found, spec)?;
            }
            let Some((rid, doc)) = found.into_iter().next() else { return Ok(None) };
            tx.delete(coll, &[rid])?;
            Ok(Some(doc))
        })?;
        let Some(doc) = removed else {
            return Ok(doc! {"lastErrorObject": {"n": 0}, "value": Bson::Null, "ok": 1.0});
        };
        return Ok(doc! {"lastErrorObject": {"n": 1}, "value": project(doc, &fields)?, "ok": 1.0});
    }
    let u = cmd.get_document("update").map_err(|_| bad("findAndModify needs update or remove"))?;
    let upsert = cmd.get_bool("upsert").unwrap_or(false);
    let r = ctx
        .store
        .write(|tx| update_one_statement(ctx, tx, coll, &Statement { q, u, multi: false, upsert, sort_by }))?;
    let value = if new { r.after } else { r.before };
    let value = match value {
        Some(d) => Bson::Document(project(d, &fields)?),
        None => Bson::Null,
    };
    let mut last = doc! {"n": (r.matched + usize::from(r.upserted.is_some())) as i32, "updatedExisting": r.matched > 0};
    if let Some(id) = r.upserted {
        last.insert("upserted", id);
    }
    Ok(doc! {"lastErrorObject": last, "value": value, "ok": 1.0})
}

fn delete(ctx: &Ctx, cmd: &Document) -> CommandResult {
    let coll = collection(cmd, "delete")?;
    let mut n = 0;
    for d in documents(cmd, "deletes")? {
        let q = d.get_document("q").map_err(|_| bad("a delete needs q"))?;
        let one = match d.get("limit").and_then(crate::bsonx::cmp::number) {
            Some(1.0) => true,
            Some(0.0) => false,
            _ => return Err(bad("a delete's limit must be 0 or 1")),
        };
        n += ctx.store.write(|tx| {
            let mut rids: Vec<i64> = matching(tx, coll, Some(q))?.into_iter().map(|(rid, _)| rid).collect();
            if one {
                rids.truncate(1);
            }
            tx.delete(coll, &rids)
        })?;
    }
    Ok(doc! {"n": n as i32, "ok": 1.0})
}

fn aggregate(ctx: &Ctx, cmd: &Document) -> CommandResult {
    let coll = collection(cmd, "aggregate")?;
    let pipeline = cmd.get_array("pipeline").map_err(|_| bad("aggregate needs a pipeline array"))?;
    let out = ctx.store.read(|tx| {
        let docs = tx.candidates(coll, &Document::new())?.into_iter().map(|(_, d)| d).collect();
        // $lookup reads other collections in the same transaction: one consistent view.
        let load = |other: &str| -> Result<Vec<Document>, CommandError> {
            check_collection(other)?;
            Ok(tx.candidates(other, &Document::new())?.into_iter().map(|(_, d)| d).collect())
        };
        crate::aggregate::run(docs, pipeline, &load)
    })?;
    let batch = cmd
        .get_document("cursor")
        .ok()
        .map(|c| count_arg(c, "batchSize"))
        .transpose()?
        .flatten()
        .unwrap_or(DEFAULT_BATCH);
    Ok(first_batch(ctx, coll, out.into(), batch, false))
}

fn count(ctx: &Ctx, cmd: &Document) -> CommandResult {
    let coll = collection(cmd, "count")?;
    let n = ctx.store.read(|tx| matching(tx, coll, cmd.get_document("query").ok()))?.len();
    let n = n.saturating_sub(count_arg(cmd, "skip")?.unwrap_or(0));
    let n = count_arg(cmd, "limit")?.filter(|l| *l > 0).map_or(n, |l| n.min(l));
    Ok(doc! {"n": n as i32, "ok": 1.0})
}

/// The distinct values of a field over matching documents (array elements count one
/// by one), in MongoDB's value order.
fn distinct(ctx: &Ctx, cmd: &Document) -> CommandResult {
    let coll = collection(cmd, "distinct")?;
    let key = cmd.get_str("key").map_err(|_| bad("distinct needs a key (a field path string)"))?;
    if key.is_empty() || key.starts_with('$') {
        return Err(bad(format!("bad distinct key {key:?}")));
    }
    let rows = ctx.store.read(|tx| matching(tx, coll, cmd.get_document("query").ok()))?;
    let mut values: Vec<Bson> = Vec::new();
    for (_, d) in &rows {
        for v in lookup(d, key).values {
            let items = match v {
                Bson::Array(items) => items.clone(),
                other => vec![other.clone()],
            };
            values.extend(items);
        }
    }
    values.sort_by(compare);
    values.dedup_by(|a, b| compare(a, b) == Ordering::Equal);
    Ok(doc! {"values": values, "ok": 1.0})
}

fn list_collections(ctx: &Ctx, cmd: &Document) -> CommandResult {
    let filter = query::compile(cmd.get_document("filter").unwrap_or(&Document::new()))?;
    let name_only = cmd.get_bool("nameOnly").unwrap_or(false);
    let batch: Vec<Bson> = ctx
        .store
        .collections()?
        .into_iter()
        .map(|name| {
            if name_only {
                doc! {"name": name, "type": "collection"}
            } else {
                doc! {"name": name, "type": "collection", "options": {}, "info": {"readOnly": false}, "idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"}}
            }
        })
        .filter(|d| filter.matches(d))
        .map(Bson::Document)
        .collect();
    Ok(doc! {"cursor": {"firstBatch": batch, "id": 0_i64, "ns": format!("{}.$cmd.listCollections", ctx.db)}, "ok": 1.0})
}
