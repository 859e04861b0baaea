//! The gRPC contract of the CBDC network and its conversions to `cbdc-core` types.
//!
//! Generated code lives in [`v1`]; [`convert`] is the only place where wire types become core
//! types, returning a [`convert::WireError`] that names the field at fault. [`keycache`] keeps
//! the decompressed keys of recent signers for decoding; [`requests`] builds signed requests
//! for clients.

pub mod convert;
pub mod keycache;
pub mod requests;

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("cbdc.v1");
}

/// The encoded `FileDescriptorSet` of every proto, for the gRPC reflection service.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/cbdc_descriptor.bin"));
