//! Generated protobuf and tonic code for Ferry's public gRPC API.
//!
//! The `.proto` sources live in the workspace `proto/` directory; every file
//! there is compiled at build time by `protox` (no system `protoc`).
//! Packages are versioned: today everything is `ferry.v1`.

/// The `ferry` protobuf namespace.
pub mod ferry {
    /// Version 1 of the public API (`ferry.v1`).
    pub mod v1 {
        #![allow(
            clippy::all,
            clippy::pedantic,
            clippy::unwrap_used,
            clippy::expect_used
        )]
        #![allow(missing_docs)]
        tonic::include_proto!("ferry.v1");
    }
}

/// Encoded `FileDescriptorSet` of every Ferry `.proto` (with imports), for
/// gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ferry_descriptor.bin"));

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use prost::Message as _;

    #[test]
    fn descriptor_set_contains_every_ferry_service() {
        let fds = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET).unwrap();
        let services: Vec<String> = fds
            .file
            .iter()
            .filter(|f| f.package() == "ferry.v1")
            .flat_map(|f| f.service.iter().map(|s| format!("ferry.v1.{}", s.name())))
            .collect();
        assert!(
            services.iter().any(|s| s == "ferry.v1.SystemService"),
            "{services:?}"
        );
        // Imports are included so reflection clients can resolve Timestamp.
        assert!(
            fds.file
                .iter()
                .any(|f| f.name() == "google/protobuf/timestamp.proto")
        );
    }
}
