//! Projections: inclusion (`{a: 1, "b.c": 1}`; `_id` kept unless `_id: 0`) or exclusion
//! (`{a: 0, "b.c": 0}`) of fields, dotted paths reaching into documents and through
//! arrays of documents as MongoDB's do. Computed fields are aggregate's (`$project`,
//! `$addFields`); find's expression projections (`$slice`, `$elemMatch`, `"$a"`)
//! answer NotImplemented.

use std::collections::BTreeMap;

use bson::{Bson, Document};

use crate::error::{Code, CommandError};

/// The fields a projection names, as a tree of path components.
#[derive(Debug, Default)]
pub struct Tree(BTreeMap<String, Node>);

#[derive(Debug)]
enum Node {
    Leaf,
    Sub(Tree),
}

fn collision(path: &str) -> CommandError {
    CommandError::new(Code::BadValue, format!("Path collision at {path}"))
}

impl Tree {
    pub fn add(&mut self, path: &str) -> Result<(), CommandError> {
        let parts: Vec<&str> = path.split('.').collect();
        if parts.iter().any(|p| p.is_empty() || p.starts_with('$')) {
            return Err(CommandError::new(Code::BadValue, format!("bad projection path {path:?}")));
        }
        let mut at = self;
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let node =
                at.0.entry((*part).to_owned())
                    .or_insert_with(|| if last { Node::Leaf } else { Node::Sub(Tree::default()) });
            match node {
                Node::Leaf => return if last { Ok(()) } else { Err(collision(path)) },
                Node::Sub(_) if last => return Err(collision(path)),
                Node::Sub(t) => at = t,
            }
        }
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn include_value(v: &Bson, sub: &Tree) -> Option<Bson> {
    match v {
        Bson::Document(d) => Some(Bson::Document(include(d, sub))),
        Bson::Array(items) => Some(Bson::Array(items.iter().filter_map(|i| include_value(i, sub)).collect())),
        _ => None,
    }
}

/// The fields of `doc` that `tree` names (sub-documents kept to the named paths).
pub fn include(doc: &Document, tree: &Tree) -> Document {
    let mut out = Document::new();
    for (k, v) in doc {
        match tree.0.get(k) {
            Some(Node::Leaf) => {
                out.insert(k, v.clone());
            }
            Some(Node::Sub(sub)) => {
                if let Some(v) = include_value(v, sub) {
                    out.insert(k, v);
                }
            }
            None => {}
        }
    }
    out
}

fn exclude_value(v: &Bson, sub: &Tree) -> Bson {
    match v {
        Bson::Document(d) => Bson::Document(exclude(d, sub)),
        Bson::Array(items) => Bson::Array(items.iter().map(|i| exclude_value(i, sub)).collect()),
        other => other.clone(),
    }
}

/// `doc` without the fields `tree` names.
pub fn exclude(doc: &Document, tree: &Tree) -> Document {
    let mut out = Document::new();
    for (k, v) in doc {
        match tree.0.get(k) {
            Some(Node::Leaf) => {}
            Some(Node::Sub(sub)) => {
                out.insert(k, exclude_value(v, sub));
            }
            None => {
                out.insert(k, v.clone());
            }
        }
    }
    out
}

/// A projection value that includes (true) or excludes (false) its field; `None` for
/// anything else (an expression).
pub fn flag(v: &Bson) -> Option<bool> {
    match v {
        Bson::Boolean(b) => Some(*b),
        other => crate::bsonx::cmp::number(other).map(|n| n != 0.0),
    }
}

/// A parsed projection of flags only: the fields it names and whether it includes them.
pub struct Projection {
    tree: Tree,
    inclusive: bool,
    keep_id: bool,
}

impl Projection {
    /// Parses the flags of `spec`; expression values are left to the caller (aggregate
    /// computes them) when `expressions_ok`, otherwise refused.
    pub fn parse(spec: &Document, expressions_ok: bool) -> Result<Projection, CommandError> {
        let mut tree = Tree::default();
        let (mut includes, mut excludes) = (false, false);
        let mut keep_id = true;
        for (k, v) in spec {
            match (k.as_str(), flag(v)) {
                ("_id", Some(on)) => keep_id = on,
                (_, Some(on)) => {
                    tree.add(k)?;
                    if on { includes = true } else { excludes = true }
                }
                (_, None) if expressions_ok => includes = true,
                (_, None) => {
                    return Err(CommandError::new(
                        Code::NotImplemented,
                        format!("projection expressions ({k}) are not supported by this server; use aggregate"),
                    ));
                }
            }
        }
        if includes && excludes {
            return Err(CommandError::new(Code::BadValue, "Cannot do exclusion and inclusion in one projection"));
        }
        Ok(Projection { tree, inclusive: includes, keep_id })
    }

    pub fn apply(&self, doc: &Document) -> Document {
        let mut out = if self.inclusive {
            include(doc, &self.tree)
        } else if self.tree.is_empty() {
            doc.clone()
        } else {
            exclude(doc, &self.tree)
        };
        match (self.keep_id, doc.get("_id")) {
            (false, _) => {
                out.remove("_id");
            }
            (true, Some(id)) if !out.contains_key("_id") => {
                let mut with = Document::new();
                with.insert("_id", id.clone());
                with.extend(out);
                out = with;
            }
            _ => {}
        }
        out
    }
}

/// find's projection of one document.
pub fn project(doc: Document, spec: &Document) -> Result<Document, CommandError> {
    if spec.is_empty() {
        return Ok(doc);
    }
    Ok(Projection::parse(spec, false)?.apply(&doc))
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;

    #[test]
    fn dotted_paths_reach_into_documents_and_arrays() {
        let d = doc! {"_id": 1, "a": {"b": 1, "c": 2}, "xs": [{"y": 1, "z": 2}, 5, {"z": 3}], "s": 3};
        assert_eq!(project(d.clone(), &doc! {"a.b": 1}).unwrap(), doc! {"_id": 1, "a": {"b": 1}});
        assert_eq!(project(d.clone(), &doc! {"xs.z": 1, "_id": 0}).unwrap(), doc! {"xs": [{"z": 2}, {"z": 3}]});
        assert_eq!(
            project(d.clone(), &doc! {"a.c": 0, "xs.y": 0, "s": false}).unwrap(),
            doc! {"_id": 1, "a": {"b": 1}, "xs": [{"z": 2}, 5, {"z": 3}]}
        );
        assert_eq!(project(d.clone(), &doc! {"s.t": 1}).unwrap(), doc! {"_id": 1}, "a scalar has no sub-field");
        assert_eq!(project(d.clone(), &doc! {"_id": 0}).unwrap().len(), 3);
        assert_eq!(project(d.clone(), &doc! {"a": 1, "a.b": 1}).unwrap_err().code, Code::BadValue);
        assert_eq!(project(d.clone(), &doc! {"a": 1, "s": 0}).unwrap_err().code, Code::BadValue);
        assert_eq!(project(d, &doc! {"a": "$s"}).unwrap_err().code, Code::NotImplemented);
    }
}
