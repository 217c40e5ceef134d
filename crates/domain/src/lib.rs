//! Pure domain logic of cxbridge.
//!
//! Nothing in this crate performs I/O, spawns tasks, talks SQL or HTTP. Everything here is
//! a function of its inputs, so it is tested with data tables (`check(input, expected)`).
//! Types derive `Deserialize` where they are read from the configuration file; the wire
//! representation the outside world sees lives in `cxbridge-proto`.

pub mod calls;
pub mod conversation;
pub mod crm;
pub mod directory;
pub mod identify;
pub mod ivr;
pub mod mapping;
pub mod outbox;
pub mod phone;
pub mod pop;

pub use jiff::{SignedDuration, Timestamp};
