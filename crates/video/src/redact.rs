//! Keeping this machine's internals out of what clients read.
//!
//! Failure texts of the video path are stored in `<prefix>-output`
//! (`<stem>.error`, `<stem>/output-NN.error`) and returned by
//! `GET /v1/videos/{stem}`. They must not carry the data directory,
//! ffmpeg's temporary folder or any other local path: the handlers log the
//! detail and store a cleaned message, and [`scrub_paths`] is applied to
//! every failure text before it is stored (and again before it is served).

/// What replaces a path.
pub const PATH_PLACEHOLDER: &str = "<path>";

/// Longest failure text stored or served, in bytes (longer ones are cut at
/// a character boundary and end in `...`).
pub const MAX_PUBLIC_TEXT: usize = 500;

/// Characters after which a path may start.
fn opens(c: char) -> bool {
    c.is_whitespace() || "'\"`([{<=,;:".contains(c)
}

/// Characters that end a path.
fn closes(c: char) -> bool {
    c.is_whitespace() || "'\"`)]}>,;".contains(c)
}

/// Length in bytes of the path starting at the beginning of `rest`, if one
/// starts there: `/x...`, `file:/...`, `./x`, `../x`, `~/x`, or a Windows
/// `C:\...`/`C:/...`. The path ends before whitespace, a quote, a closing
/// bracket, `,`, `;`, or a `:` followed by whitespace or the end.
fn path_len(rest: &str) -> Option<usize> {
    let body_start = if let Some(r) = rest.strip_prefix("file:") {
        if !r.starts_with('/') && !r.starts_with("./") && !r.starts_with("../") {
            return None;
        }
        5
    } else {
        0
    };
    let r = &rest[body_start..];
    let b = r.as_bytes();
    let starts = match b {
        [b'/', c, ..] => !(*c as char).is_whitespace(),
        [b'.', b'/', c, ..] | [b'~', b'/', c, ..] => !(*c as char).is_whitespace(),
        [b'.', b'.', b'/', c, ..] => !(*c as char).is_whitespace(),
        [d, b':', b'\\' | b'/', c, ..] => d.is_ascii_alphabetic() && !(*c as char).is_whitespace(),
        _ => false,
    };
    if !starts {
        return None;
    }
    let mut end = r.len();
    let mut chars = r.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if closes(c) {
            end = i;
            break;
        }
        if c == ':' && chars.peek().is_none_or(|&(_, n)| n.is_whitespace()) {
            end = i;
            break;
        }
    }
    Some(body_start + end)
}

/// Replaces every local path in `text` (absolute, `file:`-prefixed, `./`,
/// `../`, `~/` or a Windows drive path) with [`PATH_PLACEHOLDER`], and
/// caps the text at [`MAX_PUBLIC_TEXT`] bytes. Ratios and fractions
/// (`1/10`, `and/or`) are not paths: a path starts at the beginning of the
/// text or after whitespace, a quote, a bracket, `=`, `,`, `;` or `:`.
pub fn scrub_paths(text: &str) -> String {
    cap(replace_paths(text))
}

fn replace_paths(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut prev: Option<char> = None;
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        if prev.is_none_or(opens) {
            if let Some(n) = path_len(rest) {
                out.push_str(PATH_PLACEHOLDER);
                i += n;
                prev = Some('>');
                continue;
            }
        }
        let c = rest.chars().next().expect("not at the end");
        out.push(c);
        prev = Some(c);
        i += c.len_utf8();
    }
    out
}

fn cap(mut s: String) -> String {
    if s.len() > MAX_PUBLIC_TEXT {
        let mut end = MAX_PUBLIC_TEXT - 3;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

/// True when `text` holds something [`scrub_paths`] would replace.
pub fn has_path(text: &str) -> bool {
    replace_paths(text) != text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_replaced() {
        let cases = [
            (
                "file:/tmp/facefleet-split-AbC/input: Invalid data found when processing input",
                "<path>: Invalid data found when processing input",
            ),
            ("cannot write /home/u/data/buckets/x/a.mp4.part (No space)", "cannot write <path> (No space)"),
            ("io error at '/var/tmp/x y': denied", "io error at '<path> y': denied"),
            ("path=/srv/data, retry", "path=<path>, retry"),
            ("see ./data/buckets/in and ../x/y", "see <path> and <path>"),
            ("C:\\Users\\me\\a.mp4 is locked", "<path> is locked"),
            ("http://127.0.0.1:4566/bucket failed", "http:<path> failed"),
            ("/abs", "<path>"),
        ];
        for (text, want) in cases {
            assert_eq!(scrub_paths(text), want, "{text}");
            assert!(has_path(text), "{text}");
        }
    }

    #[test]
    fn ordinary_text_is_kept() {
        for text in [
            "not a usable video: ffmpeg could not decode it (Invalid data found when processing input)",
            "video too large: 5000 bytes, the limit is 1000 bytes",
            "fps=1/10 and/or 3/4 frames; a / b",
            "frame 3 unusable: not a JPEG",
            "",
        ] {
            assert_eq!(scrub_paths(text), text);
            assert!(!has_path(text), "{text}");
        }
    }

    #[test]
    fn long_text_is_capped() {
        let s = scrub_paths(&"é".repeat(1000));
        assert!(s.len() <= MAX_PUBLIC_TEXT && s.ends_with("..."));
    }
}
