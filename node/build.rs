//! Compiles the programs' `.proto` files with `protox`, so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(
        [
            "ferry/volume/v1/volume.proto",
            "ferry/events/v1/events.proto",
            "ferry/admin/v1/admin.proto",
        ],
        ["proto"],
    )?;
    prost_build::Config::new()
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
