//! Client keys: the rest of the path after `/v1/kv/`, percent-decoded.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

/// Longest key, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 1024;

/// Why a key is refused (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Nothing after `/v1/kv/`.
    #[error("the key is empty; use /v1/kv/<key>")]
    Empty,
    /// Over [`MAX_KEY_BYTES`].
    #[error("the key is {0} bytes long; the limit is 1024 bytes")]
    TooLong(usize),
    /// Percent-decoding gave bytes that are not UTF-8.
    #[error("the key is not valid UTF-8 after percent-decoding")]
    NotUtf8,
    /// A control character (U+0000..U+001F, U+007F..U+009F).
    #[error("the key contains a control character")]
    Control,
}

/// Decodes and validates a raw (percent-encoded) key from a request path.
pub fn parse_key(raw: &str) -> Result<String, KeyError> {
    let bytes: Vec<u8> = percent_decode_str(raw).collect();
    let key = String::from_utf8(bytes).map_err(|_| KeyError::NotUtf8)?;
    validate_key(&key)?;
    Ok(key)
}

/// Checks an already decoded key against the rules of docs/api.md.
pub fn validate_key(key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(KeyError::TooLong(key.len()));
    }
    if key.chars().any(char::is_control) {
        return Err(KeyError::Control);
    }
    Ok(())
}

/// Characters a client escapes in a key's path (everything but unreserved
/// characters and `/`).
const PATH_ESCAPE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'[')
    .add(b']')
    .add(b'\\')
    .add(b'^')
    .add(b'|')
    .add(b'+')
    .add(b';')
    .add(b'=')
    .add(b'&')
    .add(b'@')
    .add(b':')
    .add(b'$')
    .add(b',')
    .add(b'!')
    .add(b'\'')
    .add(b'(')
    .add(b')')
    .add(b'*');

/// Encodes `key` for a URL path, keeping `/` as is.
pub fn encode_key(key: &str) -> String {
    utf8_percent_encode(key, PATH_ESCAPE).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_the_path_encoding() {
        for key in ["a", "app/db/url", "with space", "ключ/値", "100%", "a?b#c"] {
            assert_eq!(parse_key(&encode_key(key)).unwrap(), key);
        }
    }

    #[test]
    fn bad_keys_are_refused() {
        assert_eq!(parse_key(""), Err(KeyError::Empty));
        assert_eq!(parse_key("%FF"), Err(KeyError::NotUtf8));
        assert_eq!(parse_key("a%0Ab"), Err(KeyError::Control));
        assert_eq!(parse_key(&"k".repeat(1025)), Err(KeyError::TooLong(1025)));
        assert!(parse_key(&"k".repeat(1024)).is_ok());
    }
}
