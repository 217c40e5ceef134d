//! The routes, one module per capability (the same names as the use cases in `app`).

pub mod admin;
pub mod calls;
pub mod conversations;
pub mod crm;
pub mod events;
pub mod identify;
pub mod ivr;
pub mod panel;
pub mod stream;
pub mod workflows;
