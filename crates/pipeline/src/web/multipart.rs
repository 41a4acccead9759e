//! Reading uploads out of multipart requests.

use axum::extract::Multipart;
use bytes::Bytes;

use super::ApiError;

/// One uploaded file.
pub(crate) struct Upload {
    /// The multipart field it came in.
    pub field: String,
    /// File name as the client sent it (may be hostile; sanitise before use).
    pub file_name: Option<String>,
    /// Content.
    pub bytes: Bytes,
}

/// Reads every field named one of `names`, skipping other fields.
pub(crate) async fn files(mut mp: Multipart, names: &[&str]) -> Result<Vec<Upload>, ApiError> {
    let mut out = Vec::new();
    while let Some(field) = mp.next_field().await? {
        let wanted = field.name().is_some_and(|n| names.contains(&n));
        if !wanted {
            // Drain it (its bytes still count towards the body limit).
            field.bytes().await?;
            continue;
        }
        let name = field.name().unwrap_or_default().to_string();
        let file_name = field.file_name().map(str::to_string);
        let bytes = field.bytes().await?;
        out.push(Upload { field: name, file_name, bytes });
    }
    Ok(out)
}
