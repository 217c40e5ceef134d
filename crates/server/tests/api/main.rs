//! The one integration-test binary of the server: each test starts the real hub on port 0
//! with a temporary data directory and talks to it over HTTP and WebSocket.

mod helpers;

mod calls;
mod conformance;
mod dataverse;
mod durability;
mod files;
mod cli;
mod crm;
mod input;
mod ivr;
mod kamailio;
mod late_answers;
mod lifecycle;
mod limits;
mod openapi;
mod panel;
mod salesforce;
mod scaleout;
mod sign_in;
mod sipgate;
mod streams;
mod tryton;
mod workflows;
