//! Dotted paths (`a.b.0.c`) into a document as queries walk them: through a document's
//! field, into every element of an array on the way (an array of documents is searched
//! element by element), or to an array's element when the component is a number.

use bson::{Bson, Document};

/// The values a path reaches, as a query sees them. An array reached at the end is one
/// value (the query then also looks at its elements); `missing` says whether some branch
/// ended without the field, which `null` and `$exists` care about.
pub fn lookup<'a>(doc: &'a Document, path: &str) -> Reached<'a> {
    let mut out = Reached::default();
    walk(doc, &path.split('.').collect::<Vec<_>>(), &mut out);
    out
}

#[derive(Default, Debug)]
pub struct Reached<'a> {
    pub values: Vec<&'a Bson>,
    pub missing: bool,
}

fn walk<'a>(doc: &'a Document, parts: &[&str], out: &mut Reached<'a>) {
    let Some((first, rest)) = parts.split_first() else { return };
    match doc.get(*first) {
        None => out.missing = true,
        Some(v) => descend(v, rest, out),
    }
}

fn descend<'a>(v: &'a Bson, rest: &[&str], out: &mut Reached<'a>) {
    let Some((next, after)) = rest.split_first() else {
        out.values.push(v);
        return;
    };
    match v {
        Bson::Document(d) => walk(d, rest, out),
        Bson::Array(items) => {
            // A numeric component names an element; any component is also looked for in
            // each element that is a document.
            if let Ok(i) = next.parse::<usize>()
                && let Some(e) = items.get(i)
            {
                descend(e, after, out);
            }
            for e in items {
                if let Bson::Document(d) = e {
                    walk(d, rest, out);
                }
            }
            if out.values.is_empty() {
                out.missing = true;
            }
        }
        _ => out.missing = true,
    }
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;

    #[test]
    fn paths_go_through_documents_and_arrays() {
        let d = doc! {"a": {"b": 1}, "xs": [{"y": 1}, {"y": 2}, {"z": 3}], "n": [10, 20]};
        assert_eq!(lookup(&d, "a.b").values, vec![&Bson::Int32(1)]);
        let ys = lookup(&d, "xs.y");
        assert_eq!(ys.values, vec![&Bson::Int32(1), &Bson::Int32(2)]);
        assert_eq!(lookup(&d, "n.1").values, vec![&Bson::Int32(20)]);
        assert_eq!(lookup(&d, "xs.2.z").values, vec![&Bson::Int32(3)]);
        assert!(lookup(&d, "a.c").missing && lookup(&d, "q").missing);
        assert_eq!(lookup(&d, "n").values, vec![&Bson::Array(vec![Bson::Int32(10), Bson::Int32(20)])]);
    }
}
