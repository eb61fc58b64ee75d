//! Sans-IO building blocks of the forwarding path. Nothing here owns a socket, a clock or a
//! str0m session; every function is a pure step of its inputs (time included), unit tested
//! beside its code.

pub mod keyframe;
pub mod probing;
pub mod rewrite;
pub mod simulcast;
pub mod speaker;
pub mod throttle;
