//! BSON values as MongoDB compares and reaches them: the cross-type order ([`cmp`]) and
//! dotted paths through documents and arrays ([`path`]).

pub mod cmp;
pub mod path;
