//! Vendor adapters, in rooms by role. They know nothing of HTTP routing, storage or agents.
//!
//! - [`sources`]: formats in from PBXs and platforms (Zammad generic CTI, sipgate.io push, IVR
//!   answers): a vendor's request becomes a [`sources::call_event::CallEvent`], a hub decision
//!   the vendor's reply.
//! - [`sinks`]: where the hub writes to: the CRM adapters behind the domain's CRM port.
//! - [`client`]: the HTTP client sinks share: OAuth token cache, limits, one call's discipline.
//! - [`bus`]: NATS JetStream between the nodes.

pub mod bus;
pub mod client;
pub mod sinks;
pub mod sources;
