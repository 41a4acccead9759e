//! Resource names derived from one prefix, as the course named them.

/// The names of every resource of one deployment. Each is derived from the
/// prefix and can be overridden field by field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The prefix everything is named from (default `facefleet`).
    pub prefix: String,
    /// Uploaded images: `<prefix>-in-bucket`.
    pub in_bucket: String,
    /// Results, key = image stem, body = name: `<prefix>-out-bucket`.
    pub out_bucket: String,
    /// Enrolled people (the gallery): `<prefix>-gallery`.
    pub gallery_bucket: String,
    /// Requests: `<prefix>-req-queue`.
    pub req_queue: String,
    /// Responses: `<prefix>-resp-queue`.
    pub resp_queue: String,
    /// Dead letters of the request queue: `<prefix>-req-dlq`.
    pub req_dlq: String,
    /// Uploaded videos: `<prefix>-input`.
    pub video_input: String,
    /// Frames split from videos: `<prefix>-stage-1`.
    pub video_stage1: String,
    /// Per-frame and per-video results: `<prefix>-output`.
    pub video_output: String,
    /// What the local video trigger has handled (markers):
    /// `<prefix>-video-trigger`.
    pub video_trigger_state: String,
    /// The app tier's EC2 launch template, fleet tag value, IAM role and
    /// instance profile: `<prefix>-app-tier`.
    pub app_tier: String,
    /// The web tier's IAM role and instance profile: `<prefix>-web`.
    pub web_role: String,
    /// Security group of the app tier: `<prefix>-app-tier-sg`.
    pub app_tier_security_group: String,
    /// Security group of the web tier: `<prefix>-web-sg`.
    pub web_security_group: String,
    /// The video-splitting Lambda function: `<prefix>-video-splitting`.
    pub split_function: String,
    /// The face-recognition Lambda function: `<prefix>-face-recognition`.
    pub recognize_function: String,
    /// Execution role of the video functions: `<prefix>-video-lambda`.
    pub lambda_role: String,
    /// Bucket of the functions' code: `<prefix>-lambda-artifacts`.
    pub lambda_artifacts: String,
    /// Id of the notification `video_input` → `split_function`:
    /// `<prefix>-input-to-split`.
    pub split_notification: String,
    /// Id of the notification `video_stage1` → `recognize_function`:
    /// `<prefix>-frames-to-recognition`.
    pub recognize_notification: String,
    /// Name of the web-tier instance: `web-instance`.
    pub web_instance: String,
    /// Prefix of worker names: `app-tier-instance` (workers are `<this>-<n>`).
    pub worker_prefix: String,
}

impl Names {
    /// The default prefix.
    pub const DEFAULT_PREFIX: &'static str = "facefleet";

    /// All names derived from `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            in_bucket: format!("{prefix}-in-bucket"),
            out_bucket: format!("{prefix}-out-bucket"),
            gallery_bucket: format!("{prefix}-gallery"),
            req_queue: format!("{prefix}-req-queue"),
            resp_queue: format!("{prefix}-resp-queue"),
            req_dlq: format!("{prefix}-req-dlq"),
            video_input: format!("{prefix}-input"),
            video_stage1: format!("{prefix}-stage-1"),
            video_output: format!("{prefix}-output"),
            video_trigger_state: format!("{prefix}-video-trigger"),
            app_tier: format!("{prefix}-app-tier"),
            web_role: format!("{prefix}-web"),
            app_tier_security_group: format!("{prefix}-app-tier-sg"),
            web_security_group: format!("{prefix}-web-sg"),
            split_function: format!("{prefix}-video-splitting"),
            recognize_function: format!("{prefix}-face-recognition"),
            lambda_role: format!("{prefix}-video-lambda"),
            lambda_artifacts: format!("{prefix}-lambda-artifacts"),
            split_notification: format!("{prefix}-input-to-split"),
            recognize_notification: format!("{prefix}-frames-to-recognition"),
            web_instance: "web-instance".to_string(),
            worker_prefix: "app-tier-instance".to_string(),
        }
    }

    /// Name of worker number `n`: `app-tier-instance-<n>`.
    pub fn worker(&self, n: usize) -> String {
        format!("{}-{n}", self.worker_prefix)
    }

    /// The worker number in a name like `app-tier-instance-7`, if it is one
    /// of ours.
    pub fn worker_number(&self, name: &str) -> Option<usize> {
        name.strip_prefix(&self.worker_prefix)?
            .strip_prefix('-')?
            .parse()
            .ok()
    }
}

impl Default for Names {
    fn default() -> Self {
        Self::new(Self::DEFAULT_PREFIX)
    }
}

#[cfg(test)]
mod tests {
    use super::Names;

    #[test]
    fn course_names() {
        let n = Names::new("cse546");
        assert_eq!(n.in_bucket, "cse546-in-bucket");
        assert_eq!(n.out_bucket, "cse546-out-bucket");
        assert_eq!(n.req_queue, "cse546-req-queue");
        assert_eq!(n.resp_queue, "cse546-resp-queue");
        assert_eq!(n.video_stage1, "cse546-stage-1");
        assert_eq!(n.worker(3), "app-tier-instance-3");
        assert_eq!(n.app_tier, "cse546-app-tier");
        assert_eq!(n.recognize_function, "cse546-face-recognition");
        assert_eq!(n.lambda_artifacts, "cse546-lambda-artifacts");
        assert_eq!(n.worker_number("app-tier-instance-12"), Some(12));
        assert_eq!(n.worker_number("web-instance"), None);
    }
}
