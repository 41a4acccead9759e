//! Plain data types of the model's public API.

use serde::{Deserialize, Serialize};

/// An axis-aligned box in image pixel coordinates (x right, y down).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BoundingBox {
    /// Left edge.
    pub x1: f32,
    /// Top edge.
    pub y1: f32,
    /// Right edge.
    pub x2: f32,
    /// Bottom edge.
    pub y2: f32,
}

impl BoundingBox {
    /// Width in pixels.
    pub fn width(&self) -> f32 {
        self.x2 - self.x1
    }
    /// Height in pixels.
    pub fn height(&self) -> f32 {
        self.y2 - self.y1
    }
    /// Area in square pixels (0 for degenerate boxes).
    pub fn area(&self) -> f32 {
        self.width().max(0.0) * self.height().max(0.0)
    }
}

/// The five facial landmarks, in image pixel coordinates, in this order:
/// left eye, right eye, nose tip, left mouth corner, right mouth corner
/// ("left" = left side of the image).
pub type Landmarks = [[f32; 2]; 5];

/// One detected face.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Face {
    /// Face box.
    pub bbox: BoundingBox,
    /// Detector confidence in 0..=1.
    pub score: f32,
    /// Five landmarks (see [`Landmarks`]).
    pub landmarks: Landmarks,
}

/// An L2-normalised face embedding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embedding(pub Vec<f32>);

impl Embedding {
    /// Normalises `v` to unit length (a zero vector stays zero).
    pub fn normalized(mut v: Vec<f32>) -> Self {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
        Embedding(v)
    }
    /// Cosine similarity with another embedding of the same length.
    pub fn cosine(&self, other: &Embedding) -> f32 {
        self.0.iter().zip(&other.0).map(|(a, b)| a * b).sum()
    }
    /// Number of dimensions.
    pub fn dim(&self) -> usize {
        self.0.len()
    }
}

/// Which embedding network a model (and a gallery) uses. Embeddings of
/// different recognizers are not comparable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum RecognizerKind {
    /// MobileFaceNet, 192-d, 112x112 ArcFace-aligned input (default).
    #[default]
    #[serde(rename = "mobilefacenet")]
    MobileFaceNet,
    /// dlib's ResNet, 128-d, 150x150 dlib face chip.
    #[serde(rename = "dlib-resnet")]
    DlibResnet,
}

impl RecognizerKind {
    /// Stable name used in flags, logs and serialised galleries.
    pub fn name(self) -> &'static str {
        match self {
            RecognizerKind::MobileFaceNet => "mobilefacenet",
            RecognizerKind::DlibResnet => "dlib-resnet",
        }
    }
    /// Embedding dimension.
    pub fn dim(self) -> usize {
        match self {
            RecognizerKind::MobileFaceNet => 192,
            RecognizerKind::DlibResnet => 128,
        }
    }
}

impl std::fmt::Display for RecognizerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for RecognizerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "mobilefacenet" => Ok(RecognizerKind::MobileFaceNet),
            "dlib-resnet" | "dlib" => Ok(RecognizerKind::DlibResnet),
            other => Err(format!(
                "unknown recognizer `{other}` (expected `mobilefacenet` or `dlib-resnet`)"
            )),
        }
    }
}
