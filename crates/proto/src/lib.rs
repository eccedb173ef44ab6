//! Generated protobuf and tonic code for Ferry's public gRPC API.
//!
//! The `.proto` sources live in the workspace `proto/` directory; every file
//! there is compiled at build time by `protox` (no system `protoc`).
//! Packages are versioned: the public API is `ferry.v1`; `ferry.internal.v1`
//! holds service-to-service contracts (the api → proxy route feed) that are
//! authenticated with service credentials and not part of the public API.

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

        /// Never prints the token or the webhook secret.
        impl std::fmt::Debug for CreateGitIntegrationRequest {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct("CreateGitIntegrationRequest")
                    .field("organization_id", &self.organization_id)
                    .field("provider", &self.provider)
                    .field("name", &self.name)
                    .field("base_url", &self.base_url)
                    .finish_non_exhaustive()
            }
        }

        /// Never prints the webhook URL, signing secret or recipients.
        impl std::fmt::Debug for CreateChannelRequest {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct("CreateChannelRequest")
                    .field("organization_id", &self.organization_id)
                    .field("kind", &self.kind)
                    .field("name", &self.name)
                    .field("events", &self.events)
                    .finish_non_exhaustive()
            }
        }

        /// Never prints the signing secret.
        impl std::fmt::Debug for CreateChannelResponse {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct("CreateChannelResponse")
                    .field("channel", &self.channel)
                    .finish_non_exhaustive()
            }
        }

        /// Never prints the signing secret.
        impl std::fmt::Debug for RotateChannelSecretResponse {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct("RotateChannelSecretResponse")
                    .field("channel", &self.channel)
                    .finish_non_exhaustive()
            }
        }

        /// Never prints the webhook URL or recipients.
        impl std::fmt::Debug for UpdateChannelRequest {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct("UpdateChannelRequest")
                    .field("id", &self.id)
                    .field("name", &self.name)
                    .field("enabled", &self.enabled)
                    .finish_non_exhaustive()
            }
        }

        /// Never prints the SMTP password.
        impl std::fmt::Debug for SetEmailConfigRequest {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct("SetEmailConfigRequest")
                    .field("organization_id", &self.organization_id)
                    .field("smtp_host", &self.smtp_host)
                    .field("smtp_port", &self.smtp_port)
                    .field("tls_mode", &self.tls_mode)
                    .finish_non_exhaustive()
            }
        }

        /// The domain and the chain's size, never the private key.
        impl std::fmt::Debug for UploadCertificateRequest {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct("UploadCertificateRequest")
                    .field("domain_id", &self.domain_id)
                    .field("certificate_pem_bytes", &self.certificate_pem.len())
                    .finish_non_exhaustive()
            }
        }

        /// How many lines, never what they say: a job's output may print
        /// its secrets.
        impl std::fmt::Debug for JobRunLogs {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct("JobRunLogs")
                    .field("run_id", &self.run_id)
                    .field("lines", &self.lines.len())
                    .field("partial", &self.partial)
                    .finish()
            }
        }
    }

    /// Internal service-to-service contracts (`ferry.internal.*`).
    pub mod internal {
        /// Version 1 of the internal contracts (`ferry.internal.v1`): the
        /// route feed from the api to the proxies.
        pub mod v1 {
            #![allow(
                clippy::all,
                clippy::pedantic,
                clippy::unwrap_used,
                clippy::expect_used
            )]
            #![allow(missing_docs)]
            tonic::include_proto!("ferry.internal.v1");

            /// Never prints the credential or secret build-arg values.
            impl std::fmt::Debug for RunBuildRequest {
                fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.debug_struct("RunBuildRequest")
                        .field("build_id", &self.build_id)
                        .field("repository_url", &self.repository_url)
                        .field("branch", &self.branch)
                        .field("commit_sha", &self.commit_sha)
                        .field("build_type", &self.build_type)
                        .field("credential", &self.credential)
                        .field(
                            "secret_build_args",
                            &self.secret_build_args.keys().collect::<Vec<_>>(),
                        )
                        .finish_non_exhaustive()
                }
            }

            /// Only which kind of credential it is.
            impl std::fmt::Debug for GitCredential {
                fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    let kind = match &self.kind {
                        None => "none",
                        Some(git_credential::Kind::Token(_)) => "token",
                        Some(git_credential::Kind::SshPrivateKey(_)) => "ssh key",
                    };
                    f.debug_struct("GitCredential")
                        .field("kind", &kind)
                        .finish_non_exhaustive()
                }
            }

            /// The user name, never the token.
            impl std::fmt::Debug for TokenCredential {
                fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.debug_struct("TokenCredential")
                        .field("username", &self.username)
                        .finish_non_exhaustive()
                }
            }

            /// Never prints the private key (nor the chain, for brevity).
            impl std::fmt::Debug for Certificate {
                fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.debug_struct("Certificate")
                        .field("id", &self.id)
                        .field("hosts", &self.hosts)
                        .finish_non_exhaustive()
                }
            }
        }
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
    fn build_requests_and_git_integrations_hide_their_secrets() {
        use super::ferry::internal::v1 as ipb;
        let request = ipb::RunBuildRequest {
            build_id: "b1".into(),
            credential: Some(ipb::GitCredential {
                kind: Some(ipb::git_credential::Kind::Token(ipb::TokenCredential {
                    username: "x-access-token".into(),
                    token: "TOKEN-VALUE".into(),
                })),
                ssh_known_hosts: String::new(),
            }),
            secret_build_args: [("NPM_TOKEN".to_owned(), "ARG-VALUE".to_owned())].into(),
            ..Default::default()
        };
        let shown = format!("{request:?}");
        assert!(
            shown.contains("b1") && shown.contains("NPM_TOKEN"),
            "{shown}"
        );
        assert!(
            !shown.contains("TOKEN-VALUE") && !shown.contains("ARG-VALUE"),
            "{shown}"
        );
        let token = ipb::TokenCredential {
            username: "u".into(),
            token: "TOKEN-VALUE".into(),
        };
        assert!(!format!("{token:?}").contains("TOKEN-VALUE"));
        let create = super::ferry::v1::CreateGitIntegrationRequest {
            name: "gh".into(),
            token: "TOKEN-VALUE".into(),
            webhook_secret: "HOOK-SECRET".into(),
            ..Default::default()
        };
        let shown = format!("{create:?}");
        assert!(
            !shown.contains("TOKEN-VALUE") && !shown.contains("HOOK-SECRET"),
            "{shown}"
        );
    }

    #[test]
    fn job_logs_debug_shows_no_output() {
        let logs = super::ferry::v1::JobRunLogs {
            run_id: "r1".into(),
            lines: vec!["DB_PASSWORD=hunter2".into(), "done".into()],
            partial: true,
        };
        let shown = format!("{logs:?}");
        assert!(shown.contains("r1") && shown.contains('2'), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn feed_certificate_debug_hides_the_key() {
        let cert = super::ferry::internal::v1::Certificate {
            id: "d1".into(),
            hosts: vec!["a.example.com".into()],
            cert_pem: "CHAIN".into(),
            key_pem: "PRIVATE-KEY".into(),
        };
        let shown = format!("{cert:?}");
        assert!(shown.contains("a.example.com"), "{shown}");
        assert!(
            !shown.contains("PRIVATE-KEY") && !shown.contains("CHAIN"),
            "{shown}"
        );
    }

    #[test]
    fn descriptor_set_contains_every_ferry_service() {
        let fds = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET).unwrap();
        let services: Vec<String> = fds
            .file
            .iter()
            .filter(|f| f.package() == "ferry.v1")
            .flat_map(|f| f.service.iter().map(|s| format!("ferry.v1.{}", s.name())))
            .collect();
        for wanted in ["ferry.v1.SystemService", "ferry.v1.JobService"] {
            assert!(services.iter().any(|s| s == wanted), "{services:?}");
        }
        assert!(fds.file.iter().any(|f| {
            f.package() == "ferry.internal.v1" && f.service.iter().any(|s| s.name() == "RouteFeed")
        }));
        // Imports are included so reflection clients can resolve Timestamp.
        assert!(
            fds.file
                .iter()
                .any(|f| f.name() == "google/protobuf/timestamp.proto")
        );
    }
}
