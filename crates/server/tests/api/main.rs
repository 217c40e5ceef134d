//! The one integration-test binary of the server: each test starts the real hub on port 0
//! with a temporary data directory and talks to it over HTTP and WebSocket.

mod helpers;

mod calls;
mod dataverse;
mod cli;
mod crm;
mod input;
mod ivr;
mod kamailio;
mod lifecycle;
mod panel;
mod salesforce;
mod scaleout;
mod sipgate;
mod tryton;
mod workflows;
