//! How an entry's metadata is written as Redis fields (in its hash and in stream messages),
//! and read back strictly: a missing or malformed field is an error, never a guess.

use super::EntryMeta;
use super::codec::{id_from_hex, id_to_hex, vector_from_le_bytes, vector_to_le_bytes};
use crate::{EntryId, Error, Result};

/// The metadata fields, in the order [`decode_meta`] expects their values.
pub(crate) const META_FIELDS: [&str; 10] = [
    "id", "cat", "ten", "part", "vec", "q", "ca", "ea", "cost", "bl",
];
/// The hash field holding the body, read only by `get`.
pub(crate) const BODY_FIELD: &str = "body";

/// The metadata as field/value pairs; `q` is left out when there is no question. Numbers are
/// decimal text so that `redis-cli` shows them readably; the vector is little-endian f32 bytes.
pub(crate) fn encode_meta(meta: &EntryMeta) -> Vec<(&'static str, Vec<u8>)> {
    let mut fields = vec![
        ("id", id_to_hex(meta.id).into_bytes()),
        ("cat", meta.category.clone().into_bytes()),
        ("ten", meta.tenant.clone().into_bytes()),
        ("part", meta.partition.to_string().into_bytes()),
        ("vec", vector_to_le_bytes(&meta.vector)),
        ("ca", meta.created_at_ms.to_string().into_bytes()),
        ("ea", meta.expires_at_ms.to_string().into_bytes()),
        // Rust prints the shortest text that parses back to the same f32.
        ("cost", meta.cost.to_string().into_bytes()),
        ("bl", meta.body_bytes.to_string().into_bytes()),
    ];
    if let Some(question) = &meta.question {
        fields.push(("q", question.clone().into_bytes()));
    }
    fields
}

/// The metadata from values in [`META_FIELDS`] order; `expected_id` is the id the key or
/// message named, which the stored `id` field must repeat.
pub(crate) fn decode_meta(expected_id: EntryId, values: &[Option<Vec<u8>>]) -> Result<EntryMeta> {
    let corrupt = |reason: String| Error::CorruptEntry {
        id: expected_id,
        reason,
    };
    let field = |index: usize| -> Result<&[u8]> {
        values
            .get(index)
            .and_then(Option::as_deref)
            .ok_or_else(|| corrupt(format!("field {} is missing", META_FIELDS[index])))
    };
    let text = |index: usize| -> Result<String> {
        String::from_utf8(field(index)?.to_vec())
            .map_err(|_| corrupt(format!("field {} is not utf-8", META_FIELDS[index])))
    };
    let number = |index: usize| -> Result<u64> {
        text(index)?
            .parse()
            .map_err(|_| corrupt(format!("field {} is not a number", META_FIELDS[index])))
    };
    let id =
        id_from_hex(&text(0)?).ok_or_else(|| corrupt("field id is not 16 hex digits".into()))?;
    if id != expected_id {
        return Err(corrupt(format!("holds entry {id:016x}")));
    }
    let vector = vector_from_le_bytes(field(4)?)
        .ok_or_else(|| corrupt("vector bytes are not a whole number of f32".into()))?;
    let question = match values.get(5).and_then(Option::as_deref) {
        None => None,
        Some(_) => Some(text(5)?),
    };
    let cost = text(8)?
        .parse()
        .map_err(|_| corrupt("field cost is not a number".into()))?;
    Ok(EntryMeta {
        id,
        category: text(1)?,
        tenant: text(2)?,
        partition: number(3)?,
        vector,
        question,
        created_at_ms: number(6)?,
        expires_at_ms: number(7)?,
        cost,
        body_bytes: usize::try_from(number(9)?)
            .map_err(|_| corrupt("field bl is too large".into()))?,
    })
}

/// Values in [`META_FIELDS`] order from field/value pairs (a stream message).
pub(crate) fn meta_values(mut lookup: impl FnMut(&str) -> Option<Vec<u8>>) -> Vec<Option<Vec<u8>>> {
    META_FIELDS.iter().map(|name| lookup(name)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::entry;

    fn values_of(meta: &EntryMeta) -> Vec<Option<Vec<u8>>> {
        let fields = encode_meta(meta);
        meta_values(|name| {
            fields
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn meta_round_trips_with_and_without_question() {
        let mut meta = entry(0xabc, "", 99).meta;
        meta.cost = 0.1;
        assert_eq!(decode_meta(0xabc, &values_of(&meta)).unwrap(), meta);
        meta.question = None;
        assert_eq!(decode_meta(0xabc, &values_of(&meta)).unwrap(), meta);
    }

    #[test]
    fn damaged_fields_are_errors() {
        let meta = entry(7, "", 99).meta;
        let check = |index: usize, value: Option<&[u8]>, reason: &str| {
            let mut values = values_of(&meta);
            values[index] = value.map(<[u8]>::to_vec);
            match decode_meta(7, &values) {
                Err(Error::CorruptEntry { id: 7, reason: r }) => assert!(r.contains(reason), "{r}"),
                other => panic!("{reason}: {other:?}"),
            }
        };
        check(0, Some(b"0000000000000008"), "holds entry 0000000000000008");
        check(0, Some(b"zz"), "16 hex digits");
        check(1, None, "cat is missing");
        check(2, Some(&[0xff, 0xfe]), "ten is not utf-8");
        check(3, Some(b"-1"), "part is not a number");
        check(4, Some(&[0, 0, 128]), "whole number of f32");
        check(4, None, "vec is missing");
        check(7, Some(b"soon"), "ea is not a number");
        check(8, Some(b"cheap"), "cost is not a number");
    }
}
