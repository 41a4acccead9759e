//! The rules for person and collection names: one validator for the web
//! tier, the workers, the video path and the CLI, and the one way a name
//! (or a video stem) goes into a URL path ([`url_segment`]).

/// The collection behind the course route and the `/v1/people` routes.
pub const DEFAULT_COLLECTION: &str = "default";

/// Longest accepted person name, in characters.
pub const MAX_PERSON_CHARS: usize = 100;

/// Longest accepted person name, in UTF-8 bytes.
pub const MAX_PERSON_BYTES: usize = 200;

/// Longest accepted collection name, in bytes.
pub const MAX_COLLECTION_BYTES: usize = 64;

/// A name that is not acceptable, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{why} (got {name:?})")]
pub struct InvalidName {
    /// The rule it breaks.
    pub why: &'static str,
    /// The name, for the message.
    pub name: String,
}

/// Bytes kept as they are in a URL path segment: RFC 3986's unreserved
/// characters; everything else is percent-encoded (`/` included).
const PATH_SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// `s` as one percent-encoded URL path segment (a person, collection or
/// video stem in a link the API hands out).
pub fn url_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, PATH_SEGMENT).to_string()
}

/// Bidirectional formatting characters: they reorder what a name shows
/// (U+202E shows the rest of a name backwards), so two people could look alike.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Characters that show nothing on their own: spaces, zero-width ones, the
/// soft hyphen and the byte-order mark. (Zero-width joiners stay allowed
/// inside names, where scripts and emoji need them.)
fn is_invisible(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\u{00AD}' | '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}')
}

/// Checks a person name: 1 to 100 characters and at most 200 bytes, no
/// `/`, `\`, control or bidirectional formatting characters, at least one
/// visible character, not `.` or `..`, no surrounding spaces.
pub fn validate_person(name: &str) -> Result<(), InvalidName> {
    let bad = |why: &'static str| Err(InvalidName { why, name: name.chars().take(120).collect() });
    if name.is_empty() {
        return bad("empty name");
    }
    if name.chars().count() > MAX_PERSON_CHARS {
        return bad("longer than 100 characters");
    }
    if name.len() > MAX_PERSON_BYTES {
        return bad("longer than 200 bytes in UTF-8");
    }
    if name.trim() != name {
        return bad("leading or trailing spaces");
    }
    if name.contains('/') || name.contains('\\') || name.chars().any(char::is_control) {
        return bad("`/`, `\\` and control characters are not allowed");
    }
    if name == "." || name == ".." {
        return bad("`.` and `..` are not names");
    }
    if name.chars().any(is_bidi_control) {
        return bad("bidirectional formatting characters (such as U+202E) are not allowed");
    }
    if name.chars().all(is_invisible) {
        return bad("a name needs at least one visible character");
    }
    Ok(())
}

/// Checks a collection name: 1 to 64 characters of `a-z`, `0-9`, `-` and
/// `_`, starting with a letter or a digit.
pub fn validate_collection(name: &str) -> Result<(), InvalidName> {
    let bad = |why: &'static str| Err(InvalidName { why, name: name.chars().take(80).collect() });
    if name.is_empty() || name.len() > MAX_COLLECTION_BYTES {
        return bad("a collection name has 1 to 64 characters");
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_') {
        return bad("a collection name uses only a-z, 0-9, `-` and `_`");
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return bad("a collection name starts with a letter or a digit");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_segments_keep_unreserved_characters_only() {
        assert_eq!(url_segment("a b/ü"), "a%20b%2F%C3%BC");
        assert_eq!(url_segment("test_0-1.x~"), "test_0-1.x~");
        assert_eq!(url_segment("../%"), "..%2F%25");
    }

    #[test]
    fn person_names() {
        for ok in ["Paul", "Jean-Luc Picard", "Émile", "王", "می\u{200C}خواهم", "👩\u{200D}🔬"] {
            assert!(validate_person(ok).is_ok(), "{ok}");
        }
        let spoofs = ["Paul\u{202E}gnp", "\u{2067}Paul", "\u{200B}", "\u{FEFF}\u{200B}", "\u{200D}"];
        for bad in ["", " Paul", "a/b", "..", ".", "a\\b", "a\nb", &"x".repeat(101), &"😀".repeat(64)].into_iter().chain(spoofs) {
            assert!(validate_person(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn collection_names() {
        for ok in ["default", "tenant-1", "a", "0_x"] {
            assert!(validate_collection(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Default", "-x", "_x", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(validate_collection(bad).is_err(), "{bad:?}");
        }
    }
}
