//! Secondary indexes: what a document's index keys are, and which index (if any) can
//! answer a filter.
//!
//! A key is the concatenation of one component per indexed field, each the field's
//! equality encoding (`store::id_key`: values MongoDB counts as equal, such as 1 and
//! 1.0, encode to the same bytes). Keys serve equality lookups (`{a: v}`, `$eq`, `$in`)
//! and unique constraints; a filter the planner cannot serve scans the collection.
//! Whatever an index returns is checked again by the full matcher, so an index can only
//! make a query faster, never change its answer.

use bson::{Bson, Document};

use crate::bsonx::path::lookup;
use crate::error::{Code, CommandError};
use crate::store::id_key;

/// An index as stored: its name, its key document as the client gave it, and the
/// SQLite table holding its (key, row) pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexSpec {
    pub name: String,
    pub key: Document,
    pub unique: bool,
    pub table: String,
}

impl IndexSpec {
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.key.keys().map(String::as_str)
    }

    /// As listIndexes shows it.
    pub fn describe(&self) -> Document {
        let mut d = bson::doc! {"v": 2, "key": self.key.clone(), "name": &self.name};
        if self.unique {
            d.insert("unique", true);
        }
        d
    }
}

fn bad(code: Code, message: impl Into<String>) -> CommandError {
    CommandError::new(code, message)
}

/// Checks a createIndexes key document: dotted field names with direction 1 or -1.
/// Special index types are refused by name rather than built wrong.
pub fn check_key(key: &Document) -> Result<(), CommandError> {
    if key.is_empty() || key.len() > 32 {
        return Err(bad(Code::CannotCreateIndex, "an index key needs 1 to 32 fields"));
    }
    for (field, dir) in key {
        if field.is_empty() || field.starts_with('$') || field.split('.').any(str::is_empty) {
            return Err(bad(Code::CannotCreateIndex, format!("bad index key field name {field:?}")));
        }
        match dir {
            Bson::String(kind) => {
                return Err(bad(
                    Code::CannotCreateIndex,
                    format!("{kind:?} indexes are not supported by this server (only ascending/descending fields)"),
                ));
            }
            other => match crate::bsonx::cmp::number(other) {
                Some(n) if n == 1.0 || n == -1.0 => {}
                _ => return Err(bad(Code::CannotCreateIndex, format!("index key {field:?} must be 1 or -1"))),
            },
        }
    }
    Ok(())
}

/// MongoDB's default index name: `a_1_b_-1`.
pub fn default_name(key: &Document) -> String {
    key.iter()
        .map(|(f, d)| {
            let n = crate::bsonx::cmp::number(d).unwrap_or(1.0) as i64;
            format!("{f}_{n}")
        })
        .collect::<Vec<_>>()
        .join("_")
}

/// The values one field contributes to a document's keys: each element of an array
/// (an empty array as itself), null where the path is missing.
fn field_values(doc: &Document, field: &str) -> Vec<Bson> {
    let reached = lookup(doc, field);
    let mut out = Vec::new();
    for v in &reached.values {
        match v {
            Bson::Array(items) if !items.is_empty() => out.extend(items.iter().cloned()),
            other => out.push((*other).clone()),
        }
    }
    if reached.missing || out.is_empty() {
        out.push(Bson::Null);
    }
    out
}

fn component(out: &mut Vec<u8>, v: &Bson) {
    let k = id_key(v);
    out.extend((k.len() as u32).to_be_bytes());
    out.extend(k);
}

/// Every key prefix followed by each value's component: the next field of a compound key.
fn extend_keys(prefixes: Vec<Vec<u8>>, values: &[Bson]) -> Vec<Vec<u8>> {
    prefixes
        .into_iter()
        .flat_map(|prefix| {
            values.iter().map(move |v| {
                let mut k = prefix.clone();
                component(&mut k, v);
                k
            })
        })
        .collect()
}

/// A document's keys in an index (several when a field is an array), deduplicated.
/// Two array fields in one compound key are refused as MongoDB does: their cross
/// product is not what a query on either means.
pub fn keys(doc: &Document, spec: &IndexSpec) -> Result<Vec<Vec<u8>>, CommandError> {
    let per_field: Vec<Vec<Bson>> = spec.fields().map(|f| field_values(doc, f)).collect();
    if per_field.iter().filter(|vs| vs.len() > 1).count() > 1 {
        return Err(bad(
            Code::CannotIndexParallelArrays,
            format!("cannot index parallel arrays in index {}", spec.name),
        ));
    }
    let mut out = vec![Vec::new()];
    for values in &per_field {
        out = extend_keys(out, values);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// How a unique-key conflict is shown: `{ a: 1, b: "x" }` from the document's values.
pub fn shown_key(doc: &Document, spec: &IndexSpec) -> String {
    let parts: Vec<String> = spec
        .fields()
        .map(|f| {
            let v = field_values(doc, f).into_iter().next().unwrap_or(Bson::Null);
            format!("{f}: {v}")
        })
        .collect();
    format!("{{ {} }}", parts.join(", "))
}

/// How a filter's rows are found.
#[derive(Debug, PartialEq)]
pub enum Plan {
    /// Every row of the collection.
    Scan,
    /// Rows by `_id` key.
    Ids(Vec<Vec<u8>>),
    /// Rows by key in an index table.
    Index { table: String, keys: Vec<Vec<u8>> },
}

/// Keys a planner fans out to at most before a scan is cheaper to reason about.
const MAX_PLANNED_KEYS: usize = 1000;

/// A value the equality encoding serves exactly as MongoDB's equality does. Documents
/// and arrays (order- and type-sensitive inside), regexes (a match, not an equality),
/// decimals and integers past 2^53 (compared across types by value) go to a scan.
fn plannable(v: &Bson) -> bool {
    match v {
        Bson::Document(_) | Bson::Array(_) | Bson::RegularExpression(_) | Bson::Decimal128(_) => false,
        Bson::Int64(i) => i.unsigned_abs() < (1 << 53),
        Bson::Double(d) => d.is_finite() && d.abs() < 9.0e15,
        Bson::MinKey | Bson::MaxKey | Bson::Undefined => false,
        _ => true,
    }
}

/// The values a top-level filter entry asks `field` to equal: `{f: v}`, `{f: {$eq: v}}`
/// or `{f: {$in: [..]}}`; `None` when the entry is anything else.
fn equal_values(filter: &Document, field: &str) -> Option<Vec<Bson>> {
    let v = filter.get(field)?;
    let values = match v {
        Bson::Document(ops) if ops.keys().next().is_some_and(|k| k.starts_with('$')) => {
            if ops.len() != 1 {
                return None;
            }
            match ops.iter().next()? {
                (op, v) if op == "$eq" => vec![v.clone()],
                (op, Bson::Array(items)) if op == "$in" => items.clone(),
                _ => return None,
            }
        }
        other => vec![other.clone()],
    };
    values.iter().all(plannable).then_some(values)
}

/// Picks `_id` equality first, then the first index whose every field the filter
/// pins to values; otherwise a scan.
pub fn plan(filter: &Document, indexes: &[IndexSpec]) -> Plan {
    if let Some(ids) = equal_values(filter, "_id") {
        return Plan::Ids(ids.iter().map(id_key).collect());
    }
    'index: for spec in indexes {
        let mut keys = vec![Vec::new()];
        for field in spec.fields() {
            let Some(values) = equal_values(filter, field) else { continue 'index };
            if keys.len() * values.len() > MAX_PLANNED_KEYS {
                continue 'index;
            }
            keys = extend_keys(keys, &values);
        }
        return Plan::Index { table: spec.table.clone(), keys };
    }
    Plan::Scan
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;

    fn spec(key: Document) -> IndexSpec {
        IndexSpec { name: default_name(&key), key, unique: false, table: "x_1".into() }
    }

    #[test]
    fn keys_fan_out_over_arrays_and_equal_numbers_collide() {
        let s = spec(doc! {"a": 1});
        assert_eq!(keys(&doc! {"a": 1}, &s).unwrap(), keys(&doc! {"a": 1.0}, &s).unwrap());
        assert_eq!(keys(&doc! {"a": [1, 2, 1]}, &s).unwrap().len(), 2);
        assert_eq!(keys(&doc! {"b": 1}, &s).unwrap(), keys(&doc! {"a": null}, &s).unwrap(), "missing is null");
        let c = spec(doc! {"a": 1, "b.c": -1});
        assert_eq!(c.name, "a_1_b.c_-1");
        assert_eq!(keys(&doc! {"a": 1, "b": [{"c": 1}, {"c": 2}]}, &c).unwrap().len(), 2);
        let e = keys(&doc! {"a": [1, 2], "b": {"c": [1, 2]}}, &c).unwrap_err();
        assert_eq!(e.code, Code::CannotIndexParallelArrays);
    }

    #[test]
    fn plans_serve_equality_only() {
        let idx = vec![spec(doc! {"a": 1, "b": 1}), spec(doc! {"c": 1})];
        assert!(matches!(plan(&doc! {"_id": 5, "c": 1}, &idx), Plan::Ids(k) if k.len() == 1));
        assert!(matches!(plan(&doc! {"c": {"$in": [1, 2, "x"]}}, &idx), Plan::Index { keys, .. } if keys.len() == 3));
        assert!(matches!(plan(&doc! {"a": 1, "b": {"$eq": 2}}, &idx), Plan::Index { keys, .. } if keys.len() == 1));
        assert_eq!(plan(&doc! {"a": 1}, &idx), Plan::Scan, "a compound index needs every field");
        assert_eq!(plan(&doc! {"c": {"$gt": 1}}, &idx), Plan::Scan);
        assert_eq!(plan(&doc! {"c": [1, 2]}, &idx), Plan::Scan, "whole-array equality");
        assert_eq!(plan(&doc! {"c": {"x": 1}}, &idx), Plan::Scan);
    }

    #[test]
    fn key_documents_are_checked() {
        assert!(check_key(&doc! {"a": 1, "b.c": -1}).is_ok());
        assert_eq!(check_key(&doc! {"a": "text"}).unwrap_err().code, Code::CannotCreateIndex);
        assert_eq!(check_key(&doc! {"a": 2}).unwrap_err().code, Code::CannotCreateIndex);
        assert_eq!(check_key(&doc! {"$a": 1}).unwrap_err().code, Code::CannotCreateIndex);
        assert_eq!(check_key(&doc! {}).unwrap_err().code, Code::CannotCreateIndex);
    }
}
