//! Update documents: a replacement, or operators applied in place (`$set $unset $inc
//! $mul $min $max $rename $push $addToSet $pull $pop $currentDate $setOnInsert`), with
//! dotted paths that make missing parents. `_id` cannot change.

use std::cmp::Ordering;

use bson::{Bson, DateTime, Document};

use crate::bsonx::cmp::{compare, equal, number};
use crate::error::{Code, CommandError};

fn bad(message: impl Into<String>) -> CommandError {
    CommandError::new(Code::BadValue, message)
}

/// Whether an update is operators (`{$set: ...}`) rather than a replacement document.
pub fn is_operators(u: &Document) -> bool {
    u.keys().next().is_some_and(|k| k.starts_with('$'))
}

/// The document after `u`; `inserting` says whether it is an upsert's new document
/// (where `$setOnInsert` applies).
/// Two operators on one path, or on a path and one inside it (`a` and `a.b`), are
/// refused as MongoDB does: which would win is not defined.
fn check_conflicts(u: &Document) -> Result<(), CommandError> {
    let mut seen: Vec<&str> = Vec::new();
    for fields in u.values() {
        let Bson::Document(fields) = fields else { continue };
        for (path, arg) in fields {
            let mut paths = vec![path.as_str()];
            if let Bson::String(to) = arg
                && u.get_document("$rename").is_ok_and(|r| r.get(path) == Some(arg))
            {
                paths.push(to.as_str());
            }
            for p in paths {
                let clash = seen.iter().find(|s| {
                    **s == p
                        || p.strip_prefix(**s).is_some_and(|r| r.starts_with('.'))
                        || s.strip_prefix(p).is_some_and(|r| r.starts_with('.'))
                });
                if let Some(other) = clash {
                    return Err(CommandError::new(
                        Code::ConflictingUpdateOperators,
                        format!("Updating the path '{p}' would create a conflict at '{other}'"),
                    ));
                }
                seen.push(p);
            }
        }
    }
    Ok(())
}

pub fn apply(doc: &Document, u: &Document, inserting: bool) -> Result<Document, CommandError> {
    let id = doc.get("_id").cloned();
    let out = if is_operators(u) {
        check_conflicts(u)?;
        let mut out = doc.clone();
        for (op, fields) in u {
            let Bson::Document(fields) = fields else {
                return Err(CommandError::new(
                    Code::FailedToParse,
                    format!("Modifiers operate on fields but we found a non-object for {op}"),
                ));
            };
            for (path, arg) in fields {
                let keeps_id = op == "$setOnInsert" || (op == "$set" && id.as_ref().is_some_and(|i| equal(i, arg)));
                if (path == "_id" || path.starts_with("_id.")) && !keeps_id {
                    return Err(CommandError::new(
                        Code::ImmutableField,
                        "Performing an update on the path '_id' would modify the immutable field '_id'",
                    ));
                }
                operator(&mut out, op, path, arg, inserting)?;
            }
        }
        out
    } else {
        if u.keys().any(|k| k.starts_with('$')) {
            return Err(bad("a replacement document cannot hold update operators"));
        }
        let mut out = Document::new();
        if let Some(id) = &id {
            if u.get("_id").is_some_and(|n| !equal(n, id)) {
                return Err(CommandError::new(
                    Code::ImmutableField,
                    "the (immutable) field '_id' was found to have been altered",
                ));
            }
            out.insert("_id", id.clone());
        }
        out.extend(u.iter().filter(|(k, _)| *k != "_id" || id.is_none()).map(|(k, v)| (k.clone(), v.clone())));
        out
    };
    Ok(out)
}

fn operator(doc: &mut Document, op: &str, path: &str, arg: &Bson, inserting: bool) -> Result<(), CommandError> {
    match op {
        "$set" => set(doc, path, arg.clone()),
        "$setOnInsert" if inserting => set(doc, path, arg.clone()),
        "$setOnInsert" => Ok(()),
        "$unset" => {
            unset(doc, path);
            Ok(())
        }
        "$inc" | "$mul" => {
            if number(arg).is_none() {
                return Err(CommandError::new(
                    Code::TypeMismatch,
                    format!("Cannot {op} with non-numeric argument: {{{path}: {arg}}}"),
                ));
            }
            let now = get(doc, path).cloned();
            let next = match (&now, op) {
                (None, "$inc") => arg.clone(),
                (None, _) => zero_like(arg),
                (Some(v), _) if number(v).is_none() => {
                    return Err(CommandError::new(
                        Code::TypeMismatch,
                        format!("Cannot apply {op} to a value of non-numeric type at {path}"),
                    ));
                }
                (Some(v), "$inc") => arith(v, arg, |a, b| a.checked_add(b), |a, b| a + b),
                (Some(v), _) => arith(v, arg, |a, b| a.checked_mul(b), |a, b| a * b),
            };
            set(doc, path, next)
        }
        "$min" | "$max" => {
            let want = if op == "$min" { Ordering::Less } else { Ordering::Greater };
            match get(doc, path) {
                Some(v) if compare(arg, v) != want => Ok(()),
                _ => set(doc, path, arg.clone()),
            }
        }
        "$rename" => {
            let Bson::String(to) = arg else { return Err(bad("$rename target must be a string")) };
            if let Some(v) = get(doc, path).cloned() {
                unset(doc, path);
                set(doc, to, v)?;
            }
            Ok(())
        }
        "$currentDate" => set(doc, path, Bson::DateTime(DateTime::now())),
        "$push" | "$addToSet" => {
            let items = match arg {
                Bson::Document(d) if d.contains_key("$each") => match d.get("$each") {
                    Some(Bson::Array(a)) => a.clone(),
                    _ => return Err(bad("$each must be an array")),
                },
                other => vec![other.clone()],
            };
            let mut list = array_at(doc, path, op)?;
            for item in items {
                if op == "$push" || !list.iter().any(|e| equal(e, &item)) {
                    list.push(item);
                }
            }
            set(doc, path, Bson::Array(list))
        }
        "$pull" => {
            let list = array_at(doc, path, op)?;
            // A condition: operators apply to each element as a value; a plain document
            // is a query each document element is matched against.
            enum Cond {
                Value(crate::query::Filter),
                Doc(crate::query::Filter),
            }
            let cond = match arg {
                Bson::Document(d) if is_operators(d) => {
                    Some(Cond::Value(crate::query::compile(&bson::doc! {"v": Bson::Document(d.clone())})?))
                }
                Bson::Document(d) => Some(Cond::Doc(crate::query::compile(d)?)),
                _ => None,
            };
            let kept: Vec<Bson> = list
                .into_iter()
                .filter(|e| match (&cond, e) {
                    (Some(Cond::Value(f)), _) => !f.matches(&bson::doc! {"v": e.clone()}),
                    (Some(Cond::Doc(f)), Bson::Document(d)) => !f.matches(d),
                    (Some(Cond::Doc(_)), _) => true,
                    (None, _) => !equal(e, arg),
                })
                .collect();
            set(doc, path, Bson::Array(kept))
        }
        "$pop" => {
            let mut list = array_at(doc, path, op)?;
            match number(arg) {
                Some(1.0) => {
                    list.pop();
                }
                Some(-1.0) if !list.is_empty() => {
                    list.remove(0);
                }
                Some(-1.0) => {}
                _ => return Err(bad("$pop expects 1 or -1")),
            }
            set(doc, path, Bson::Array(list))
        }
        other => Err(CommandError::new(Code::FailedToParse, format!("Unknown modifier: {other}"))),
    }
}

fn zero_like(arg: &Bson) -> Bson {
    match arg {
        Bson::Int32(_) => Bson::Int32(0),
        Bson::Int64(_) => Bson::Int64(0),
        _ => Bson::Double(0.0),
    }
}

fn arith(a: &Bson, b: &Bson, int: fn(i64, i64) -> Option<i64>, float: fn(f64, f64) -> f64) -> Bson {
    match (a, b) {
        (Bson::Int32(x), Bson::Int32(y)) => match int(i64::from(*x), i64::from(*y)) {
            Some(r) => i32::try_from(r).map_or(Bson::Int64(r), Bson::Int32),
            None => Bson::Double(float(f64::from(*x), f64::from(*y))),
        },
        (Bson::Int32(_) | Bson::Int64(_), Bson::Int32(_) | Bson::Int64(_)) => {
            let (x, y) = (number(a).unwrap_or(0.0) as i64, number(b).unwrap_or(0.0) as i64);
            int(x, y).map_or(Bson::Double(float(x as f64, y as f64)), Bson::Int64)
        }
        _ => Bson::Double(float(number(a).unwrap_or(0.0), number(b).unwrap_or(0.0))),
    }
}

fn array_at(doc: &Document, path: &str, op: &str) -> Result<Vec<Bson>, CommandError> {
    match get(doc, path) {
        None => Ok(Vec::new()),
        Some(Bson::Array(a)) => Ok(a.clone()),
        Some(_) => Err(CommandError::new(Code::TypeMismatch, format!("{op} needs {path} to be an array"))),
    }
}

/// The value at a dotted path (through documents and array indexes), if any.
pub fn get<'a>(doc: &'a Document, path: &str) -> Option<&'a Bson> {
    let mut parts = path.split('.');
    let mut v = doc.get(parts.next()?)?;
    for p in parts {
        v = match v {
            Bson::Document(d) => d.get(p)?,
            Bson::Array(a) => a.get(p.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

/// Sets the value at a dotted path, making missing parents as documents.
pub fn set(doc: &mut Document, path: &str, value: Bson) -> Result<(), CommandError> {
    let (head, rest) = path.split_once('.').map_or((path, None), |(h, r)| (h, Some(r)));
    if head.is_empty() {
        return Err(bad(format!("an empty field name in {path}")));
    }
    let Some(rest) = rest else {
        doc.insert(head, value);
        return Ok(());
    };
    if !doc.contains_key(head) {
        doc.insert(head, Document::new());
    }
    match doc.get_mut(head) {
        Some(Bson::Document(d)) => set(d, rest, value),
        Some(Bson::Array(a)) => set_in_array(a, rest, value, path),
        _ => Err(CommandError::new(
            Code::PathNotViable,
            format!("Cannot create field '{rest}' in element {{{head}: ...}}"),
        )),
    }
}

fn set_in_array(a: &mut Vec<Bson>, path: &str, value: Bson, whole: &str) -> Result<(), CommandError> {
    let (head, rest) = path.split_once('.').map_or((path, None), |(h, r)| (h, Some(r)));
    let i: usize = head.parse().map_err(|_| {
        CommandError::new(Code::PathNotViable, format!("Cannot create field '{head}' in an array ({whole})"))
    })?;
    while a.len() <= i {
        a.push(Bson::Null);
    }
    match rest {
        None => {
            a[i] = value;
            Ok(())
        }
        Some(rest) => {
            if matches!(a[i], Bson::Null) {
                a[i] = Bson::Document(Document::new());
            }
            match &mut a[i] {
                Bson::Document(d) => set(d, rest, value),
                Bson::Array(inner) => set_in_array(inner, rest, value, whole),
                _ => Err(CommandError::new(Code::PathNotViable, format!("Cannot create field in {whole}"))),
            }
        }
    }
}

pub fn unset(doc: &mut Document, path: &str) {
    match path.split_once('.') {
        None => {
            doc.remove(path);
        }
        Some((head, rest)) => match doc.get_mut(head) {
            Some(Bson::Document(d)) => unset(d, rest),
            Some(Bson::Array(a)) => {
                if let Some((i, more)) = rest.split_once('.').map_or(Some((rest, None)), |(i, m)| Some((i, Some(m))))
                    && let Ok(i) = i.parse::<usize>()
                    && let Some(e) = a.get_mut(i)
                {
                    match (more, e) {
                        (None, e) => *e = Bson::Null,
                        (Some(m), Bson::Document(d)) => unset(d, m),
                        _ => {}
                    }
                }
            }
            _ => {}
        },
    }
}

/// An upsert's first document: the filter's plain equality fields.
pub fn seed_from_filter(filter: &Document) -> Document {
    let mut out = Document::new();
    for (k, v) in filter {
        if k.starts_with('$') || matches!(v, Bson::Document(d) if is_operators(d)) {
            continue;
        }
        let _ = set(&mut out, k, v.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;

    #[test]
    fn operators_change_fields_in_place() {
        let d = doc! {"_id": 1, "n": 1, "s": {"a": 1}, "xs": [1, 2, 3], "old": "x"};
        let u = doc! {
            "$set": {"s.b": 2, "new.deep": true}, "$inc": {"n": 2, "c": 5}, "$unset": {"s.a": ""},
            "$push": {"xs": {"$each": [4, 5]}}, "$rename": {"old": "renamed"}, "$max": {"top": 100}, "$min": {"low": 3}
        };
        let out = apply(&d, &u, false).unwrap();
        assert_eq!(out.get_document("s").unwrap(), &doc! {"b": 2});
        assert_eq!((out.get_i32("n").unwrap(), out.get_i32("top").unwrap()), (3, 100));
        assert_eq!(out.get_i32("c").unwrap(), 5);
        assert_eq!(out.get_array("xs").unwrap().len(), 5);
        assert_eq!(out.get_str("renamed").unwrap(), "x");
        assert!(!out.contains_key("old"));
        assert_eq!(get(&out, "new.deep"), Some(&Bson::Boolean(true)));
        assert_eq!(out.get_i32("low").unwrap(), 3);
        let out =
            apply(&out, &doc! {"$pull": {"xs": {"$gte": 4}}, "$addToSet": {"tags": {"$each": ["a", "a", "b"]}}}, false)
                .unwrap();
        let out = apply(&out, &doc! {"$pop": {"xs": -1}}, false).unwrap();
        assert_eq!(out.get_array("xs").unwrap(), &vec![Bson::Int32(2), Bson::Int32(3)]);
        assert_eq!(out.get_array("tags").unwrap().len(), 2);
    }

    #[test]
    fn replacement_keeps_id_and_id_is_immutable() {
        let d = doc! {"_id": 1, "a": 1};
        assert_eq!(apply(&d, &doc! {"b": 2}, false).unwrap(), doc! {"_id": 1, "b": 2});
        assert_eq!(apply(&d, &doc! {"$set": {"_id": 2}}, false).unwrap_err().code, Code::ImmutableField);
        assert_eq!(apply(&d, &doc! {"_id": 2, "b": 1}, false).unwrap_err().code, Code::ImmutableField);
        assert_eq!(apply(&d, &doc! {"$inc": {"a": "x"}}, false).unwrap_err().code, Code::TypeMismatch);
        assert_eq!(apply(&d, &doc! {"$bogus": {"a": 1}}, false).unwrap_err().code, Code::FailedToParse);
        let conflict = |u: Document| apply(&d, &u, false).unwrap_err().code;
        assert_eq!(conflict(doc! {"$set": {"a": 1}, "$inc": {"a": 1}}), Code::ConflictingUpdateOperators);
        assert_eq!(conflict(doc! {"$set": {"a.b": 1}, "$unset": {"a": 1}}), Code::ConflictingUpdateOperators);
        assert_eq!(conflict(doc! {"$rename": {"a": "b"}, "$set": {"b": 1}}), Code::ConflictingUpdateOperators);
        let pulled = apply(&doc! {"xs": [{"q": 1}, {"q": 5}, 7]}, &doc! {"$pull": {"xs": {"q": {"$gt": 2}}}}, false);
        assert_eq!(pulled.unwrap(), doc! {"xs": [{"q": 1}, 7]}, "a plain document is a query on element documents");
        assert_eq!(seed_from_filter(&doc! {"k": 1, "n": {"$gt": 1}, "a.b": 2}), doc! {"k": 1, "a": {"b": 2}});
    }
}
