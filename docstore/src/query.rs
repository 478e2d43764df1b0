//! Query filters: a filter document compiled once into a [`Filter`], then evaluated on
//! each document. MongoDB's rules: an operator on an array field matches when the array
//! or any of its elements does; range operators only compare within a type bracket
//! (`{$gt: 5}` never matches a string); `null` matches a missing field too; `$ne` and
//! `$nin` are the negation over all of that.

use std::cmp::Ordering;

use bson::{Bson, Document};
use regex::Regex;

use crate::bsonx::cmp::{compare, equal, rank};
use crate::bsonx::path::{Reached, lookup};
use crate::error::{Code, CommandError};

#[derive(Debug, Clone)]
pub enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Nor(Vec<Filter>),
    Field { path: String, ops: Vec<Op> },
}

#[derive(Debug, Clone)]
pub enum Op {
    Eq(Bson),
    Ne(Bson),
    Cmp(Ordering, bool, Bson),
    /// Values, and patterns that any string element may match instead.
    In(Vec<Bson>, Vec<Regex>),
    Nin(Vec<Bson>, Vec<Regex>),
    Regex(Regex),
    Exists(bool),
    Size(usize),
    All(Vec<Bson>),
    ElemMatch(ElemMatch),
    Not(Vec<Op>),
    Type(Vec<u8>),
}

/// `$elemMatch` on an array of documents (a filter) or of values (operators on the value).
#[derive(Debug, Clone)]
pub enum ElemMatch {
    Docs(Box<Filter>),
    Values(Vec<Op>),
}

fn bad(message: impl Into<String>) -> CommandError {
    CommandError::new(Code::BadValue, message)
}

pub fn compile(filter: &Document) -> Result<Filter, CommandError> {
    let mut all = Vec::new();
    for (k, v) in filter {
        all.push(match k.as_str() {
            "$and" | "$or" | "$nor" => {
                let Bson::Array(items) = v else { return Err(bad(format!("{k} must be an array"))) };
                if items.is_empty() {
                    return Err(bad(format!("{k} must be a nonempty array")));
                }
                let subs = items
                    .iter()
                    .map(|i| match i {
                        Bson::Document(d) => compile(d),
                        _ => Err(bad(format!("{k} entries must be objects"))),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                match k.as_str() {
                    "$and" => Filter::And(subs),
                    "$or" => Filter::Or(subs),
                    _ => Filter::Nor(subs),
                }
            }
            "$comment" => continue,
            other if other.starts_with('$') => return Err(bad(format!("unknown top level operator: {other}"))),
            path => Filter::Field { path: path.to_owned(), ops: field_ops(v)? },
        });
    }
    Ok(Filter::And(all))
}

fn is_operator_doc(v: &Bson) -> Option<&Document> {
    match v {
        Bson::Document(d) if d.keys().next().is_some_and(|k| k.starts_with('$')) => Some(d),
        _ => None,
    }
}

fn field_ops(v: &Bson) -> Result<Vec<Op>, CommandError> {
    let Some(d) = is_operator_doc(v) else {
        return Ok(vec![match v {
            Bson::RegularExpression(re) => Op::Regex(regex(re.pattern.as_str(), re.options.as_str())?),
            other => Op::Eq(other.clone()),
        }]);
    };
    let options = match d.get("$options") {
        None => None,
        Some(Bson::String(o)) if d.contains_key("$regex") => Some(o.as_str()),
        Some(Bson::String(_)) => return Err(bad("$options needs a $regex")),
        Some(_) => return Err(bad("$options has to be a string")),
    };
    d.iter()
        .filter(|(op, _)| op.as_str() != "$options")
        .map(|(op, arg)| match (op.as_str(), arg) {
            ("$regex", Bson::String(p)) => Ok(Op::Regex(regex(p, options.unwrap_or(""))?)),
            ("$regex", Bson::RegularExpression(re)) => {
                if options.is_some() && !re.options.as_str().is_empty() {
                    return Err(bad("options set in both $regex and $options"));
                }
                Ok(Op::Regex(regex(re.pattern.as_str(), options.unwrap_or(re.options.as_str()))?))
            }
            ("$regex", _) => Err(bad("$regex has to be a string")),
            _ => operator(op, arg),
        })
        .collect()
}

/// Compiles a MongoDB (PCRE) pattern with its flags. Patterns use the regex crate's
/// syntax, which is PCRE's without look-around and back-references: those are refused
/// with MongoDB's bad-regex code rather than matched differently.
fn regex(pattern: &str, options: &str) -> Result<Regex, CommandError> {
    let mut flags = String::new();
    for o in options.chars() {
        match o {
            'i' | 'm' | 's' | 'x' => flags.push(o),
            'u' => {}
            other => return Err(bad(format!("invalid flag in regex options: {other}"))),
        }
    }
    let full = if flags.is_empty() { pattern.to_owned() } else { format!("(?{flags}){pattern}") };
    regex::RegexBuilder::new(&full).size_limit(1 << 20).build().map_err(|e| {
        CommandError::new(Code::BadRegex, format!("Regular expression is invalid or not supported here: {e}"))
    })
}

/// An `$in`/`$nin` list: plain values, and regexes that match strings.
fn values_and_patterns(op: &str, arg: &Bson) -> Result<(Vec<Bson>, Vec<Regex>), CommandError> {
    let mut values = Vec::new();
    let mut patterns = Vec::new();
    for v in list(op, arg)? {
        match v {
            Bson::RegularExpression(re) => patterns.push(regex(re.pattern.as_str(), re.options.as_str())?),
            Bson::Document(d) if d.keys().next().is_some_and(|k| k.starts_with('$')) => {
                return Err(bad(format!("cannot nest $ under {op}")));
            }
            other => values.push(other),
        }
    }
    Ok((values, patterns))
}

fn list(op: &str, arg: &Bson) -> Result<Vec<Bson>, CommandError> {
    match arg {
        Bson::Array(a) => Ok(a.clone()),
        _ => Err(bad(format!("{op} needs an array"))),
    }
}

fn operator(op: &str, arg: &Bson) -> Result<Op, CommandError> {
    Ok(match op {
        "$eq" => Op::Eq(arg.clone()),
        "$ne" => Op::Ne(arg.clone()),
        "$gt" => Op::Cmp(Ordering::Greater, false, arg.clone()),
        "$gte" => Op::Cmp(Ordering::Greater, true, arg.clone()),
        "$lt" => Op::Cmp(Ordering::Less, false, arg.clone()),
        "$lte" => Op::Cmp(Ordering::Less, true, arg.clone()),
        "$in" => {
            let (values, patterns) = values_and_patterns(op, arg)?;
            Op::In(values, patterns)
        }
        "$nin" => {
            let (values, patterns) = values_and_patterns(op, arg)?;
            Op::Nin(values, patterns)
        }
        "$all" => Op::All(list(op, arg)?),
        "$exists" => Op::Exists(truthy(arg)),
        "$size" => match crate::bsonx::cmp::number(arg) {
            Some(n) if n >= 0.0 && n.fract() == 0.0 => Op::Size(n as usize),
            _ => return Err(bad("$size needs a whole non-negative number")),
        },
        "$not" => match arg {
            Bson::RegularExpression(re) => Op::Not(vec![Op::Regex(regex(re.pattern.as_str(), re.options.as_str())?)]),
            Bson::Document(_) => Op::Not(field_ops(arg)?),
            _ => return Err(bad("$not needs a regex or a document")),
        },
        "$elemMatch" => match arg {
            Bson::Document(d)
                if is_operator_doc(arg).is_some() && !d.contains_key("$and") && !d.contains_key("$or") =>
            {
                Op::ElemMatch(ElemMatch::Values(d.iter().map(|(o, a)| operator(o, a)).collect::<Result<_, _>>()?))
            }
            Bson::Document(d) => Op::ElemMatch(ElemMatch::Docs(Box::new(compile(d)?))),
            _ => return Err(bad("$elemMatch needs an Object")),
        },
        "$type" => {
            let names = match arg {
                Bson::Array(a) => a.clone(),
                other => vec![other.clone()],
            };
            Op::Type(names.iter().map(type_code).collect::<Result<Vec<_>, _>>()?.concat())
        }
        "$regex" => return Err(bad("$regex has to be a string")),
        "$where" | "$text" | "$expr" | "$mod" | "$geoWithin" | "$near" => {
            return Err(CommandError::new(Code::NotImplemented, format!("{op} is not supported by this server yet")));
        }
        other => return Err(bad(format!("unknown operator: {other}"))),
    })
}

fn truthy(v: &Bson) -> bool {
    match v {
        Bson::Boolean(b) => *b,
        Bson::Null | Bson::Undefined => false,
        other => crate::bsonx::cmp::number(other).is_none_or(|n| n != 0.0),
    }
}

/// `$type`'s argument: a BSON type number or alias; `number` is every numeric type.
fn type_code(v: &Bson) -> Result<Vec<u8>, CommandError> {
    if let Some(n) = crate::bsonx::cmp::number(v) {
        return Ok(vec![n as u8]);
    }
    let code = match v.as_str().unwrap_or_default() {
        "double" => 1,
        "string" => 2,
        "object" => 3,
        "array" => 4,
        "binData" => 5,
        "objectId" => 7,
        "bool" => 8,
        "date" => 9,
        "null" => 10,
        "regex" => 11,
        "int" => 16,
        "timestamp" => 17,
        "long" => 18,
        "decimal" => 19,
        "number" => return Ok(vec![1, 16, 18, 19]),
        other => return Err(bad(format!("unknown type name alias: {other}"))),
    };
    Ok(vec![code])
}

impl Filter {
    pub fn matches(&self, doc: &Document) -> bool {
        match self {
            Filter::And(fs) => fs.iter().all(|f| f.matches(doc)),
            Filter::Or(fs) => fs.iter().any(|f| f.matches(doc)),
            Filter::Nor(fs) => !fs.iter().any(|f| f.matches(doc)),
            Filter::Field { path, ops } => {
                let reached = lookup(doc, path);
                ops.iter().all(|op| op.matches(&reached))
            }
        }
    }
}

/// Each value reached, and each element of a reached array: what most operators try.
fn candidates<'a>(r: &Reached<'a>) -> impl Iterator<Item = &'a Bson> + 'a {
    let values = r.values.clone();
    values.into_iter().flat_map(|v| {
        let elems: Vec<&Bson> = match v {
            Bson::Array(items) => items.iter().collect(),
            _ => Vec::new(),
        };
        std::iter::once(v).chain(elems)
    })
}

fn eq(r: &Reached<'_>, want: &Bson) -> bool {
    if matches!(want, Bson::Null) && (r.missing || r.values.is_empty()) {
        return true;
    }
    candidates(r).any(|v| equal(v, want))
}

/// A pattern matches a reached string, or a string element of a reached array.
fn matches_regex(r: &Reached<'_>, re: &Regex) -> bool {
    candidates(r).any(|v| match v {
        Bson::String(s) | Bson::Symbol(s) => re.is_match(s),
        _ => false,
    })
}

impl Op {
    fn matches(&self, r: &Reached<'_>) -> bool {
        match self {
            Op::Eq(v) => eq(r, v),
            Op::Ne(v) => !eq(r, v),
            Op::In(vs, res) => vs.iter().any(|v| eq(r, v)) || res.iter().any(|re| matches_regex(r, re)),
            Op::Nin(vs, res) => !(vs.iter().any(|v| eq(r, v)) || res.iter().any(|re| matches_regex(r, re))),
            Op::Regex(re) => matches_regex(r, re),
            Op::All(vs) => !vs.is_empty() && vs.iter().all(|v| eq(r, v)),
            Op::Cmp(dir, or_equal, want) => {
                if matches!(want, Bson::Null) && *or_equal && (r.missing || r.values.is_empty()) {
                    return true;
                }
                candidates(r).any(|v| {
                    rank(v) == rank(want) && {
                        let o = compare(v, want);
                        o == *dir || (*or_equal && o == Ordering::Equal)
                    }
                })
            }
            Op::Exists(want) => r.values.is_empty() != *want,
            Op::Size(n) => r.values.iter().any(|v| matches!(v, Bson::Array(a) if a.len() == *n)),
            Op::Not(ops) => !ops.iter().all(|o| o.matches(r)),
            Op::Type(codes) => candidates(r).any(|v| codes.contains(&(v.element_type() as u8))),
            Op::ElemMatch(m) => r.values.iter().any(|v| match v {
                Bson::Array(items) => items.iter().any(|e| match (m, e) {
                    (ElemMatch::Docs(f), Bson::Document(d)) => f.matches(d),
                    (ElemMatch::Values(ops), e) => {
                        let one = Reached { values: vec![e], missing: false };
                        ops.iter().all(|o| o.matches(&one))
                    }
                    _ => false,
                }),
                _ => false,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;

    fn m(filter: Document, d: Document) -> bool {
        compile(&filter).unwrap().matches(&d)
    }

    #[test]
    fn equality_reaches_into_arrays_and_null_matches_missing() {
        let d = doc! {"a": 1, "tags": ["x", "y"], "sub": {"n": 2.0}, "xs": [{"v": 1}, {"v": 5}]};
        assert!(m(doc! {"a": 1.0}, d.clone()));
        assert!(m(doc! {"tags": "y"}, d.clone()));
        assert!(m(doc! {"tags": ["x", "y"]}, d.clone()));
        assert!(m(doc! {"sub.n": 2}, d.clone()));
        assert!(m(doc! {"xs.v": 5}, d.clone()));
        assert!(m(doc! {"missing": null}, d.clone()));
        assert!(!m(doc! {"a": null}, d.clone()));
        assert!(!m(doc! {"a": "1"}, d.clone()));
    }

    #[test]
    fn ranges_stay_in_their_type_bracket() {
        let d = doc! {"n": 5, "s": "m", "xs": [1, 10]};
        assert!(m(doc! {"n": {"$gt": 4, "$lte": 5}}, d.clone()));
        assert!(!m(doc! {"s": {"$gt": 4}}, d.clone()), "a string is not greater than a number");
        assert!(m(doc! {"s": {"$gte": "a"}}, d.clone()));
        assert!(m(doc! {"xs": {"$gt": 5, "$lt": 2}}, d.clone()), "each operator may match another element");
        assert!(!m(doc! {"xs": {"$elemMatch": {"$gt": 5, "$lt": 2}}}, d.clone()), "one element must match all");
        assert!(m(doc! {"xs": {"$elemMatch": {"$gt": 5, "$lt": 20}}}, d.clone()));
    }

    #[test]
    fn logical_set_and_shape_operators() {
        let d = doc! {"a": 1, "tags": ["x", "y"], "xs": [{"k": "a", "v": 1}, {"k": "b", "v": 2}]};
        assert!(m(doc! {"$or": [{"a": 2}, {"tags": "x"}]}, d.clone()));
        assert!(!m(doc! {"$nor": [{"a": 1}]}, d.clone()));
        assert!(m(doc! {"$and": [{"a": 1}, {"tags": {"$size": 2}}]}, d.clone()));
        assert!(m(doc! {"a": {"$in": [3, 1]}, "tags": {"$nin": ["z"]}}, d.clone()));
        assert!(!m(doc! {"tags": {"$ne": "x"}}, d.clone()), "$ne is false when any element equals");
        assert!(m(doc! {"tags": {"$all": ["y", "x"]}}, d.clone()));
        assert!(m(doc! {"b": {"$exists": false}, "a": {"$exists": true}}, d.clone()));
        assert!(m(doc! {"a": {"$not": {"$gt": 5}}}, d.clone()));
        assert!(m(doc! {"xs": {"$elemMatch": {"k": "b", "v": 2}}}, d.clone()));
        assert!(!m(doc! {"xs": {"$elemMatch": {"k": "b", "v": 1}}}, d.clone()));
        assert!(m(doc! {"a": {"$type": "number"}, "tags": {"$type": "array"}}, d.clone()));
    }

    #[test]
    fn regexes_match_strings_and_string_elements() {
        let d = doc! {"name": "Alice Smith", "tags": ["red", "Blue"], "n": 5};
        let re = |p: &str, o: &str| {
            Bson::RegularExpression(bson::Regex { pattern: p.try_into().unwrap(), options: o.try_into().unwrap() })
        };
        assert!(m(doc! {"name": {"$regex": "^ali", "$options": "i"}}, d.clone()));
        assert!(!m(doc! {"name": {"$regex": "^ali"}}, d.clone()));
        assert!(m(doc! {"name": re("smith$", "i")}, d.clone()));
        assert!(m(doc! {"tags": {"$regex": "^bl", "$options": "i"}}, d.clone()), "an array element matches");
        assert!(m(doc! {"tags": {"$in": [re("^gr", ""), "red"]}}, d.clone()));
        assert!(m(doc! {"tags": {"$nin": [re("^z", "")]}}, d.clone()));
        assert!(m(doc! {"name": {"$not": re("^Bob", "")}}, d.clone()));
        assert!(!m(doc! {"n": {"$regex": "5"}}, d.clone()), "numbers are not strings");
        assert!(m(doc! {"name": {"$regex": re("l.*S", "")}}, d.clone()));
        assert_eq!(compile(&doc! {"a": {"$regex": "x", "$options": "q"}}).unwrap_err().code, Code::BadValue);
    }

    #[test]
    fn bad_filters_name_the_operator() {
        for (f, says) in [
            (doc! {"$foo": 1}, "$foo"),
            (doc! {"a": {"$bogus": 1}}, "$bogus"),
            (doc! {"$or": []}, "$or"),
            (doc! {"a": {"$in": 1}}, "$in"),
        ] {
            let e = compile(&f).unwrap_err();
            assert_eq!(e.code, Code::BadValue);
            assert!(e.message.contains(says), "{e:?}");
        }
        assert_eq!(compile(&doc! {"a": {"$regex": "(?<=x)y"}}).unwrap_err().code, Code::BadRegex);
        assert_eq!(compile(&doc! {"a": {"$options": "i"}}).unwrap_err().code, Code::BadValue);
    }
}
