//! Byte encodings shared by the snapshot file and Redis: vectors and entry ids.

use crate::EntryId;

/// The vector as little-endian f32 bytes, 4 per component.
pub(crate) fn vector_to_le_bytes(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The vector from little-endian f32 bytes; None when the length is not a multiple of 4, since
/// truncated bytes must never become a shorter (wrong) vector.
pub(crate) fn vector_from_le_bytes(bytes: &[u8]) -> Option<Vec<f32>> {
    let chunks = bytes.chunks_exact(4);
    if !chunks.remainder().is_empty() {
        return None;
    }
    Some(
        chunks
            .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
            .collect(),
    )
}

/// The id as 16 lowercase hex digits, the form used in Redis keys and messages.
pub(crate) fn id_to_hex(id: EntryId) -> String {
    format!("{id:016x}")
}

/// The id from exactly 16 hex digits.
pub(crate) fn id_from_hex(text: &str) -> Option<EntryId> {
    // from_str_radix alone would also take a sign.
    if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    EntryId::from_str_radix(text, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_round_trips_bit_for_bit() {
        let vector = vec![0.0, -0.0, 1.5, f32::MAX, f32::MIN_POSITIVE, -3.25];
        let bytes = vector_to_le_bytes(&vector);
        assert_eq!(bytes.len(), 24);
        let back = vector_from_le_bytes(&bytes).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&vector));
    }

    #[test]
    fn vector_of_partial_component_is_refused() {
        assert_eq!(vector_from_le_bytes(&[]), Some(vec![]));
        for len in [1, 2, 3, 5, 7] {
            assert_eq!(vector_from_le_bytes(&vec![0; len]), None, "{len} bytes");
        }
    }

    #[test]
    fn ids_round_trip_and_bad_hex_is_refused() {
        for id in [0, 1, 0xdead_beef, u64::MAX] {
            let hex = id_to_hex(id);
            assert_eq!(hex.len(), 16);
            assert_eq!(id_from_hex(&hex), Some(id));
        }
        assert_eq!(id_to_hex(255), "00000000000000ff");
        for bad in [
            "",
            "ff",
            "00000000000000fg",
            "000000000000000ff",
            "+000000000000000",
        ] {
            assert_eq!(id_from_hex(bad), None, "{bad:?}");
        }
    }
}
