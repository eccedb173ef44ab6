//! Compiles every `.proto` under the workspace `proto/` directory with the
//! pure-Rust `protox` compiler (no system `protoc`), generates tonic/prost
//! code, and writes the encoded descriptor set for server reflection.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto").canonicalize()?;
    println!("cargo:rerun-if-changed={}", proto_root.display());

    let mut files = Vec::new();
    collect_protos(&proto_root, &mut files)?;
    files.sort();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    if files.is_empty() {
        return Err(format!("no .proto files under {}", proto_root.display()).into());
    }

    let mut compiler = protox::Compiler::new([&proto_root])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(&files)?;

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("ferry_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .emit_rerun_if_changed(false)
        // These carry secrets (a decrypted private key, git credentials,
        // secret build args, a provider token) or a tenant's program output
        // (job logs, which may print anything): `lib.rs` writes redacted
        // Debug impls.
        .skip_debug([
            ".ferry.internal.v1.Certificate",
            ".ferry.internal.v1.RunBuildRequest",
            ".ferry.internal.v1.GitCredential",
            ".ferry.internal.v1.TokenCredential",
            ".ferry.v1.CreateGitIntegrationRequest",
            ".ferry.v1.UploadCertificateRequest",
            ".ferry.v1.JobRunLogs",
            ".ferry.v1.CreateChannelRequest",
            ".ferry.v1.CreateChannelResponse",
            ".ferry.v1.RotateChannelSecretResponse",
            ".ferry.v1.UpdateChannelRequest",
            ".ferry.v1.SetEmailConfigRequest",
        ])
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}

/// Every `.proto` below `dir`, recursively (directories also trigger reruns
/// so a newly added file is picked up).
fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    println!("cargo:rerun-if-changed={}", dir.display());
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
