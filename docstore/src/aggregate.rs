//! `aggregate`: a pipeline of stages over the collection's documents, in memory. The
//! stages drivers lean on (`count_documents` is `$match` + `$group`/`$sum`) and the common
//! ones: `$match`, `$sort`, `$skip`, `$limit`, `$project`, `$count`, `$unwind`, `$group`
//! with `$sum $avg $min $max $first $last $push $addToSet`. Expressions are field paths
//! (`"$a.b"`) and literals; the rest answers NotImplemented.

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

/// Runs `pipeline` over `docs`.
pub fn run(mut docs: Vec<Document>, pipeline: &[Bson]) -> Result<Vec<Document>, CommandError> {
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
            ("$project", Bson::Document(spec)) => {
                docs.into_iter().map(|d| crate::crud::project(d, spec)).collect::<Result<_, _>>()?
            }
            ("$count", Bson::String(field)) => {
                if docs.is_empty() {
                    Vec::new()
                } else {
                    vec![doc! {field: docs.len() as i32}]
                }
            }
            ("$unwind", Bson::String(path)) => unwind(docs, path)?,
            ("$group", Bson::Document(spec)) => group(docs, spec)?,
            (other, _) => return Err(unsupported(&format!("the {other} stage (or its argument's form)"))),
        };
    }
    Ok(docs)
}

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

/// An expression's value on `doc`: `"$path"` reads the document, anything else is itself.
fn eval(expr: &Bson, doc: &Document) -> Result<Bson, CommandError> {
    match expr {
        Bson::String(s) if s.starts_with("$$") => Err(unsupported(&format!("variable {s}"))),
        Bson::String(s) if s.starts_with('$') => {
            Ok(lookup(doc, &s[1..]).values.first().map(|v| (*v).clone()).unwrap_or(Bson::Null))
        }
        Bson::Document(d) if d.keys().next().is_some_and(|k| k.starts_with('$')) => {
            Err(unsupported(&format!("the expression operator {}", d.keys().next().unwrap_or(&String::new()))))
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
        let key = eval(key_expr, d)?;
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
        let out = run(
            docs.clone(),
            &[
                Bson::Document(doc! {"$match": {"v": {"$gte": 1}}}),
                Bson::Document(doc! {"$group": {"_id": 1, "n": {"$sum": 1}}}),
            ],
        )
        .unwrap();
        assert_eq!(out, vec![doc! {"_id": 1, "n": 9}], "count_documents' pipeline");
        let out = run(
            docs.clone(),
            &[
                Bson::Document(doc! {"$group": {"_id": "$k", "total": {"$sum": "$v"}, "avg": {"$avg": "$v"}, "max": {"$max": "$v"}, "all": {"$push": "$v"}}}),
                Bson::Document(doc! {"$sort": {"_id": -1}}),
            ],
        )
        .unwrap();
        assert_eq!(out[0], doc! {"_id": 2, "total": 15, "avg": 5.0, "max": 8, "all": [2, 5, 8]});
        let out = run(docs.clone(), &[Bson::Document(doc! {"$unwind": "$tags"}), Bson::Document(doc! {"$count": "n"})])
            .unwrap();
        assert_eq!(out, vec![doc! {"n": 20}]);
        let out =
            run(docs, &[Bson::Document(doc! {"$skip": 8}), Bson::Document(doc! {"$project": {"v": 1, "_id": 0}})])
                .unwrap();
        assert_eq!(out, vec![doc! {"v": 8}, doc! {"v": 9}]);
        let e = run(vec![], &[Bson::Document(doc! {"$facet": {}})]).unwrap_err();
        assert_eq!(e.code, Code::NotImplemented);
    }
}
