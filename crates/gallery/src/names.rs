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

/// Unicode's Default_Ignorable_Code_Point property (DerivedCoreProperties.txt,
/// Unicode 16): characters a renderer shows as nothing, so `Paul` followed by
/// U+2064 looks exactly like `Paul`.
fn is_default_ignorable(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}'..='\u{1160}' | '\u{17B4}'..='\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}'
        | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF0}'..='\u{FFF8}'
        | '\u{1BCA0}'..='\u{1BCA3}' | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E0FFF}')
}

/// Whether the ignorable character `c`, after `prev`, is one that a script
/// needs there: a zero-width (non-)joiner after a letter of a script that
/// joins (Hebrew, Arabic, the Indic scripts and later blocks, emoji), an
/// emoji variation selector after a symbol, a Mongolian variation selector
/// after a Mongolian letter. After a Latin, Greek or Cyrillic letter, or at
/// the start, they only hide.
fn is_needed_joiner(prev: Option<char>, c: char) -> bool {
    let Some(p) = prev else { return false };
    match c {
        '\u{200C}' | '\u{200D}' => p >= '\u{0590}' && !is_default_ignorable(p),
        '\u{FE0E}' | '\u{FE0F}' => p >= '\u{2000}' && !is_default_ignorable(p),
        '\u{180B}'..='\u{180D}' | '\u{180F}' => ('\u{1820}'..='\u{18AF}').contains(&p),
        _ => false,
    }
}

/// Characters that show nothing on their own: spaces, the ignorable ones
/// and the blank braille pattern.
fn is_invisible(c: char) -> bool {
    c.is_whitespace() || is_default_ignorable(c) || c == '\u{2800}'
}

/// Why `text` (a name people read) could show as something it is not:
/// bidirectional formatting characters, or ignorable ones outside the
/// places scripts need them ([`is_needed_joiner`]).
pub fn hidden_characters(text: &str) -> Option<&'static str> {
    if text.chars().any(is_bidi_control) {
        return Some("bidirectional formatting characters (such as U+202E) are not allowed");
    }
    let mut prev = None;
    for c in text.chars() {
        if is_default_ignorable(c) && !is_needed_joiner(prev, c) {
            return Some("invisible characters (such as U+200B, U+2064 or U+034F) are not allowed");
        }
        prev = Some(c);
    }
    None
}

/// A person name in the one form it is stored and compared in: Unicode NFC
/// (so `É` typed as one character and as `E` plus an accent is one person).
/// Callers normalise what a client sends, then [`validate_person`] it.
pub fn normalize_person(name: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    if unicode_normalization::is_nfc(name) {
        name.to_string()
    } else {
        name.nfc().collect()
    }
}

/// Checks a person name: 1 to 100 characters and at most 200 bytes, in NFC
/// ([`normalize_person`]), no `/`, `\`, control, bidirectional formatting
/// or invisible characters ([`hidden_characters`]), at least one visible
/// character, not `.` or `..`, no surrounding spaces.
pub fn validate_person(name: &str) -> Result<(), InvalidName> {
    validate_person_lookup(name)?;
    let bad = |why: &'static str| Err(InvalidName { why, name: name.chars().take(120).collect() });
    if let Some(why) = hidden_characters(name) {
        return bad(why);
    }
    if name.chars().all(is_invisible) {
        return bad("a name needs at least one visible character");
    }
    if !unicode_normalization::is_nfc(name) {
        return bad("not in Unicode NFC form (compose accents: `É`, not `E` + U+0301)");
    }
    Ok(())
}

/// The part of [`validate_person`] that a name to look up (read, delete,
/// rename from) must pass: the shape rules, without the ones added later
/// for new names (hidden characters, NFC), so that a person enrolled
/// before them can still be found and removed.
pub fn validate_person_lookup(name: &str) -> Result<(), InvalidName> {
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
        for ok in ["Paul", "Jean-Luc Picard", "Émile", "王", "می\u{200C}خواهم", "👩\u{200D}🔬", "क्\u{200D}ष", "❤\u{FE0F}", "<script>"] {
            assert!(validate_person(ok).is_ok(), "{ok}");
        }
        let spoofs = [
            "Paul\u{202E}gnp",
            "\u{2067}Paul",
            "\u{200B}",
            "\u{FEFF}\u{200B}",
            "\u{200D}",
            "Paul\u{2064}",
            "Pa\u{034F}ul",
            "Pa\u{200C}ul",
            "\u{3164}",
            "\u{2800}",
            "\u{115F}",
            "\u{E0001}",
            "E\u{0301}mile",
        ];
        for bad in ["", " Paul", "a/b", "..", ".", "a\\b", "a\nb", &"x".repeat(101), &"😀".repeat(64)].into_iter().chain(spoofs) {
            assert!(validate_person(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_enrolled_before_the_rules_can_still_be_looked_up() {
        for old in ["Paul\u{2064}", "Pa\u{200C}ul", "\u{3164}", "E\u{0301}mile"] {
            assert!(validate_person(old).is_err() && validate_person_lookup(old).is_ok(), "{old:?}");
        }
        for bad in ["", "a/b", "..", "a\nb", "Paul\u{202E}x"] {
            assert!(validate_person_lookup(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn person_names_are_stored_in_one_form() {
        assert_eq!(normalize_person("E\u{0301}mile"), "\u{00C9}mile");
        assert!(validate_person(&normalize_person("E\u{0301}mile")).is_ok());
        assert_eq!(normalize_person("Paul"), "Paul");
        assert_eq!(hidden_characters("ops key"), None);
        assert!(hidden_characters("\u{202E}evil").is_some() && hidden_characters("ops\u{200B}").is_some());
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
