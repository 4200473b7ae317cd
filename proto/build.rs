fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&["routemaster/v1/routemaster.proto"], &["."])?;
    Ok(())
}
