use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "routemaster/v1/routemaster.proto";
    println!("cargo:rerun-if-changed={proto}");
    // Messages, clients and servers (`crate::v1`).
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&[proto], &["."])?;
    // The same services again, over the same messages, except that `Snapshot` is
    // `crate::EncodedSnapshot`: the control plane encodes each group's snapshot once per
    // version and every stream sends those bytes (`crate::shared`).
    let shared = PathBuf::from(std::env::var("OUT_DIR")?).join("shared");
    std::fs::create_dir_all(&shared)?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .out_dir(&shared)
        .extern_path(".routemaster.v1", "crate::v1")
        .extern_path(".routemaster.v1.Snapshot", "crate::EncodedSnapshot")
        .compile_protos(&[proto], &["."])?;
    Ok(())
}
