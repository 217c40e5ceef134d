//! Formats in from PBXs and platforms: each turns a vendor's request into a
//! [`call_event::CallEvent`] and renders the hub's decision in the vendor's words.

pub mod call_event;
pub mod cti;
pub mod ivr;
pub mod sipgate;

#[cfg(test)]
mod fuzz_tests;
