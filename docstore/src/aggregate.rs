//! `aggregate`: a pipeline of stages over the collection's documents, in memory. The
//! stages drivers lean on (`count_documents` is `$match` + `$group`/`$sum`) and the common
//! ones: `$match`, `$sort`, `$skip`, `$limit`, `$project`, `$addFields`/`$set`, `$unset`,
//! `$count`, `$unwind`, `$lookup` (equality form, same database), `$group` with `$sum $avg
//! $min $max $first $last $push $addToSet`. Expressions are field paths (`"$a.b"`,
//! `"$$ROOT"`), literals and the operators in [`operator`]; the rest answers
//! NotImplemented.

use std::cmp::Ordering;

use bson::{Bson, Document, doc};

use crate::bsonx::cmp::{compare, equal, number};
use crate::bsonx::path::lookup;
use crate::error::{Code, CommandError};
use crate::query;

fn bad(message: impl Into<String>) -> CommandError {
    CommandError::new(Code::BadValue, message)
}

fn unsupported(what: &str) -> CommandError {
    CommandError::new(Code::NotImplemented, format!("{what} is not supported by this server yet"))
}

/// Reads another collection of the same database, for `$lookup`.
pub type Load<'a> = dyn Fn(&str) -> Result<Vec<Document>, CommandError> + 'a;

/// Runs `pipeline` over `docs`.
pub fn run(mut docs: Vec<Document>, pipeline: &[Bson], load: &Load) -> Result<Vec<Document>, CommandError> {
    for stage in pipeline {
        let Bson::Document(stage) = stage else { return Err(bad("each pipeline stage must be an object")) };
        let mut it = stage.iter();
        let (Some((name, arg)), None) = (it.next(), it.next()) else {
            return Err(bad("a pipeline stage specification object must contain exactly one field"));
        };
        docs = match (name.as_str(), arg) {
            ("$match", Bson::Document(f)) => {
                let f = query::compile(f)?;
                docs.into_iter().filter(|d| f.matches(d)).collect()
            }
            ("$sort", Bson::Document(spec)) => {
                crate::crud::sort(&mut docs, spec)?;
                docs
            }
            ("$skip", n) => docs.into_iter().skip(whole(n, "$skip")?).collect(),
            ("$limit", n) => docs.into_iter().take(whole(n, "$limit")?.max(1)).collect(),
            ("$project", Bson::Document(spec)) => project(docs, spec)?,
            ("$addFields" | "$set", Bson::Document(spec)) => docs
                .into_iter()
                .map(|d| {
                    let mut out = d.clone();
                    for (path, expr) in spec {
                        set_path(&mut out, path, eval(expr, &d)?)?;
                    }
                    Ok(out)
                })
                .collect::<Result<_, CommandError>>()?,
            ("$unset", fields) => {
                let names = match fields {
                    Bson::String(f) => vec![f.clone()],
                    Bson::Array(items) => items
                        .iter()
                        .map(|i| i.as_str().map(str::to_owned).ok_or_else(|| bad("$unset takes field names")))
                        .collect::<Result<_, _>>()?,
                    _ => return Err(bad("$unset takes a field name or an array of them")),
                };
                let mut tree = crate::projection::Tree::default();
                for n in &names {
                    tree.add(n)?;
                }
                docs.iter().map(|d| crate::projection::exclude(d, &tree)).collect()
            }
            ("$lookup", Bson::Document(spec)) => join(docs, spec, load)?,
            ("$count", Bson::String(field)) => {
                if docs.is_empty() {
                    Vec::new()
                } else {
                    vec![doc! {field: docs.len() as i32}]
                }
            }
            ("$unwind", Bson::String(path)) => unwind(docs, path)?,
            ("$group", Bson::Document(spec)) => group(docs, spec)?,
            (other, _) if !KNOWN_STAGES.contains(&other) => {
                return Err(CommandError::new(
                    Code::UnrecognizedStage,
                    format!("Unrecognized pipeline stage name: '{other}'"),
                ));
            }
            (other, _) => return Err(unsupported(&format!("the {other} stage (or its argument's form)"))),
        };
    }
    Ok(docs)
}

/// MongoDB's stage names this server does not run: NotImplemented, not "unrecognized".
const KNOWN_STAGES: &[&str] = &[
    "$bucket",
    "$bucketAuto",
    "$changeStream",
    "$collStats",
    "$densify",
    "$facet",
    "$fill",
    "$geoNear",
    "$graphLookup",
    "$indexStats",
    "$listSessions",
    "$merge",
    "$out",
    "$planCacheStats",
    "$redact",
    "$replaceRoot",
    "$replaceWith",
    "$sample",
    "$search",
    "$setWindowFields",
    "$sortByCount",
    "$unionWith",
    "$documents",
    "$currentOp",
    "$listLocalSessions",
    "$match",
    "$sort",
    "$skip",
    "$limit",
    "$project",
    "$count",
    "$unwind",
    "$group",
    "$addFields",
    "$set",
    "$unset",
    "$lookup",
];

fn whole(n: &Bson, stage: &str) -> Result<usize, CommandError> {
    match number(n) {
        Some(x) if x >= 0.0 && x.fract() == 0.0 => Ok(x as usize),
        _ => Err(bad(format!("{stage} needs a non-negative whole number"))),
    }
}

fn unwind(docs: Vec<Document>, path: &str) -> Result<Vec<Document>, CommandError> {
    let field =
        path.strip_prefix('$').filter(|f| !f.contains('.')).ok_or_else(|| unsupported("$unwind of a nested path"))?;
    let mut out = Vec::new();
    for d in docs {
        match d.get(field) {
            Some(Bson::Array(items)) => {
                for item in items.clone() {
                    let mut e = d.clone();
                    e.insert(field, item);
                    out.push(e);
                }
            }
            Some(Bson::Null) | None => {}
            Some(_) => out.push(d),
        }
    }
    Ok(out)
}

/// `$project` with flags (as find's projection) and computed fields (inclusion).
fn project(docs: Vec<Document>, spec: &Document) -> Result<Vec<Document>, CommandError> {
    let flags = crate::projection::Projection::parse(spec, true)?;
    let computed: Vec<(&String, &Bson)> = spec.iter().filter(|(_, v)| crate::projection::flag(v).is_none()).collect();
    docs.into_iter()
        .map(|d| {
            let mut out = flags.apply(&d);
            for (path, expr) in &computed {
                set_path(&mut out, path, eval(expr, &d)?)?;
            }
            Ok(out)
        })
        .collect()
}

/// Sets a (dotted) field, making the documents on the way; a missing value (an
/// expression on a missing field) leaves the field out, as MongoDB does.
fn set_path(doc: &mut Document, path: &str, value: Bson) -> Result<(), CommandError> {
    if path.is_empty() || path.starts_with('$') || path.split('.').any(str::is_empty) {
        return Err(bad(format!("bad field path {path:?}")));
    }
    if value == MISSING {
        return Ok(());
    }
    match path.split_once('.') {
        None => {
            doc.insert(path, value);
        }
        Some((first, rest)) => {
            if !matches!(doc.get(first), Some(Bson::Document(_))) {
                doc.insert(first, Document::new());
            }
            if let Some(Bson::Document(sub)) = doc.get_mut(first) {
                set_path(sub, rest, value)?;
            }
        }
    }
    Ok(())
}

/// `$lookup {from, localField, foreignField, as}`: each document gets the `from`
/// documents whose foreignField equals its localField (either side's arrays by
/// element; null matches missing).
fn join(docs: Vec<Document>, spec: &Document, load: &Load) -> Result<Vec<Document>, CommandError> {
    if spec.contains_key("pipeline") || spec.contains_key("let") {
        return Err(unsupported("$lookup with a pipeline"));
    }
    let field = |name: &str| spec.get_str(name).map_err(|_| bad(format!("$lookup needs {name} (a string)")));
    let (from, local, foreign, into) = (field("from")?, field("localField")?, field("foreignField")?, field("as")?);
    let others = load(from)?;
    let values = |d: &Document, path: &str| -> Vec<Bson> {
        let r = lookup(d, path);
        let mut out: Vec<Bson> = r
            .values
            .iter()
            .flat_map(|v| match v {
                Bson::Array(items) if !items.is_empty() => items.clone(),
                other => vec![(*other).clone()],
            })
            .collect();
        if out.is_empty() {
            out.push(Bson::Null);
        }
        out
    };
    // Each foreign document's values once, not once per input document.
    let theirs: Vec<(Vec<Bson>, &Document)> = others.iter().map(|o| (values(o, foreign), o)).collect();
    docs.into_iter()
        .map(|mut d| {
            let mine = values(&d, local);
            let found: Vec<Bson> = theirs
                .iter()
                .filter(|(vs, _)| vs.iter().any(|v| mine.iter().any(|m| equal(m, v))))
                .map(|(_, o)| Bson::Document((*o).clone()))
                .collect();
            set_path(&mut d, into, Bson::Array(found))?;
            Ok(d)
        })
        .collect()
}

/// An expression's value on `doc`: `"$path"` reads the document, `"$$ROOT"` is the
/// document, an `{$op: args}` document is an operator, anything else is itself.
fn eval(expr: &Bson, doc: &Document) -> Result<Bson, CommandError> {
    match expr {
        Bson::String(s) if s == "$$ROOT" || s == "$$CURRENT" => Ok(Bson::Document(doc.clone())),
        Bson::String(s) if s.starts_with("$$") => Err(unsupported(&format!("variable {s}"))),
        Bson::String(s) if s.starts_with('$') => Ok(field_path(doc, &s[1..])),
        Bson::Document(d) if d.keys().next().is_some_and(|k| k.starts_with('$')) => {
            let (Some((op, args)), 1) = (d.iter().next(), d.len()) else {
                return Err(bad("an expression object must have exactly one operator"));
            };
            operator(op, args, doc)
        }
        Bson::Document(d) => {
            let mut out = Document::new();
            for (k, v) in d {
                out.insert(k, eval(v, doc)?);
            }
            Ok(Bson::Document(out))
        }
        other => Ok(other.clone()),
    }
}

/// An aggregation field path's value: through documents, and through arrays element
/// by element (giving an array of what each element reaches); a missing field is
/// [`MISSING`].
fn field_path(doc: &Document, path: &str) -> Bson {
    fn walk(v: &Bson, parts: &[&str]) -> Bson {
        let Some((first, rest)) = parts.split_first() else { return v.clone() };
        match v {
            Bson::Document(d) => d.get(*first).map_or(MISSING, |v| walk(v, rest)),
            Bson::Array(items) => Bson::Array(
                items
                    .iter()
                    .filter(|i| matches!(i, Bson::Document(_) | Bson::Array(_)))
                    .map(|i| walk(i, parts))
                    .filter(|v| *v != MISSING)
                    .collect(),
            ),
            _ => MISSING,
        }
    }
    let parts: Vec<&str> = path.split('.').collect();
    doc.get(parts[0]).map_or(MISSING, |v| walk(v, &parts[1..]))
}

/// What an expression on a missing field gives: a field set to it is left out, and
/// operators read it as null. (BSON's deprecated undefined never reaches a stored
/// document, so it can stand for "missing" inside a pipeline.)
const MISSING: Bson = Bson::Undefined;

/// The expression operators served: `$literal`, arithmetic (`$add $subtract $multiply
/// $divide`), comparison (`$eq $ne $gt $gte $lt $lte $cmp`), `$and $or $not`, `$cond`,
/// `$ifNull`, `$concat`, `$toUpper $toLower`, `$size`, `$in`, `$arrayElemAt`.
fn operator(op: &str, args: &Bson, doc: &Document) -> Result<Bson, CommandError> {
    if op == "$literal" {
        return Ok(args.clone());
    }
    let list: Vec<Bson> = match args {
        Bson::Array(items) => items.iter().map(|a| eval(a, doc)).collect::<Result<_, _>>()?,
        Bson::Document(d) if op == "$cond" => {
            let part = |k: &str| d.get(k).cloned().ok_or_else(|| bad(format!("$cond needs {k}")));
            vec![eval(&part("if")?, doc)?, eval(&part("then")?, doc)?, eval(&part("else")?, doc)?]
        }
        other => vec![eval(other, doc)?],
    };
    let arity = |n: usize| {
        if list.len() == n { Ok(()) } else { Err(bad(format!("{op} takes exactly {n} arguments"))) }
    };
    let num = |v: &Bson| {
        number(v).ok_or_else(|| CommandError::new(Code::TypeMismatch, format!("{op} only supports numeric types")))
    };
    // Arithmetic on null or a missing field is null.
    let nullish = |v: &Bson| matches!(v, Bson::Null | Bson::Undefined);
    if matches!(op, "$add" | "$subtract" | "$multiply" | "$divide") && list.iter().any(nullish) {
        return Ok(Bson::Null);
    }
    let truth = |v: &Bson| match v {
        Bson::Boolean(b) => *b,
        Bson::Null | Bson::Undefined => false,
        other => number(other).is_none_or(|n| n != 0.0),
    };
    Ok(match op {
        "$add" => list.iter().try_fold(Bson::Int32(0), |acc, v| num(v).map(|_| add(&acc, v)))?,
        "$multiply" => list.iter().try_fold(Bson::Int32(1), |acc, v| num(v).map(|_| multiply(&acc, v)))?,
        "$subtract" => {
            arity(2)?;
            num(&list[0])?;
            add(&list[0], &multiply(&list[1], &Bson::Int32(-1)))
        }
        "$divide" => {
            arity(2)?;
            let d = num(&list[1])?;
            if d == 0.0 {
                return Err(bad("can't $divide by zero"));
            }
            Bson::Double(num(&list[0])? / d)
        }
        "$eq" | "$ne" | "$gt" | "$gte" | "$lt" | "$lte" | "$cmp" => {
            arity(2)?;
            let o = compare(&list[0], &list[1]);
            match op {
                "$eq" => Bson::Boolean(o == Ordering::Equal),
                "$ne" => Bson::Boolean(o != Ordering::Equal),
                "$gt" => Bson::Boolean(o == Ordering::Greater),
                "$gte" => Bson::Boolean(o != Ordering::Less),
                "$lt" => Bson::Boolean(o == Ordering::Less),
                "$lte" => Bson::Boolean(o != Ordering::Greater),
                _ => Bson::Int32(o as i32),
            }
        }
        "$and" => Bson::Boolean(list.iter().all(truth)),
        "$or" => Bson::Boolean(list.iter().any(truth)),
        "$not" => {
            arity(1)?;
            Bson::Boolean(!truth(&list[0]))
        }
        "$cond" => {
            arity(3)?;
            if truth(&list[0]) { list[1].clone() } else { list[2].clone() }
        }
        "$ifNull" => list.iter().find(|v| !matches!(v, Bson::Null | Bson::Undefined)).cloned().unwrap_or(Bson::Null),
        "$concat" => {
            let mut out = String::new();
            for v in &list {
                match v {
                    Bson::String(s) => out.push_str(s),
                    Bson::Null | Bson::Undefined => return Ok(Bson::Null),
                    _ => return Err(CommandError::new(Code::TypeMismatch, "$concat only supports strings")),
                }
            }
            Bson::String(out)
        }
        "$toUpper" | "$toLower" => {
            arity(1)?;
            let s = match &list[0] {
                Bson::String(s) => s.clone(),
                Bson::Null | Bson::Undefined => String::new(),
                other => other.to_string(),
            };
            Bson::String(if op == "$toUpper" { s.to_uppercase() } else { s.to_lowercase() })
        }
        "$size" => match list.as_slice() {
            [Bson::Array(items)] => Bson::Int32(items.len() as i32),
            _ => return Err(CommandError::new(Code::TypeMismatch, "The argument to $size must be an array")),
        },
        "$in" => match list.as_slice() {
            [v, Bson::Array(items)] => Bson::Boolean(items.iter().any(|i| equal(i, v))),
            _ => return Err(bad("$in needs a value and an array")),
        },
        "$arrayElemAt" => match list.as_slice() {
            [a, b] if nullish(a) || nullish(b) => Bson::Null,
            [Bson::Array(items), i] => {
                let i = num(i)? as i64;
                let at = if i < 0 { items.len() as i64 + i } else { i };
                usize::try_from(at).ok().and_then(|at| items.get(at)).cloned().unwrap_or(MISSING)
            }
            _ => return Err(bad("$arrayElemAt needs an array and an index")),
        },
        other => return Err(unsupported(&format!("the expression operator {other}"))),
    })
}

/// One group's running state for one accumulator.
enum Acc {
    Sum(Bson),
    Avg(f64, usize),
    Min(Option<Bson>),
    Max(Option<Bson>),
    First(Option<Bson>),
    Last(Bson),
    Push(Vec<Bson>),
    AddToSet(Vec<Bson>),
}

fn add(a: &Bson, b: &Bson) -> Bson {
    match (a, b) {
        (Bson::Int32(x), Bson::Int32(y)) => {
            x.checked_add(*y).map_or(Bson::Int64(i64::from(*x) + i64::from(*y)), Bson::Int32)
        }
        (Bson::Int32(_) | Bson::Int64(_), Bson::Int32(_) | Bson::Int64(_)) => {
            let (x, y) = (number(a).unwrap_or(0.0) as i64, number(b).unwrap_or(0.0) as i64);
            x.checked_add(y).map_or(Bson::Double(x as f64 + y as f64), Bson::Int64)
        }
        _ => Bson::Double(number(a).unwrap_or(0.0) + number(b).unwrap_or(0.0)),
    }
}

fn multiply(a: &Bson, b: &Bson) -> Bson {
    match (a, b) {
        (Bson::Int32(x), Bson::Int32(y)) => {
            x.checked_mul(*y).map_or(Bson::Int64(i64::from(*x) * i64::from(*y)), Bson::Int32)
        }
        (Bson::Int32(_) | Bson::Int64(_), Bson::Int32(_) | Bson::Int64(_)) => {
            let (x, y) = (number(a).unwrap_or(0.0) as i64, number(b).unwrap_or(0.0) as i64);
            x.checked_mul(y).map_or(Bson::Double(x as f64 * y as f64), Bson::Int64)
        }
        _ => Bson::Double(number(a).unwrap_or(0.0) * number(b).unwrap_or(0.0)),
    }
}

impl Acc {
    fn new(op: &str) -> Result<Acc, CommandError> {
        Ok(match op {
            "$sum" => Acc::Sum(Bson::Int32(0)),
            "$avg" => Acc::Avg(0.0, 0),
            "$min" => Acc::Min(None),
            "$max" => Acc::Max(None),
            "$first" => Acc::First(None),
            "$last" => Acc::Last(Bson::Null),
            "$push" => Acc::Push(Vec::new()),
            "$addToSet" => Acc::AddToSet(Vec::new()),
            other => return Err(unsupported(&format!("the accumulator {other}"))),
        })
    }

    fn feed(&mut self, v: Bson) {
        match self {
            // A missing field adds nothing to a list and is null elsewhere.
            Acc::Push(_) | Acc::AddToSet(_) if v == MISSING => {}
            _ if v == MISSING => self.feed(Bson::Null),
            // Non-numbers are ignored by $sum and $avg.
            Acc::Sum(total) if number(&v).is_some() => *total = add(total, &v),
            Acc::Avg(total, n) if number(&v).is_some() => {
                *total += number(&v).unwrap_or(0.0);
                *n += 1;
            }
            Acc::Min(m) if !matches!(v, Bson::Null) && m.as_ref().is_none_or(|m| compare(&v, m) == Ordering::Less) => {
                *m = Some(v)
            }
            Acc::Max(m)
                if !matches!(v, Bson::Null) && m.as_ref().is_none_or(|m| compare(&v, m) == Ordering::Greater) =>
            {
                *m = Some(v)
            }
            Acc::First(f) if f.is_none() => *f = Some(v),
            Acc::Last(l) => *l = v,
            Acc::Push(items) => items.push(v),
            Acc::AddToSet(items) if !items.iter().any(|i| equal(i, &v)) => items.push(v),
            _ => {}
        }
    }

    fn value(self) -> Bson {
        match self {
            Acc::Sum(t) => t,
            Acc::Avg(_, 0) => Bson::Null,
            Acc::Avg(t, n) => Bson::Double(t / n as f64),
            Acc::Min(m) | Acc::Max(m) | Acc::First(m) => m.unwrap_or(Bson::Null),
            Acc::Last(l) => l,
            Acc::Push(items) | Acc::AddToSet(items) => Bson::Array(items),
        }
    }
}

fn group(docs: Vec<Document>, spec: &Document) -> Result<Vec<Document>, CommandError> {
    let key_expr = spec.get("_id").ok_or_else(|| bad("a group specification must include an _id"))?;
    let mut fields = Vec::new();
    for (name, acc) in spec.iter().filter(|(k, _)| *k != "_id") {
        let Bson::Document(acc) = acc else {
            return Err(bad(format!("the field '{name}' must be an accumulator object")));
        };
        let (Some((op, expr)), 1) = (acc.iter().next(), acc.len()) else {
            return Err(bad(format!("the field '{name}' must specify one accumulator")));
        };
        Acc::new(op)?;
        fields.push((name.clone(), op.clone(), expr.clone()));
    }
    // Groups in first-seen order; keys compared with MongoDB's equality.
    let mut groups: Vec<(Bson, Vec<Acc>)> = Vec::new();
    for d in &docs {
        let key = match eval(key_expr, d)? {
            MISSING => Bson::Null,
            k => k,
        };
        let at = match groups
            .iter()
            .position(|(k, _)| equal(k, &key) && crate::bsonx::cmp::rank(k) == crate::bsonx::cmp::rank(&key))
        {
            Some(i) => i,
            None => {
                let accs = fields.iter().map(|(_, op, _)| Acc::new(op)).collect::<Result<Vec<_>, _>>()?;
                groups.push((key, accs));
                groups.len() - 1
            }
        };
        for ((_, _, expr), acc) in fields.iter().zip(groups[at].1.iter_mut()) {
            acc.feed(eval(expr, d)?);
        }
    }
    Ok(groups
        .into_iter()
        .map(|(key, accs)| {
            let mut out = doc! {"_id": key};
            for ((name, _, _), acc) in fields.iter().zip(accs) {
                out.insert(name, acc.value());
            }
            out
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_group_sort_count() {
        let docs: Vec<Document> = (0..10).map(|i| doc! {"_id": i, "k": i % 3, "v": i, "tags": ["x", "y"]}).collect();
        let none = |_: &str| -> Result<Vec<Document>, CommandError> { Ok(Vec::new()) };
        let out = run(
            docs.clone(),
            &[
                Bson::Document(doc! {"$match": {"v": {"$gte": 1}}}),
                Bson::Document(doc! {"$group": {"_id": 1, "n": {"$sum": 1}}}),
            ],
            &none,
        )
        .unwrap();
        assert_eq!(out, vec![doc! {"_id": 1, "n": 9}], "count_documents' pipeline");
        let out = run(
            docs.clone(),
            &[
                Bson::Document(doc! {"$group": {"_id": "$k", "total": {"$sum": "$v"}, "avg": {"$avg": "$v"}, "max": {"$max": "$v"}, "all": {"$push": "$v"}}}),
                Bson::Document(doc! {"$sort": {"_id": -1}}),
            ],
            &none,
        )
        .unwrap();
        assert_eq!(out[0], doc! {"_id": 2, "total": 15, "avg": 5.0, "max": 8, "all": [2, 5, 8]});
        let out = run(
            docs.clone(),
            &[Bson::Document(doc! {"$unwind": "$tags"}), Bson::Document(doc! {"$count": "n"})],
            &none,
        )
        .unwrap();
        assert_eq!(out, vec![doc! {"n": 20}]);
        let out = run(
            docs,
            &[Bson::Document(doc! {"$skip": 8}), Bson::Document(doc! {"$project": {"v": 1, "_id": 0}})],
            &none,
        )
        .unwrap();
        assert_eq!(out, vec![doc! {"v": 8}, doc! {"v": 9}]);
        let e = run(vec![], &[Bson::Document(doc! {"$facet": {}})], &none).unwrap_err();
        assert_eq!(e.code, Code::NotImplemented);
    }

    #[test]
    fn computed_fields_unset_and_lookup() {
        let people = vec![
            doc! {"_id": 1, "name": "ann", "team": 7, "x": {"y": 1, "z": 2}},
            doc! {"_id": 2, "name": "bo", "team": 9},
        ];
        let teams = vec![doc! {"_id": 7, "title": "red"}, doc! {"_id": 70, "title": "blue"}];
        let load = |c: &str| -> Result<Vec<Document>, CommandError> {
            assert_eq!(c, "teams");
            Ok(teams.clone())
        };
        let stage = |d: Document| Bson::Document(d);
        let out = run(
            people.clone(),
            &[
                stage(doc! {"$addFields": {"upper": {"$toUpper": "$name"}, "x.w": {"$add": ["$team", 1]}}}),
                stage(doc! {"$unset": ["x.z", "team"]}),
                stage(doc! {"$lookup": {"from": "teams", "localField": "_id", "foreignField": "_id", "as": "t"}}),
                stage(doc! {"$project": {"upper": 1, "x": 1, "n": {"$size": "$t"}, "big": {"$cond": [{"$gt": ["$_id", 1]}, "yes", "no"]}}}),
            ],
            &load,
        )
        .unwrap();
        assert_eq!(out[0], doc! {"_id": 1, "x": {"y": 1, "w": 8}, "upper": "ANN", "n": 0, "big": "no"});
        let out = run(
            people,
            &[
                stage(doc! {"$lookup": {"from": "teams", "localField": "team", "foreignField": "_id", "as": "t"}}),
                stage(doc! {"$project": {"t.title": 1, "_id": 0}}),
            ],
            &load,
        )
        .unwrap();
        assert_eq!(out, vec![doc! {"t": [{"title": "red"}]}, doc! {"t": []}]);
    }
}
