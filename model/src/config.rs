//! Model configuration.

use std::path::{Path, PathBuf};

use crate::{DetectParams, RecognizerKind};

/// Environment variable naming a folder of weight files that replaces the
/// embedded weights (see [`ModelConfig::weights_dir`]).
pub const WEIGHTS_DIR_ENV: &str = "FACEFLEET_WEIGHTS_DIR";

/// How to build a [`crate::FaceModel`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelConfig {
    /// The embedding network (default MobileFaceNet). Galleries remember the
    /// recognizer they were built with and refuse the other one.
    pub recognizer: RecognizerKind,
    /// Folder holding `mtcnn.safetensors`, `mobilefacenet.safetensors`,
    /// `dlib_resnet.safetensors` to use instead of the weights embedded in
    /// the binary. `None`: the folder named by the `FACEFLEET_WEIGHTS_DIR`
    /// environment variable when it is set (and not empty), else the
    /// embedded weights.
    pub weights_dir: Option<PathBuf>,
    /// Face detector parameters.
    pub detect: DetectParams,
    /// Similarity threshold overriding the gallery's own (`None`: use the
    /// threshold stored in the gallery, by default the recognizer's
    /// [`crate::default_threshold`]).
    pub threshold: Option<f32>,
}

impl ModelConfig {
    /// The default configuration with another recognizer. The dlib ResNet
    /// keeps the detector's f32 convolutions
    /// ([`DetectParams::f32_convolutions`]): its threshold was calibrated on
    /// them, two of lfw-dev's 315 open-set queries cross it with the integer
    /// ones, and its own network takes most of its time anyway (model
    /// README, "MTCNN in 16-bit integers").
    pub fn with_recognizer(recognizer: RecognizerKind) -> Self {
        let mut config = ModelConfig { recognizer, ..ModelConfig::default() };
        config.detect.f32_convolutions = recognizer == RecognizerKind::DlibResnet;
        config
    }

    /// The folder weights are read from: [`ModelConfig::weights_dir`], else
    /// `$FACEFLEET_WEIGHTS_DIR`, else `None` (embedded weights).
    pub fn effective_weights_dir(&self) -> Option<PathBuf> {
        self.weights_dir.clone().or_else(|| {
            std::env::var_os(WEIGHTS_DIR_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
    }

    /// Sets [`ModelConfig::weights_dir`].
    pub fn with_weights_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.weights_dir = Some(dir.as_ref().to_path_buf());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_detector_arithmetic_follows_the_recognizer() {
        assert!(!ModelConfig::default().detect.f32_convolutions);
        assert!(!ModelConfig::with_recognizer(RecognizerKind::MobileFaceNet).detect.f32_convolutions);
        assert!(ModelConfig::with_recognizer(RecognizerKind::DlibResnet).detect.f32_convolutions);
    }
}
