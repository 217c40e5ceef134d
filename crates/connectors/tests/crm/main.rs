//! Contract tests of the CRM adapters: Dataverse and Salesforce against test servers that
//! follow their documented wire formats (crates/testkit), Tryton against a real `trytond`.

mod dataverse;
mod redirects;
mod salesforce;
mod tryton;
