//! Checks on uploaded files, done in the web tier so that bad input is
//! refused with a 4xx before it reaches the bucket, the queue or a worker.

use std::io::Cursor;

use image::{ImageFormat, ImageReader, Limits};

/// Limits applied to uploaded images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Largest accepted width or height, in pixels.
    pub max_side: u32,
    /// Largest accepted width × height.
    pub max_pixels: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self { max_side: 8192, max_pixels: 40_000_000 }
    }
}

/// Why an upload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadError {
    /// Zero bytes.
    #[error("the uploaded file is empty")]
    Empty,
    /// Not a supported image format.
    #[error("the uploaded file is not an image (supported: JPEG, PNG, WebP, BMP)")]
    NotAnImage,
    /// Larger than the limits (decompression bomb protection).
    #[error("image of {width}x{height} pixels exceeds the limit ({max_side} px per side, {max_pixels} pixels)")]
    TooLarge {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// Limit per side.
        max_side: u32,
        /// Limit of width × height.
        max_pixels: u64,
    },
    /// Header is valid but the pixels do not decode (truncated, corrupt).
    #[error("the image is corrupt or truncated: {0}")]
    Corrupt(String),
}

/// Checks that `bytes` looks like an image within `limits`, from its header
/// only: the format is sniffed from the content (never the file name) and
/// the dimensions are read from the header, so no pixel buffer is ever
/// allocated here. A file whose pixels turn out corrupt is answered by the
/// worker that decodes it, with the same 422 as a corrupt header here. Returns the format and dimensions.
pub fn check_image(bytes: &[u8], limits: &ImageLimits) -> Result<(ImageFormat, u32, u32), UploadError> {
    if bytes.is_empty() {
        return Err(UploadError::Empty);
    }
    let format = image::guess_format(bytes).map_err(|_| UploadError::NotAnImage)?;
    if !matches!(format, ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP | ImageFormat::Bmp) {
        return Err(UploadError::NotAnImage);
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut l = Limits::default();
    l.max_alloc = Some(1 << 20);
    reader.limits(l);
    let (width, height) = reader.into_dimensions().map_err(|e| UploadError::Corrupt(e.to_string()))?;
    if width == 0 || height == 0 {
        return Err(UploadError::Corrupt(format!("image has zero size ({width}x{height})")));
    }
    if width > limits.max_side || height > limits.max_side || u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(UploadError::TooLarge { width, height, max_side: limits.max_side, max_pixels: limits.max_pixels });
    }
    Ok((format, width, height))
}

/// The input-bucket key of one request: `<request id>/<clean file name>`.
/// The request id makes it unique, so concurrent uploads of the same file
/// name never overwrite each other; the file name stays the last segment,
/// so the result's key in the output bucket (its stem) and the course's
/// `<stem>:<name>` answer are unchanged.
pub fn request_key(request_id: &str, file_name: Option<&str>) -> String {
    format!("{request_id}/{}", sanitize_file_name(file_name.unwrap_or("upload")))
}

/// Turns a client-supplied file name into a safe object key: only its last
/// path component is kept (so `../../etc/x.jpg` and `a/b.jpg` cannot escape
/// or create folders), control characters and backslashes are dropped,
/// unicode is kept, and an empty, `.` or `..` result becomes `upload`. A
/// stem of dots only (`...jpg`, whose stem `..` would name the result
/// object) becomes `upload` too, keeping the extension. The key is at most
/// 200 bytes long (the extension is kept).
pub fn sanitize_file_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let mut clean: String = base.chars().filter(|c| !c.is_control()).collect();
    clean = clean.trim().to_string();
    if clean.is_empty() || clean.chars().all(|c| c == '.') {
        return "upload".to_string();
    }
    let stem = crate::protocol::stem(&clean);
    if stem.chars().all(|c| c == '.') {
        clean = format!("upload{}", &clean[stem.len()..]);
    }
    const MAX: usize = 200;
    if clean.len() > MAX {
        let ext = match clean.rfind('.') {
            Some(i) if clean.len() - i <= 10 => clean[i..].to_string(),
            _ => String::new(),
        };
        let mut cut = MAX - ext.len();
        while !clean.is_char_boundary(cut) {
            cut -= 1;
        }
        clean = format!("{}{}", &clean[..cut], ext);
    }
    clean
}

#[cfg(test)]
mod tests {
    use super::*;
    use facefleet_ports::validate_key;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::new(w, h);
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png).unwrap();
        out
    }

    #[test]
    fn accepts_small_images() {
        assert_eq!(check_image(&png(64, 48), &ImageLimits::default()).unwrap(), (ImageFormat::Png, 64, 48));
    }

    #[test]
    fn refuses_bad_input() {
        let l = ImageLimits::default();
        assert_eq!(check_image(b"", &l), Err(UploadError::Empty));
        assert_eq!(check_image(b"hello, I am text", &l), Err(UploadError::NotAnImage));
        let p = png(64, 64);
        assert!(matches!(check_image(&p[..10], &l), Err(UploadError::Corrupt(_)) | Err(UploadError::NotAnImage)));
        let small = ImageLimits { max_side: 32, max_pixels: 1000 };
        assert!(matches!(check_image(&p, &small), Err(UploadError::TooLarge { .. })));
    }

    #[test]
    fn file_names() {
        for (input, want) in [
            ("test_00.jpg", "test_00.jpg"),
            ("../../etc/passwd.jpg", "passwd.jpg"),
            ("a/b/c.png", "c.png"),
            ("C:\\x\\y.jpg", "y.jpg"),
            ("été 2024.jpg", "été 2024.jpg"),
            ("..", "upload"),
            ("", "upload"),
            ("dir/", "upload"),
            ("a\u{0}b.jpg", "ab.jpg"),
            ("...jpg", "upload.jpg"),
            ("..jpg", "upload.jpg"),
            ("a/...jpg", "upload.jpg"),
            ("....tar.gz", "....tar.gz"),
            (".hidden", ".hidden"),
        ] {
            let got = sanitize_file_name(input);
            assert_eq!(got, want, "{input:?}");
            assert!(validate_key(&got).is_ok());
            // The result object is named by the stem: it must be a valid key too.
            assert!(validate_key(crate::protocol::stem(&got)).is_ok(), "{input:?} -> {got:?}");
        }
        let long = format!("{}.jpg", "é".repeat(300));
        let got = sanitize_file_name(&long);
        assert!(got.len() <= 200 && got.ends_with(".jpg"));
    }
}
