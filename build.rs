//! Generates everything the crate derives from the contract in `proto/`:
//! tonic servers and clients, proto3-JSON serde impls (pbjson), the encoded file descriptor set
//! served by reflection, the list of built-in store agents found in `store/`, and, from the
//! `google.api.http` annotations, the REST route table and the OpenAPI document of the REST shim.

use std::{env, fs, path::PathBuf};

#[path = "build/openapi.rs"]
mod openapi;
#[path = "build/rest_routes.rs"]
mod rest_routes;

const PROTOS: &[&str] = &[
    "proto/agentry/v1/common.proto",
    "proto/agentry/v1/agents.proto",
    "proto/agentry/v1/runs.proto",
    "proto/agentry/v1/flows.proto",
    "proto/agentry/v1/admin.proto",
    // Only for the descriptor set: lets reflection clients decode google.rpc.BadRequest error details.
    "proto/google/rpc/error_details.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(env::var("OUT_DIR")?);
    // A fresh machine has no protoc: use the vendored one unless the caller chose one.
    if env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
        unsafe { env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    let include = protoc_bin_vendored::include_path()?;
    let descriptor_path = out.join("agentry_descriptor.bin");

    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor_path)
        // Well-known types come from pbjson-types so that Struct, Value and Timestamp have proto3-JSON serde.
        // (prost would map them to prost-types unless it "compiles" them, which the extern path then overrides.)
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        // Services not built yet answer UNIMPLEMENTED instead of failing to compile.
        .generate_default_stubs(true)
        .compile_protos(
            PROTOS,
            &[
                "proto",
                include.to_str().ok_or("non-UTF-8 protoc include path")?,
            ],
        )?;

    let descriptors = fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .preserve_proto_field_names()
        .build(&[".agentry"])?;

    write_builtin_store(&out)?;
    write_rest(&out, &descriptors)?;
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=build");
    println!("cargo:rerun-if-changed=store");
    Ok(())
}

/// `builtin_store.rs`: a `&[(slug, json)]` of every `store/*.json`, sorted by slug, embedded in the binary.
fn write_builtin_store(out: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("store");
    let mut entries: Vec<(String, PathBuf)> = fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| (p.file_stem().unwrap().to_string_lossy().into_owned(), p))
        .collect();
    entries.sort();
    let mut code = String::from("pub(crate) static BUILTIN_STORE: &[(&str, &str)] = &[\n");
    for (slug, path) in entries {
        code.push_str(&format!(
            "    ({slug:?}, include_str!({:?})),\n",
            path.display().to_string()
        ));
    }
    code.push_str("];\n");
    fs::write(out.join("builtin_store.rs"), code)?;
    Ok(())
}

/// `rest_routes.rs` (the shim's route table) and `openapi.json`, both from the `google.api.http` rules.
fn write_rest(out: &std::path::Path, descriptors: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
    let pool = prost_reflect::DescriptorPool::decode(descriptors)?;
    let bindings = rest_routes::bindings(&pool, "agentry.v1")?;
    fs::write(
        out.join("rest_routes.rs"),
        rest_routes::rust_table(&bindings),
    )?;
    let doc = openapi::document(
        &pool,
        &bindings,
        "agentry.v1",
        &env::var("CARGO_PKG_VERSION")?,
    )?;
    fs::write(
        out.join("openapi.json"),
        serde_json::to_string_pretty(&doc)?,
    )?;
    Ok(())
}
