//! Recognising a video container from its first bytes, so that an upload
//! that is not a video is refused before anything is kept.

/// How many leading bytes [`sniff`] looks at (fewer when the file is
/// shorter).
pub const SNIFF_BYTES: usize = 16;

/// A container format accepted for upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// ISO base media: MP4, MOV, 3GP, M4V (an `ftyp` box first).
    IsoMedia,
    /// A QuickTime file without `ftyp`, starting with a `wide`, `free`,
    /// `skip`, `mdat` or `moov` atom.
    QuickTime,
    /// Matroska or WebM (EBML magic `1A 45 DF A3`).
    Matroska,
    /// AVI (`RIFF` size `AVI `).
    Avi,
}

impl Container {
    /// A short name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Container::IsoMedia => "mp4",
            Container::QuickTime => "quicktime",
            Container::Matroska => "matroska",
            Container::Avi => "avi",
        }
    }
}

/// The accepted formats, for messages.
pub const ACCEPTED: &str = "MP4/MOV/3GP, Matroska/WebM or AVI";

/// Atoms a QuickTime file may start with instead of `ftyp`.
const LEADING_ATOMS: [&[u8; 4]; 5] = [b"wide", b"free", b"skip", b"mdat", b"moov"];

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// A top-level atom type: four ASCII letters, digits or spaces.
fn atom_type(b: &[u8]) -> bool {
    b.len() == 4 && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b' ')
}

/// The container of a file whose first bytes are `head` (pass the first
/// [`SNIFF_BYTES`] bytes, or the whole file when shorter), or `None` when
/// it is none of the accepted formats.
pub fn sniff(head: &[u8]) -> Option<Container> {
    if head.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        return Some(Container::Matroska);
    }
    if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"AVI " {
        return Some(Container::Avi);
    }
    if head.len() < 8 {
        return None;
    }
    let size = be32(&head[..4]);
    let kind = &head[4..8];
    if kind == b"ftyp" {
        // An ftyp box holds at least its header and the major brand.
        return (size >= 12 && head.len() >= 12 && atom_type(&head[8..12])).then_some(Container::IsoMedia);
    }
    if !LEADING_ATOMS.iter().any(|a| kind == *a) || head.len() <= 8 {
        // Not a leading atom, or nothing follows its header.
        return None;
    }
    let plausible = match size {
        // `mdat` up to the end of the file.
        0 => kind == b"mdat",
        // A 64-bit size follows the header.
        1 => head.len() >= 16 && u64::from_be_bytes(head[8..16].try_into().expect("8 bytes")) >= 16,
        2..=7 => false,
        // An empty atom (`wide`) must be followed by another atom.
        8 => head.len() >= 16 && atom_type(&head[12..16]),
        _ => true,
    };
    plausible.then_some(Container::QuickTime)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn atom(size: u32, kind: &[u8; 4], rest: &[u8]) -> Vec<u8> {
        let mut v = size.to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(rest);
        v
    }

    #[test]
    fn recognises_the_accepted_containers() {
        assert_eq!(sniff(&atom(0x18, b"ftyp", b"isom\0\0\x02\0")), Some(Container::IsoMedia));
        assert_eq!(sniff(&atom(0x14, b"ftyp", b"qt  ")), Some(Container::IsoMedia));
        assert_eq!(sniff(&atom(0x1c, b"ftyp", b"3gp4")), Some(Container::IsoMedia));
        // QuickTime without ftyp: `wide` then `mdat`; `moov` first; `mdat` to the end.
        assert_eq!(sniff(&[atom(8, b"wide", b""), atom(0x1000, b"mdat", b"")].concat()), Some(Container::QuickTime));
        assert_eq!(sniff(&atom(0x2000, b"moov", b"\0\0\0\x6cmvhd")), Some(Container::QuickTime));
        assert_eq!(sniff(&atom(0, b"mdat", b"\x01\x02\x03\x04")), Some(Container::QuickTime));
        // WebM and Matroska share the EBML magic.
        let webm = [0x1A, 0x45, 0xDF, 0xA3, 0x9F, 0x42, 0x86, 0x81, 0x01, 0x42, 0xF7, 0x81, 0x01, 0x42, 0x82, 0x84];
        assert_eq!(sniff(&webm), Some(Container::Matroska));
        assert_eq!(sniff(b"RIFF\x24\x10\0\0AVI LIST"), Some(Container::Avi));
    }

    #[test]
    fn refuses_everything_else() {
        let refused: [&[u8]; 14] = [
            b"",
            b"\0\0\0",
            b"just some text, not a video",
            b"\xFF\xD8\xFF\xE0\0\x10JFIF\0",       // JPEG
            b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR",      // PNG
            b"RIFF\x24\x10\0\0WAVEfmt ",           // WAV, not AVI
            b"PK\x03\x04\x14\0\0\0\x08\0",         // zip
            b"%PDF-1.7\n%\xE2\xE3\xCF\xD3",
            b"\0\0\0\x08wide",                     // a leading atom and nothing after it
            b"\0\0\0\x08wide\x01\x02\x03\x04",     // not followed by an atom
            b"\0\0\0\x05free\x01\x02\x03\x04",     // impossible size
            b"\0\0\0\0moov\x01\x02\x03\x04",       // only mdat may run to the end
            b"\0\0\0\x04ftypisom",                 // ftyp smaller than its header
            b"\x1A\x45\xDF",                       // EBML magic cut short
        ];
        for head in refused {
            assert_eq!(sniff(head), None, "{head:?}");
        }
    }

    #[test]
    fn random_bytes_are_refused() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..10_000 {
            let mut head = [0u8; SNIFF_BYTES];
            for b in &mut head {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            assert_eq!(sniff(&head), None, "{head:?}");
        }
    }
}
