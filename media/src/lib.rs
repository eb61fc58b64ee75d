//! Media formats for the ingest edges, sans-IO: bytes in, typed values out.
//!
//! Nothing here reads a socket or a clock; every parser takes untrusted bytes and returns a
//! precise error rather than panicking (each has a fuzz target in `fuzz/`).

#![forbid(unsafe_code)]

pub mod aac;
pub mod depacketize;
pub mod flv;
pub mod fmp4;
pub mod h264;
pub mod hls;
