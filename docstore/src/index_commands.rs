//! createIndexes, listIndexes and dropIndexes, with MongoDB's replies and conflict
//! codes. The `_id` index is every collection's own and is listed, never built or
//! dropped.

use bson::{Bson, Document, doc};

use crate::crud::{Ctx, bad, collection};
use crate::error::{Code, CommandError, CommandResult};
use crate::index::{self, IndexSpec};

fn id_index() -> Document {
    doc! {"v": 2, "key": {"_id": 1}, "name": "_id_"}
}

/// Options a client may pass that this server honours or that change nothing here.
const ACCEPTED_OPTIONS: &[&str] = &["key", "name", "unique", "v", "background", "ns"];

/// One requested index, checked: its name, key and uniqueness.
fn requested(entry: &Bson) -> Result<(String, Document, bool), CommandError> {
    let Bson::Document(d) = entry else { return Err(bad("indexes entries must be documents")) };
    let key = d.get_document("key").map_err(|_| bad("an index needs a key document"))?;
    index::check_key(key)?;
    for option in d.keys() {
        if !ACCEPTED_OPTIONS.contains(&option.as_str()) {
            return Err(CommandError::new(
                Code::NotImplemented,
                format!(
                    "index option {option} is not supported by this server (TTL, sparse and partial indexes are not)"
                ),
            ));
        }
    }
    let name = match d.get("name") {
        None => index::default_name(key),
        Some(Bson::String(n)) if !n.is_empty() && n.len() <= 255 && !n.contains('\0') => n.clone(),
        Some(_) => return Err(bad("an index name must be a non-empty string of at most 255 bytes")),
    };
    if name == "_id_" || key.keys().eq(["_id"]) {
        return Err(CommandError::new(Code::CannotCreateIndex, "the _id index exists on every collection"));
    }
    let unique = match d.get("unique") {
        None => false,
        Some(Bson::Boolean(b)) => *b,
        Some(v) => crate::bsonx::cmp::number(v).is_some_and(|n| n != 0.0),
    };
    Ok((name, key.clone(), unique))
}

pub fn create_indexes(ctx: &Ctx, cmd: &Document) -> CommandResult {
    let coll = collection(cmd, "createIndexes")?;
    let wanted = cmd.get_array("indexes").map_err(|_| bad("createIndexes needs an indexes array"))?;
    if wanted.is_empty() {
        return Err(bad("Must specify at least one index to create"));
    }
    let wanted = wanted.iter().map(requested).collect::<Result<Vec<_>, _>>()?;
    ctx.store.write(|tx| {
        let made_collection = tx.collections()?.iter().all(|c| c != coll);
        let existing = tx.indexes(coll)?;
        let before = existing.len() + 1;
        let mut after = before;
        for (name, key, unique) in &wanted {
            if let Some(same) = existing.iter().find(|s| &s.name == name) {
                if &same.key != key {
                    return Err(CommandError::new(
                        Code::IndexKeySpecsConflict,
                        format!("An existing index has the same name as the requested index: {name}"),
                    ));
                }
                if same.unique != *unique {
                    return Err(CommandError::new(
                        Code::IndexOptionsConflict,
                        format!("Index {name} exists with different options"),
                    ));
                }
                continue;
            }
            if let Some(same) = existing.iter().find(|s| &s.key == key) {
                return Err(CommandError::new(
                    Code::IndexOptionsConflict,
                    format!("Index already exists with a different name: {}", same.name),
                ));
            }
            tx.create_index(&ctx.db, coll, name, key, *unique)?;
            after += 1;
        }
        let mut reply = doc! {
            "numIndexesBefore": before as i32,
            "numIndexesAfter": after as i32,
            "createdCollectionAutomatically": made_collection,
            "ok": 1.0,
        };
        if before == after {
            reply.insert("note", "all indexes already exist");
        }
        Ok(reply)
    })
}

pub fn list_indexes(ctx: &Ctx, cmd: &Document) -> CommandResult {
    let coll = collection(cmd, "listIndexes")?;
    let ns = format!("{}.{coll}", ctx.db);
    let specs = ctx.store.read(|tx| {
        if tx.collections()?.iter().all(|c| c != coll) {
            return Err(CommandError::new(Code::NamespaceNotFound, format!("ns does not exist: {ns}")));
        }
        tx.indexes(coll)
    })?;
    let batch: Vec<Bson> =
        std::iter::once(id_index()).chain(specs.iter().map(IndexSpec::describe)).map(Bson::Document).collect();
    Ok(doc! {"cursor": {"firstBatch": batch, "id": 0_i64, "ns": ns}, "ok": 1.0})
}

/// Which indexes a dropIndexes names: `"*"` (all but `_id_`), a name, a list of names,
/// or a key document.
fn chosen<'a>(which: &Bson, specs: &'a [IndexSpec]) -> Result<Vec<&'a IndexSpec>, CommandError> {
    let not_found = |what: String| CommandError::new(Code::IndexNotFound, format!("index not found with {what}"));
    let id_refused = || CommandError::new(Code::InvalidOptions, "cannot drop _id index");
    let by_name = |n: &str| -> Result<&'a IndexSpec, CommandError> {
        if n == "_id_" {
            return Err(id_refused());
        }
        specs.iter().find(|s| s.name == n).ok_or_else(|| not_found(format!("name {n}")))
    };
    match which {
        Bson::String(s) if s == "*" => Ok(specs.iter().collect()),
        Bson::String(s) => Ok(vec![by_name(s)?]),
        Bson::Array(names) => names
            .iter()
            .map(|n| match n {
                Bson::String(n) => by_name(n),
                _ => Err(bad("index names must be strings")),
            })
            .collect(),
        Bson::Document(key) if key.keys().eq(["_id"]) => Err(id_refused()),
        Bson::Document(key) => {
            specs.iter().find(|s| &s.key == key).map(|s| vec![s]).ok_or_else(|| not_found(format!("key pattern {key}")))
        }
        _ => Err(bad("index must be a name, a list of names, a key document or \"*\"")),
    }
}

pub fn drop_indexes(ctx: &Ctx, cmd: &Document) -> CommandResult {
    let coll = collection(cmd, "dropIndexes")?;
    let which = cmd.get("index").ok_or_else(|| bad("dropIndexes needs index"))?;
    ctx.store.write(|tx| {
        if tx.collections()?.iter().all(|c| c != coll) {
            return Err(CommandError::new(Code::NamespaceNotFound, format!("ns not found {}.{coll}", ctx.db)));
        }
        let specs = tx.indexes(coll)?;
        for spec in chosen(which, &specs)? {
            tx.drop_index(coll, spec)?;
        }
        Ok(doc! {"nIndexesWas": (specs.len() + 1) as i32, "ok": 1.0})
    })
}
