//! Code generated from `proto/` by `build.rs`: messages, tonic servers and clients, proto3-JSON serde.
//! Nothing in here is written by hand; the contract lives in the `.proto` files.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod agentry {
    pub mod v1 {
        tonic::include_proto!("agentry.v1");
        include!(concat!(env!("OUT_DIR"), "/agentry.v1.serde.rs"));
    }
}

pub use agentry::v1::*;

/// The encoded `FileDescriptorSet` of every proto (imports included), served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/agentry_descriptor.bin"));
