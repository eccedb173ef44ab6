//! What the builder resolved for a build (commit, build type, detection),
//! kept on the Job as annotations so a re-attaching builder can report it
//! without resolving again.

use std::collections::BTreeMap;

use ferry_k8s::BuildStatus;
use ferry_proto::ferry::internal::v1 as pb;

/// Annotation keys on the build Job.
pub const COMMIT_SHA: &str = "ferry.dev/commit-sha";
pub const BUILD_TYPE: &str = "ferry.dev/build-type";
/// A JSON array of the detection lines.
pub const DETECTION: &str = "ferry.dev/detection";

/// The detection lines kept, at most, in bytes: well under ferry-k8s's
/// annotation limit.
const MAX_DETECTION_BYTES: usize = 16 * 1024;

/// The `Resolved` event's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub commit_sha: String,
    pub build_type: String,
    pub detection: Vec<String>,
    pub job_name: String,
}

impl Resolution {
    /// The Job annotations that carry it (detection lines past the size
    /// bound are dropped).
    pub fn annotations(&self) -> BTreeMap<String, String> {
        let mut kept = Vec::new();
        let mut size = 0;
        for line in &self.detection {
            size += line.len() + 4;
            if size > MAX_DETECTION_BYTES {
                break;
            }
            kept.push(line.as_str());
        }
        BTreeMap::from([
            (COMMIT_SHA.to_owned(), self.commit_sha.clone()),
            (BUILD_TYPE.to_owned(), self.build_type.clone()),
            (
                DETECTION.to_owned(),
                serde_json::Value::from(kept).to_string(),
            ),
        ])
    }

    /// From an existing Job. A Job without the annotations (started by
    /// something older) still gives its name.
    pub fn from_job(status: &BuildStatus) -> Resolution {
        let get = |key: &str| status.annotations.get(key).cloned().unwrap_or_default();
        let detection = status
            .annotations
            .get(DETECTION)
            .and_then(|json| serde_json::from_str::<Vec<String>>(json).ok())
            .unwrap_or_default();
        Resolution {
            commit_sha: get(COMMIT_SHA),
            build_type: get(BUILD_TYPE),
            detection,
            job_name: status.job_name.clone(),
        }
    }

    pub fn event(&self) -> pb::build_event::Event {
        pb::build_event::Event::Resolved(pb::Resolved {
            commit_sha: self.commit_sha.clone(),
            build_type: self.build_type.clone(),
            detection: self.detection.clone(),
            job_name: self.job_name.clone(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use ferry_k8s::BuildOutcome;
    use uuid::Uuid;

    use super::*;

    #[test]
    fn annotations_round_trip_through_the_job() {
        let resolution = Resolution {
            commit_sha: "a".repeat(40),
            build_type: "railpack".into(),
            detection: vec![
                "package.json found: Node.js, npm".into(),
                "\"quoted\"".into(),
            ],
            job_name: "ferry-build-000000000001".into(),
        };
        let status = BuildStatus {
            build_id: Uuid::from_u128(1),
            job_name: resolution.job_name.clone(),
            outcome: BuildOutcome::Pending {
                reason: String::new(),
            },
            annotations: resolution.annotations(),
        };
        assert_eq!(Resolution::from_job(&status), resolution);
        let bare = BuildStatus {
            annotations: BTreeMap::new(),
            ..status
        };
        assert_eq!(Resolution::from_job(&bare).job_name, resolution.job_name);
    }

    #[test]
    fn long_detections_are_bounded() {
        let resolution = Resolution {
            commit_sha: String::new(),
            build_type: String::new(),
            detection: vec!["x".repeat(1000); 100],
            job_name: String::new(),
        };
        assert!(resolution.annotations()[DETECTION].len() <= MAX_DETECTION_BYTES);
    }
}
