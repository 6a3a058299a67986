//! Reading the CQL values Arrow's cast kernels do not know from text (or from bytes):
//! uuids, IP addresses, hex blobs and epoch-millisecond timestamps.
//!
//! Quarry stores uuids and addresses as canonical text, so two spellings of one value (upper and
//! lower case hex, `::1` and `0:0:0:0:0:0:0:1`) hash to one token and compare equal.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use uuid::Uuid;

/// A uuid in any of the usual spellings (hyphenated, plain hex, braced, `urn:uuid:`). With
/// `time_based`, only version-1 uuids are accepted, as CQL's `timeuuid` requires.
pub(crate) fn parse_uuid(text: &str, time_based: bool) -> Option<Uuid> {
    Uuid::try_parse(text)
        .ok()
        .filter(|u| !time_based || u.get_version_num() == 1)
}

/// A uuid held as its 16 bytes (Parquet's UUID logical type).
pub(crate) fn uuid_from_bytes(bytes: &[u8], time_based: bool) -> Option<Uuid> {
    Uuid::from_slice(bytes)
        .ok()
        .filter(|u| !time_based || u.get_version_num() == 1)
}

/// An IPv4 or IPv6 address.
pub(crate) fn parse_inet(text: &str) -> Option<IpAddr> {
    text.parse().ok()
}

/// An address held as 4 or 16 bytes in network order.
pub(crate) fn inet_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(IpAddr::V4(Ipv4Addr::from(v4)));
    }
    <[u8; 16]>::try_from(bytes)
        .ok()
        .map(|v6| IpAddr::V6(Ipv6Addr::from(v6)))
}

/// Decodes a CQL blob literal, `0x` (or `0X`) then an even number of hex digits, into `out`.
/// Returns false, leaving `out` unspecified, when `text` is not one.
pub(crate) fn parse_blob_hex(text: &str, out: &mut Vec<u8>) -> bool {
    out.clear();
    let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) else {
        return false;
    };
    let hex = hex.as_bytes();
    if hex.len() % 2 != 0 {
        return false;
    }
    out.reserve(hex.len() / 2);
    for pair in hex.chunks_exact(2) {
        match (hex_digit(pair[0]), hex_digit(pair[1])) {
            (Some(high), Some(low)) => out.push(high << 4 | low),
            _ => return false,
        }
    }
    true
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A timestamp written as whole milliseconds since the Unix epoch.
pub(crate) fn parse_epoch_millis(text: &str) -> Option<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_parse_in_any_spelling_and_timeuuids_must_be_version_1() {
        let canonical = "123e4567-e89b-12d3-a456-426614174000";
        for text in [
            canonical,
            "123E4567-E89B-12D3-A456-426614174000",
            "123e4567e89b12d3a456426614174000",
            "{123e4567-e89b-12d3-a456-426614174000}",
            "urn:uuid:123e4567-e89b-12d3-a456-426614174000",
        ] {
            let u = parse_uuid(text, false).unwrap();
            assert_eq!(u.to_string(), canonical);
            assert!(parse_uuid(text, true).is_some(), "version 1: {text}");
        }
        let v4 = "9b2f0e4c-5a1d-4c2b-8e7f-0a1b2c3d4e5f";
        assert!(parse_uuid(v4, false).is_some());
        assert!(parse_uuid(v4, true).is_none());
        assert!(parse_uuid("not-a-uuid", false).is_none());
        let bytes = Uuid::parse_str(canonical).unwrap().into_bytes();
        assert_eq!(
            uuid_from_bytes(&bytes, true).unwrap().to_string(),
            canonical
        );
        assert!(uuid_from_bytes(&bytes[..15], false).is_none());
    }

    #[test]
    fn addresses_parse_to_canonical_text() {
        assert_eq!(parse_inet("10.0.0.1").unwrap().to_string(), "10.0.0.1");
        assert_eq!(parse_inet("0:0:0:0:0:0:0:1").unwrap().to_string(), "::1");
        assert_eq!(
            parse_inet("2001:DB8::0001").unwrap().to_string(),
            "2001:db8::1"
        );
        assert!(parse_inet("10.0.0.256").is_none());
        assert_eq!(
            inet_from_bytes(&[192, 168, 0, 1]).unwrap().to_string(),
            "192.168.0.1"
        );
        assert!(inet_from_bytes(&[1, 2, 3]).is_none());
    }

    #[test]
    fn blobs_are_0x_hex() {
        let mut out = Vec::new();
        assert!(parse_blob_hex("0xCAfe01", &mut out));
        assert_eq!(out, vec![0xca, 0xfe, 0x01]);
        assert!(parse_blob_hex("0x", &mut out));
        assert!(out.is_empty());
        assert!(!parse_blob_hex("cafe", &mut out));
        assert!(!parse_blob_hex("0xcaf", &mut out));
        assert!(!parse_blob_hex("0xzz", &mut out));
    }

    #[test]
    fn epoch_millis_are_plain_integers() {
        assert_eq!(parse_epoch_millis("1705312496789"), Some(1_705_312_496_789));
        assert_eq!(parse_epoch_millis("-5"), Some(-5));
        assert_eq!(parse_epoch_millis("+5"), None);
        assert_eq!(parse_epoch_millis("2024-01-15"), None);
        assert_eq!(parse_epoch_millis(""), None);
        assert_eq!(parse_epoch_millis("-"), None);
    }
}
