//! Bad and awkward input: every case is generated here and must end in a
//! clear error or a sensible answer, never a panic or a blown memory budget.
//! The 20-face case tiles lfw-dev photos (needs the shared data folder).

use std::io::Cursor;
use std::sync::OnceLock;

use facefleet_model::eval::dataset_dir;
use facefleet_model::image::{self, DynamicImage, ImageFormat, Rgb, RgbImage};
use facefleet_model::{
    decode_image, Answer, DecodeLimits, FaceModel, Gallery, ModelConfig, ModelError, RecognizerKind,
};

fn model() -> &'static FaceModel {
    static MODEL: OnceLock<FaceModel> = OnceLock::new();
    MODEL.get_or_init(|| FaceModel::load(&ModelConfig::default()).expect("model loads"))
}

fn encode(img: &RgbImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img.clone()).write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn lfw_photo(person: &str, n: u32) -> Vec<u8> {
    let dir = dataset_dir("lfw-dev").expect("lfw-dev data set is required");
    std::fs::read(dir.join(person).join(format!("{person}_{n:04}.jpg"))).unwrap()
}

fn limits() -> DecodeLimits {
    DecodeLimits::default()
}

#[test]
fn empty_bytes() {
    let err = decode_image(&[], &limits()).unwrap_err();
    assert!(matches!(err, ModelError::EmptyImage));
    assert!(err.is_bad_input());
    assert_eq!(err.to_string(), "empty image: 0 bytes");
}

#[test]
fn text_is_not_an_image() {
    let err = decode_image(b"name,image\nPaul,test_00.jpg\n", &limits()).unwrap_err();
    assert!(matches!(err, ModelError::UnsupportedFormat(_)), "{err}");
    assert!(err.to_string().contains("not an image"), "{err}");
}

#[test]
fn truncated_jpeg_is_refused_at_every_cut() {
    let jpeg = lfw_photo("Tom_Cruise", 1);
    assert!(decode_image(&jpeg, &limits()).is_ok());
    // From the first 4 bytes on the format is recognisable as JPEG.
    for cut in (4..jpeg.len() - 1).step_by(jpeg.len() / 40) {
        let err = decode_image(&jpeg[..cut], &limits())
            .expect_err(&format!("a JPEG cut at {cut} of {} bytes must be refused", jpeg.len()));
        assert!(err.is_bad_input(), "cut {cut}: {err}");
        assert!(
            matches!(err, ModelError::CorruptImage { .. }),
            "cut {cut}: {err}"
        );
    }
    let err = decode_image(&jpeg[..jpeg.len() / 2], &limits()).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn one_pixel_image_has_no_face() {
    let img = decode_image(&encode(&RgbImage::from_pixel(1, 1, Rgb([200, 150, 120])), ImageFormat::Png), &limits())
        .unwrap();
    assert_eq!(img.dimensions(), (1, 1));
    let gallery = Gallery::new(model().recognizer_kind());
    let found = model().recognize(&img, &gallery).unwrap();
    assert_eq!(Answer::from_faces(&found), Answer::NoFace);
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
}

/// A PNG whose header announces `w` x `h` RGB8 pixels (with a tiny IDAT).
fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png_chunk(&mut png, b"IHDR", &ihdr);
    png_chunk(&mut png, b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    png_chunk(&mut png, b"IEND", &[]);
    png
}

#[test]
fn gigantic_png_header_is_refused_before_decoding() {
    let png = png_header_only(30_000, 30_000);
    assert!(png.len() < 100);
    let err = decode_image(&png, &limits()).unwrap_err();
    assert!(matches!(err, ModelError::TooManyPixels { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("30000x30000") && msg.contains("900000000") && msg.contains("40000000"), "{msg}");
    // A long thin strip is refused by the side limit.
    let err = decode_image(&png_header_only(100_000, 10), &limits()).unwrap_err();
    assert!(matches!(err, ModelError::SideTooLong { .. }), "{err}");
    // Within limits, the same lie about the size is a corrupt image.
    let err = decode_image(&png_header_only(3000, 3000), &limits()).unwrap_err();
    assert!(matches!(err, ModelError::CorruptImage { .. }), "{err}");
    // Too many bytes is refused before looking inside.
    let big = vec![0u8; limits().max_bytes + 1];
    assert!(matches!(decode_image(&big, &limits()), Err(ModelError::TooManyBytes { .. })));
}

/// Inserts an APP1 segment with `payload` after the SOI marker.
fn with_app1(jpeg: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[test]
fn huge_or_bogus_exif_is_ignored() {
    let jpeg = lfw_photo("Tom_Cruise", 1);
    // Largest possible APP1 segment: TIFF header pointing at an IFD claiming
    // 65535 entries with far-away offsets, then garbage.
    let mut exif = b"Exif\0\0II*\0\x08\0\0\0\xff\xff".to_vec();
    exif.extend((0..65533 - exif.len()).map(|i| (i * 7 % 251) as u8));
    for bytes in [
        with_app1(&jpeg, &exif),
        with_app1(&with_app1(&jpeg, &exif), &exif),
        with_app1(&jpeg, b"Exif\0\0MM\0*\xff\xff\xff\xf0"),
        with_app1(&jpeg, b"Exif\0\0"),
    ] {
        let img = decode_image(&bytes, &limits()).expect("a bad EXIF block does not spoil the photo");
        assert_eq!(img.dimensions(), (250, 250));
    }
    // PNG with an 8 MiB eXIf chunk.
    let small = RgbImage::from_pixel(16, 16, Rgb([1, 2, 3]));
    let png = encode(&small, ImageFormat::Png);
    let mut big = png[..33].to_vec(); // signature + IHDR
    let mut chunk = b"II*\0\x08\0\0\0\xff\xff".to_vec();
    chunk.resize(8 << 20, 0xAB);
    png_chunk(&mut big, b"eXIf", &chunk);
    big.extend_from_slice(&png[33..]);
    let img = decode_image(&big, &limits()).expect("huge eXIf is ignored");
    assert_eq!(img.dimensions(), (16, 16));
}

#[test]
fn photo_without_a_face_is_noface() {
    let mut seed = 12345u32;
    let noise = RgbImage::from_fn(320, 240, |x, y| {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let n = (seed >> 24) as u8 / 4;
        Rgb([(x * 255 / 320) as u8 / 2 + n, (y * 255 / 240) as u8 / 2 + n, 90 + n])
    });
    let img = decode_image(&encode(&noise, ImageFormat::Jpeg), &limits()).unwrap();
    let gallery = Gallery::new(model().recognizer_kind());
    let found = model().recognize(&img, &gallery).unwrap();
    assert_eq!(Answer::from_faces(&found), Answer::NoFace, "{found:?}");
    assert_eq!(Answer::from_faces(&found).to_string(), "NoFace");
}

#[test]
fn twenty_faces_in_one_photo() {
    let dir = dataset_dir("lfw-dev").expect("lfw-dev data set is required");
    let mut people: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    people.sort();
    people.truncate(20);
    // 5 x 4 grid of the central 150x150 of each person's second photo.
    let (cols, cell) = (5u32, 150u32);
    let mut grid = RgbImage::new(cols * cell, 4 * cell);
    let mut gallery = Gallery::new(model().recognizer_kind());
    for (i, person) in people.iter().enumerate() {
        let enrol = decode_image(&lfw_photo(person, 1), &limits()).unwrap();
        let face = model().detect(&enrol).unwrap()[0];
        gallery.enroll(person, vec![model().embed(&enrol, &face).unwrap()]).unwrap();

        let photo = decode_image(&lfw_photo(person, 2), &limits()).unwrap();
        let crop = image::imageops::crop_imm(&photo, 50, 50, cell, cell).to_image();
        let (cx, cy) = (i as u32 % cols * cell, i as u32 / cols * cell);
        image::imageops::replace(&mut grid, &crop, i64::from(cx), i64::from(cy));
    }
    let img = decode_image(&encode(&grid, ImageFormat::Jpeg), &limits()).unwrap();
    let found = model().recognize(&img, &gallery).unwrap();
    assert!((18..=22).contains(&found.len()), "found {} faces", found.len());
    let areas: Vec<f32> = found.iter().map(|f| f.face.bbox.area()).collect();
    assert!(areas.windows(2).all(|w| w[0] >= w[1] - 1e-3), "largest first: {areas:?}");
    let mut correct = 0;
    for f in &found {
        let (x, y) = ((f.face.bbox.x1 + f.face.bbox.x2) / 2.0, (f.face.bbox.y1 + f.face.bbox.y2) / 2.0);
        let cell_index = (y as u32 / cell) * cols + x as u32 / cell;
        if f.name.as_deref() == people.get(cell_index as usize).map(String::as_str) {
            correct += 1;
        }
    }
    assert!(correct >= 17, "only {correct} of {} faces named correctly", found.len());
}

#[test]
fn gallery_of_another_recognizer_is_refused() {
    let img = decode_image(&lfw_photo("Tom_Cruise", 1), &limits()).unwrap();
    let gallery = Gallery::new(RecognizerKind::DlibResnet);
    let err = model().recognize(&img, &gallery).unwrap_err();
    assert!(matches!(err, ModelError::RecognizerMismatch { .. }));
    assert_eq!(
        err.to_string(),
        "recognizer mismatch: the gallery says dlib-resnet, the model is mobilefacenet"
    );
}

#[test]
fn missing_weights_dir_files_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let err = FaceModel::load(&ModelConfig::default().with_weights_dir(dir.path())).unwrap_err();
    assert!(matches!(err, ModelError::WeightsMissing { .. }), "{err}");
    assert!(err.to_string().contains("mtcnn.safetensors"), "{err}");
}
