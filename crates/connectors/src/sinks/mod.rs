//! Where the hub writes to: the CRM adapters behind the domain's CRM port.

pub mod crm;
