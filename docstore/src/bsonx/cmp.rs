//! MongoDB's total order over BSON values: first by a canonical type rank (all numbers
//! are one type, so are strings and symbols), then by value within it. Sorting, range
//! operators and `$min`/`$max` all use it.

use std::cmp::Ordering;

use bson::Bson;

/// The canonical rank of a value's type (MongoDB's `canonicalizeBSONType`).
pub fn rank(v: &Bson) -> i32 {
    match v {
        Bson::MinKey => -1,
        Bson::Undefined => 0,
        Bson::Null => 5,
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_) => 10,
        Bson::String(_) | Bson::Symbol(_) => 15,
        Bson::Document(_) => 20,
        Bson::Array(_) => 25,
        Bson::Binary(_) => 30,
        Bson::ObjectId(_) => 35,
        Bson::Boolean(_) => 40,
        Bson::DateTime(_) => 45,
        Bson::Timestamp(_) => 47,
        Bson::RegularExpression(_) => 50,
        Bson::DbPointer(_) => 55,
        Bson::JavaScriptCode(_) => 60,
        Bson::JavaScriptCodeWithScope(_) => 65,
        Bson::MaxKey => 127,
    }
}

/// A number as an `f64` for comparison across numeric types (Decimal128 is not
/// computed on: it ranks with numbers and compares equal to none).
pub fn number(v: &Bson) -> Option<f64> {
    match v {
        Bson::Int32(i) => Some(f64::from(*i)),
        Bson::Int64(i) => Some(*i as f64),
        Bson::Double(d) => Some(*d),
        _ => None,
    }
}

fn numbers(a: &Bson, b: &Bson) -> Ordering {
    match (a, b) {
        // Exact for integers, where f64 would round past 2^53.
        (Bson::Int32(_) | Bson::Int64(_), Bson::Int32(_) | Bson::Int64(_)) => int(a).cmp(&int(b)),
        _ => match (number(a), number(b)) {
            // NaN sorts below every other number, and equal to itself.
            (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or_else(|| x.is_nan().cmp(&y.is_nan()).reverse()),
            (x, y) => x.is_some().cmp(&y.is_some()),
        },
    }
}

fn int(v: &Bson) -> i64 {
    match v {
        Bson::Int32(i) => i64::from(*i),
        Bson::Int64(i) => *i,
        _ => 0,
    }
}

/// MongoDB's order of two values.
pub fn compare(a: &Bson, b: &Bson) -> Ordering {
    let by_rank = rank(a).cmp(&rank(b));
    if by_rank != Ordering::Equal {
        return by_rank;
    }
    match (a, b) {
        _ if rank(a) == 10 => numbers(a, b),
        (Bson::String(x) | Bson::Symbol(x), Bson::String(y) | Bson::Symbol(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Bson::Document(x), Bson::Document(y)) => {
            // Field by field: type rank, then name, then value; the shorter first.
            for (ex, ey) in x.iter().zip(y.iter()) {
                let o = rank(ex.1)
                    .cmp(&rank(ey.1))
                    .then_with(|| ex.0.as_bytes().cmp(ey.0.as_bytes()))
                    .then_with(|| compare(ex.1, ey.1));
                if o != Ordering::Equal {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
        (Bson::Array(x), Bson::Array(y)) => {
            for (vx, vy) in x.iter().zip(y) {
                let o = compare(vx, vy);
                if o != Ordering::Equal {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
        (Bson::Binary(x), Bson::Binary(y)) => x
            .bytes
            .len()
            .cmp(&y.bytes.len())
            .then_with(|| u8::from(x.subtype).cmp(&u8::from(y.subtype)))
            .then_with(|| x.bytes.cmp(&y.bytes)),
        (Bson::ObjectId(x), Bson::ObjectId(y)) => x.bytes().cmp(&y.bytes()),
        (Bson::Boolean(x), Bson::Boolean(y)) => x.cmp(y),
        (Bson::DateTime(x), Bson::DateTime(y)) => x.cmp(y),
        (Bson::Timestamp(x), Bson::Timestamp(y)) => (x.time, x.increment).cmp(&(y.time, y.increment)),
        (Bson::RegularExpression(x), Bson::RegularExpression(y)) => {
            (x.pattern.as_str(), x.options.as_str()).cmp(&(y.pattern.as_str(), y.options.as_str()))
        }
        (Bson::JavaScriptCode(x), Bson::JavaScriptCode(y)) => x.cmp(y),
        _ => Ordering::Equal,
    }
}

/// Equality as `$eq` sees it: the same order position (1 and 1.0 are equal).
pub fn equal(a: &Bson, b: &Bson) -> bool {
    compare(a, b) == Ordering::Equal
}

#[cfg(test)]
mod tests {
    use bson::{Bson, doc, oid::ObjectId};

    use super::*;

    #[test]
    fn types_order_as_mongodb_does() {
        let ordered = [
            Bson::MinKey,
            Bson::Null,
            Bson::Double(f64::NAN),
            Bson::Int32(-5),
            Bson::Double(1.5),
            Bson::Int64(2),
            Bson::String("a".into()),
            Bson::String("b".into()),
            Bson::Document(doc! {"a": 1}),
            Bson::Array(vec![Bson::Int32(1)]),
            Bson::ObjectId(ObjectId::from_bytes([0; 12])),
            Bson::Boolean(false),
            Bson::Boolean(true),
            Bson::DateTime(bson::DateTime::from_millis(0)),
            Bson::MaxKey,
        ];
        for w in ordered.windows(2) {
            assert_eq!(compare(&w[0], &w[1]), Ordering::Less, "{:?} < {:?}", w[0], w[1]);
        }
        assert!(equal(&Bson::Int32(1), &Bson::Double(1.0)));
        assert!(equal(&Bson::Int64(1 << 60), &Bson::Int64(1 << 60)));
        assert_eq!(compare(&Bson::Int64((1 << 60) + 1), &Bson::Int64(1 << 60)), Ordering::Greater, "exact past 2^53");
        assert_eq!(compare(&Bson::Document(doc! {"a": 1}), &Bson::Document(doc! {"a": 1, "b": 0})), Ordering::Less);
        assert_eq!(compare(&Bson::Document(doc! {"a": 1}), &Bson::Document(doc! {"b": 0})), Ordering::Less);
    }
}
