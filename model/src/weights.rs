//! Network weights: embedded in the binary, or read from a folder.
//!
//! Every `model/weights/*.safetensors` file is compiled into the crate with
//! `include_bytes!`, so a `facefleet` binary needs no files next to it. Set
//! [`crate::ModelConfig::weights_dir`] (or the `FACEFLEET_WEIGHTS_DIR`
//! environment variable, read by [`crate::ModelConfig::from_env`]) to load
//! same-named files from a folder instead, e.g. to try retrained weights.

use std::borrow::Cow;
use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use crate::error::{ModelError, Result};
use crate::RecognizerKind;

/// File name of the MTCNN detector weights (`pnet.*`, `rnet.*`, `onet.*`).
pub const MTCNN_FILE: &str = "mtcnn.safetensors";

/// File name of a recognizer's weights.
pub fn recognizer_file(kind: RecognizerKind) -> &'static str {
    match kind {
        RecognizerKind::MobileFaceNet => "mobilefacenet.safetensors",
        RecognizerKind::DlibResnet => "dlib_resnet.safetensors",
    }
}

/// The weights compiled into this build, by file name.
const EMBEDDED: &[(&str, &[u8])] = &[
    (MTCNN_FILE, include_bytes!("../weights/mtcnn.safetensors")),
    (
        "mobilefacenet.safetensors",
        include_bytes!("../weights/mobilefacenet.safetensors"),
    ),
    (
        "dlib_resnet.safetensors",
        include_bytes!("../weights/dlib_resnet.safetensors"),
    ),
];

/// Names of the weight files embedded in this build.
pub fn embedded_files() -> impl Iterator<Item = &'static str> {
    EMBEDDED.iter().map(|(n, _)| *n)
}

/// The bytes of weights file `file`: from `dir` when given, else embedded.
pub fn weights_bytes(file: &str, dir: Option<&Path>) -> Result<Cow<'static, [u8]>> {
    match dir {
        Some(dir) => {
            let path = dir.join(file);
            match std::fs::read(&path) {
                Ok(b) => Ok(Cow::Owned(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(ModelError::WeightsMissing {
                        path,
                        file: file.to_string(),
                    })
                }
                Err(e) => Err(ModelError::io(path, e)),
            }
        }
        None => EMBEDDED
            .iter()
            .find(|(n, _)| *n == file)
            .map(|(_, b)| Cow::Borrowed(*b))
            .ok_or_else(|| ModelError::WeightsMissing {
                path: Path::new("<embedded>").join(file),
                file: file.to_string(),
            }),
    }
}

/// A float32 [`VarBuilder`] over weights file `file` (see [`weights_bytes`]),
/// after checking that it is a readable safetensors file.
pub fn var_builder(
    file: &str,
    dir: Option<&Path>,
    device: &Device,
) -> Result<VarBuilder<'static>> {
    let bytes = weights_bytes(file, dir)?;
    let invalid = |detail: String| ModelError::WeightsInvalid {
        name: file.to_string(),
        detail,
    };
    let tensors = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| invalid(format!("not a safetensors file: {e}")))?;
    if tensors.is_empty() {
        return Err(invalid("holds no tensors".into()));
    }
    let vb = match bytes {
        Cow::Borrowed(b) => VarBuilder::from_slice_safetensors(b, DType::F32, device),
        Cow::Owned(b) => VarBuilder::from_buffered_safetensors(b, DType::F32, device),
    };
    vb.map_err(|e| invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_weights_are_valid_safetensors() {
        for name in embedded_files() {
            var_builder(name, None, &Device::Cpu).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert!(embedded_files().any(|n| n == MTCNN_FILE));
        for k in [RecognizerKind::MobileFaceNet, RecognizerKind::DlibResnet] {
            assert!(embedded_files().any(|n| n == recognizer_file(k)));
        }
    }

    #[test]
    fn missing_and_invalid_files_are_reported() {
        let dir = std::env::temp_dir().join(format!("ff-weights-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = var_builder(MTCNN_FILE, Some(&dir), &Device::Cpu).err().unwrap();
        assert!(matches!(err, ModelError::WeightsMissing { .. }));
        assert!(err.to_string().contains("mtcnn.safetensors"), "{err}");

        std::fs::write(dir.join(MTCNN_FILE), b"not weights at all").unwrap();
        let err = var_builder(MTCNN_FILE, Some(&dir), &Device::Cpu).err().unwrap();
        assert!(matches!(err, ModelError::WeightsInvalid { .. }), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
