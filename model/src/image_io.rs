//! Decoding untrusted image bytes into RGB8, safely.
//!
//! [`decode_image`] accepts JPEG, PNG, WebP and BMP; honours the EXIF
//! orientation; converts grayscale, CMYK, 16-bit and alpha images to RGB8
//! (alpha is composited over white); and refuses oversized images from their
//! header, before any pixel buffer is allocated.

use std::io::Cursor;

use image::{
    metadata::Orientation, DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader,
    Limits, RgbImage,
};

use crate::error::{ModelError, Result};

/// EXIF blocks larger than this are ignored (no real camera writes one; a
/// JPEG APP1 segment cannot exceed 64 KiB anyway).
const MAX_EXIF_BYTES: usize = 1 << 20;

/// Size limits applied by [`decode_image`] before decoding pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest encoded image accepted, in bytes (default 20 MiB).
    pub max_bytes: usize,
    /// Largest width x height accepted (default 40 million pixels).
    pub max_pixels: u64,
    /// Longest side accepted, in pixels (default 16384).
    pub max_side: u32,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_bytes: 20 * 1024 * 1024,
            max_pixels: 40_000_000,
            max_side: 16_384,
        }
    }
}

/// Decodes an encoded image into RGB8.
///
/// * Formats: JPEG (baseline, progressive, grayscale, CMYK), PNG (any bit
///   depth, palette, alpha), WebP (lossy and lossless), BMP.
/// * The EXIF orientation tag (JPEG, PNG `eXIf`, WebP) is applied, so the
///   returned image is upright as a viewer would show it. A missing, huge or
///   corrupt EXIF block is ignored.
/// * `limits` are checked against the byte length and the header's
///   dimensions before the pixel buffer is allocated.
///
/// Errors are [`ModelError::is_bad_input`] errors with a message fit for the
/// client (empty, unsupported format, corrupt/truncated, too large).
pub fn decode_image(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage> {
    if bytes.is_empty() {
        return Err(ModelError::EmptyImage);
    }
    if bytes.len() > limits.max_bytes {
        return Err(ModelError::TooManyBytes {
            bytes: bytes.len(),
            limit: limits.max_bytes,
        });
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ModelError::UnsupportedFormat(e.to_string()))?;
    let format = match reader.format() {
        Some(f @ (ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP | ImageFormat::Bmp)) => f,
        Some(other) => {
            return Err(ModelError::UnsupportedFormat(format!(
                "{} image",
                format_name(other)
            )))
        }
        None => return Err(ModelError::UnsupportedFormat(describe_unknown(bytes))),
    };
    // Header only: our own checks below give better messages than image's limits.
    reader.no_limits();
    let corrupt = |e: ImageError| map_decode_error(format, e);
    let mut decoder = reader.into_decoder().map_err(corrupt)?;

    let (width, height) = decoder.dimensions();
    check_dimensions(width, height, limits)?;
    if format == ImageFormat::Jpeg && !jpeg_has_end_marker(bytes) {
        return Err(ModelError::CorruptImage {
            format: format_name(format).into(),
            detail: "truncated: no end-of-image marker".into(),
        });
    }

    let orientation = exif_orientation(&mut decoder);

    let mut decode_limits = Limits::default();
    decode_limits.max_image_width = Some(limits.max_side);
    decode_limits.max_image_height = Some(limits.max_side);
    // The decoded buffer (at most 8 bytes per pixel: RGBA16) plus decoder state.
    decode_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8).saturating_add(64 << 20));
    decoder.set_limits(decode_limits).map_err(corrupt)?;

    let mut img = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    Ok(to_rgb8(img))
}

fn check_dimensions(width: u32, height: u32, limits: &DecodeLimits) -> Result<()> {
    if width == 0 || height == 0 {
        return Err(ModelError::ZeroSized { width, height });
    }
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(ModelError::TooManyPixels {
            width,
            height,
            pixels,
            limit: limits.max_pixels,
        });
    }
    if width.max(height) > limits.max_side {
        return Err(ModelError::SideTooLong {
            width,
            height,
            limit: limits.max_side,
        });
    }
    Ok(())
}

/// The decoder used fills missing scan data with grey instead of failing, so
/// a cut-off upload would silently become a half-grey photo: require the EOI
/// marker (FF D9) after the last start-of-scan marker (FF DA). Entropy-coded
/// data never contains either (0xFF is byte-stuffed), and an embedded EXIF
/// thumbnail comes before the main image's scans.
fn jpeg_has_end_marker(bytes: &[u8]) -> bool {
    let last_sos = bytes
        .windows(2)
        .rposition(|w| w == [0xFF, 0xDA])
        .unwrap_or(0);
    bytes[last_sos..].windows(2).any(|w| w == [0xFF, 0xD9])
}

/// Reads the orientation from the decoder's EXIF block with kamadak-exif.
/// Anything unexpected (no EXIF, oversized, corrupt, odd value) means "as is".
fn exif_orientation(decoder: &mut impl ImageDecoder) -> Option<Orientation> {
    let raw = match decoder.exif_metadata() {
        Ok(Some(raw)) => raw,
        Ok(None) => return None,
        Err(e) => {
            tracing::debug!("ignoring unreadable EXIF: {e}");
            return None;
        }
    };
    if raw.len() > MAX_EXIF_BYTES {
        tracing::debug!("ignoring oversized EXIF block ({} bytes)", raw.len());
        return None;
    }
    let exif = match exif::Reader::new().read_raw(raw) {
        Ok(exif) => exif,
        Err(e) => {
            tracing::debug!("ignoring corrupt EXIF: {e}");
            return None;
        }
    };
    let value = exif
        .get_field(exif::Tag::Orientation, exif::In::PRIMARY)?
        .value
        .get_uint(0)?;
    u8::try_from(value).ok().and_then(Orientation::from_exif)
}

/// RGB8, compositing any alpha channel over white (transparent regions of
/// stickers and cut-outs usually hold black, which would confuse the detector).
fn to_rgb8(img: DynamicImage) -> RgbImage {
    if !img.color().has_alpha() {
        return img.into_rgb8();
    }
    let rgba = img.into_rgba8();
    let (w, h) = rgba.dimensions();
    let mut out = RgbImage::new(w, h);
    for (dst, src) in out.pixels_mut().zip(rgba.pixels()) {
        let a = u32::from(src.0[3]);
        for c in 0..3 {
            let v = u32::from(src.0[c]) * a + 255 * (255 - a);
            dst.0[c] = ((v + 127) / 255) as u8;
        }
    }
    out
}

fn map_decode_error(format: ImageFormat, e: ImageError) -> ModelError {
    let format = format_name(format).to_string();
    match e {
        ImageError::Limits(l) => ModelError::CorruptImage {
            format,
            detail: format!("decoder limit exceeded: {l}"),
        },
        ImageError::Unsupported(u) => ModelError::UnsupportedFormat(u.to_string()),
        ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            ModelError::CorruptImage {
                format,
                detail: "truncated: unexpected end of data".into(),
            }
        }
        other => ModelError::CorruptImage {
            format,
            detail: other.to_string(),
        },
    }
}

fn format_name(f: ImageFormat) -> &'static str {
    match f {
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Png => "PNG",
        ImageFormat::WebP => "WebP",
        ImageFormat::Bmp => "BMP",
        ImageFormat::Gif => "GIF",
        ImageFormat::Tiff => "TIFF",
        ImageFormat::Avif => "AVIF",
        ImageFormat::Ico => "ICO",
        ImageFormat::Hdr => "HDR",
        ImageFormat::OpenExr => "OpenEXR",
        ImageFormat::Qoi => "QOI",
        ImageFormat::Pnm => "PNM",
        ImageFormat::Tga => "TGA",
        ImageFormat::Dds => "DDS",
        ImageFormat::Farbfeld => "Farbfeld",
        _ => "unknown",
    }
}

/// A short description of bytes that are not a known image format.
fn describe_unknown(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(8)];
    let text = head
        .iter()
        .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace());
    if text {
        format!(
            "not an image ({} bytes starting with text {:?})",
            bytes.len(),
            String::from_utf8_lossy(head)
        )
    } else {
        let hex: Vec<String> = head.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "not an image ({} bytes starting with {})",
            bytes.len(),
            hex.join(" ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Luma, Rgb, Rgba};

    fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    fn sample_rgb(w: u32, h: u32) -> RgbImage {
        ImageBuffer::from_fn(w, h, |x, y| Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 77]))
    }

    #[test]
    fn decodes_all_supported_formats() {
        let img = DynamicImage::ImageRgb8(sample_rgb(40, 30));
        for f in [ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::Bmp, ImageFormat::WebP] {
            let bytes = encode(&img, f);
            let out = decode_image(&bytes, &DecodeLimits::default())
                .unwrap_or_else(|e| panic!("{f:?}: {e}"));
            assert_eq!(out.dimensions(), (40, 30), "{f:?}");
        }
    }

    #[test]
    fn grayscale_and_16_bit_become_rgb() {
        let gray: ImageBuffer<Luma<u8>, _> = ImageBuffer::from_fn(8, 8, |x, _| Luma([x as u8 * 30]));
        let out = decode_image(
            &encode(&DynamicImage::ImageLuma8(gray), ImageFormat::Png),
            &DecodeLimits::default(),
        )
        .unwrap();
        assert_eq!(out.get_pixel(3, 0).0, [90, 90, 90]);

        let deep: ImageBuffer<Rgb<u16>, _> = ImageBuffer::from_pixel(4, 4, Rgb([65535, 0, 32896]));
        let out = decode_image(
            &encode(&DynamicImage::ImageRgb16(deep), ImageFormat::Png),
            &DecodeLimits::default(),
        )
        .unwrap();
        assert_eq!(out.get_pixel(0, 0).0, [255, 0, 128]);
    }

    #[test]
    fn alpha_is_composited_over_white() {
        let mut rgba: ImageBuffer<Rgba<u8>, _> = ImageBuffer::from_pixel(2, 1, Rgba([0, 0, 0, 0]));
        rgba.put_pixel(1, 0, Rgba([10, 20, 30, 255]));
        let out = decode_image(
            &encode(&DynamicImage::ImageRgba8(rgba), ImageFormat::Png),
            &DecodeLimits::default(),
        )
        .unwrap();
        assert_eq!(out.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(out.get_pixel(1, 0).0, [10, 20, 30]);
    }

    #[test]
    fn limits_are_enforced_with_numbers() {
        let bytes = encode(&DynamicImage::ImageRgb8(sample_rgb(100, 50)), ImageFormat::Png);
        let small = DecodeLimits {
            max_pixels: 4999,
            ..DecodeLimits::default()
        };
        let err = decode_image(&bytes, &small).unwrap_err();
        assert!(matches!(err, ModelError::TooManyPixels { pixels: 5000, .. }), "{err}");
        assert!(err.to_string().contains("100x50"), "{err}");

        let narrow = DecodeLimits {
            max_side: 99,
            ..DecodeLimits::default()
        };
        assert!(matches!(
            decode_image(&bytes, &narrow),
            Err(ModelError::SideTooLong { limit: 99, .. })
        ));

        let tiny = DecodeLimits {
            max_bytes: 10,
            ..DecodeLimits::default()
        };
        let err = decode_image(&bytes, &tiny).unwrap_err();
        assert!(err.to_string().contains("limit 10 bytes"), "{err}");
    }

    #[test]
    fn unknown_formats_are_described() {
        let err = decode_image(b"hello world", &DecodeLimits::default()).unwrap_err();
        assert!(matches!(err, ModelError::UnsupportedFormat(_)));
        assert!(err.to_string().contains("hello wo"), "{err}");
        let gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;";
        let err = decode_image(gif, &DecodeLimits::default()).unwrap_err();
        assert!(err.to_string().contains("GIF"), "{err}");
        assert!(err.is_bad_input());
    }

    /// Builds a JPEG with an APP1 EXIF segment holding only an orientation tag.
    fn jpeg_with_orientation(img: &RgbImage, orientation: u16) -> Vec<u8> {
        let jpeg = encode(&DynamicImage::ImageRgb8(img.clone()), ImageFormat::Jpeg);
        // TIFF header (little endian), IFD0 at 8 with one entry: tag 0x0112 SHORT 1 value.
        let mut tiff = vec![b'I', b'I', 42, 0, 8, 0, 0, 0, 1, 0];
        tiff.extend_from_slice(&0x0112u16.to_le_bytes());
        tiff.extend_from_slice(&3u16.to_le_bytes());
        tiff.extend_from_slice(&1u32.to_le_bytes());
        tiff.extend_from_slice(&orientation.to_le_bytes());
        tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&tiff);
        let len = (app1.len() + 2) as u16;
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&app1);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    #[test]
    fn exif_orientation_is_applied() {
        // 40 wide, 20 high, left half dark, right half bright.
        let img: RgbImage =
            ImageBuffer::from_fn(40, 20, |x, _| if x < 20 { Rgb([0, 0, 0]) } else { Rgb([255; 3]) });
        let upright = decode_image(&jpeg_with_orientation(&img, 1), &DecodeLimits::default()).unwrap();
        assert_eq!(upright.dimensions(), (40, 20));
        // 6 = rotate 90 clockwise to view: the left (dark) half goes to the top.
        let rotated = decode_image(&jpeg_with_orientation(&img, 6), &DecodeLimits::default()).unwrap();
        assert_eq!(rotated.dimensions(), (20, 40));
        assert!(rotated.get_pixel(10, 5).0[0] < 50);
        assert!(rotated.get_pixel(10, 35).0[0] > 200);
        // 3 = rotate 180: dark half goes right.
        let flipped = decode_image(&jpeg_with_orientation(&img, 3), &DecodeLimits::default()).unwrap();
        assert!(flipped.get_pixel(35, 10).0[0] < 50);
        // Nonsense orientation values are ignored.
        let odd = decode_image(&jpeg_with_orientation(&img, 77), &DecodeLimits::default()).unwrap();
        assert_eq!(odd.dimensions(), (40, 20));
    }
}
