//! The identity of a job module: the SHA-256 of its bytes.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::error::Error;

/// SHA-256 of a module's wasm bytes. Workers name the module they need by this hash, the runtime
/// memoizes compiled modules by it, and the disk cache names files after it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleHash([u8; 32]);

impl ModuleHash {
    /// The hash of `wasm`.
    pub fn of(wasm: &[u8]) -> ModuleHash {
        ModuleHash(Sha256::digest(wasm).into())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> ModuleHash {
        ModuleHash(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Lower-case hex, 64 digits.
impl fmt::Display for ModuleHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ModuleHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModuleHash({self})")
    }
}

/// Parses 64 hex digits (either case).
impl FromStr for ModuleHash {
    type Err = Error;

    fn from_str(text: &str) -> Result<ModuleHash, Error> {
        let bad = || Error::BadModuleHash {
            text: text.to_owned(),
        };
        let digits = text.as_bytes();
        if digits.len() != 64 {
            return Err(bad());
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        Ok(ModuleHash(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_is_sha256_and_round_trips_through_hex() {
        let hash = ModuleHash::of(b"abc");
        let hex = hash.to_string();
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hex.parse::<ModuleHash>().unwrap(), hash);
        assert_eq!(hex.to_uppercase().parse::<ModuleHash>().unwrap(), hash);
    }

    #[test]
    fn text_that_is_not_64_hex_digits_is_refused() {
        for text in ["", "abc", &"g".repeat(64), &"a".repeat(63), &"é".repeat(32)] {
            let err = text.parse::<ModuleHash>().unwrap_err();
            assert!(matches!(err, Error::BadModuleHash { .. }), "{text}: {err}");
        }
    }
}
