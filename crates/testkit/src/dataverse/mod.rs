//! A Dataverse Web API (OData v4, `/api/data/v9.2/`) with its Entra ID token endpoint, in
//! memory. It does what the hub's Dataverse adapter relies on, the way Dataverse does it, and
//! refuses what Dataverse refuses with Dataverse's error bodies
//! (`{"error":{"code":"0x…","message":"…"}}`):
//!
//! - 401 without a bearer token the token endpoint issued (scope `{url}/.default`).
//! - Queries: `$select`, `$filter` (`eq`/`ne`/`gt`/`ge`/`lt`/`le`, `contains`,
//!   `startswith`, `endswith`, `and`, `or`, `not`, parentheses; strings compared without
//!   regard to case like Dataverse's collation; types checked), `$top`, `$orderby`. Unknown
//!   columns → 400 "Could not find a property named …". `+` in a query is a space.
//! - Lookups: `_x_value` properties, written only through `nav@odata.bind` to an existing
//!   record; formatted-value and `lookuplogicalname` annotations when `Prefer` asks.
//! - Writes: `POST`, `PATCH` by id (`If-Match: *` → update only, `If-None-Match: *` →
//!   create only), `PATCH` by the activity tables' alternate key (upsert), `DELETE`;
//!   `Prefer: return=representation`; unknown or mistyped columns, too long text, read-only
//!   lookups, bad binds and activity parties → 400.
//! - Impersonation: `MSCRMCallerID` (a systemuserid) or `CallerObjectId` (an Entra object
//!   id) must name a user; the write is then created by that user and on behalf of the
//!   application user, as Dataverse records it.
//! - `$batch` (multipart/mixed, change sets atomic, at most 1,000 requests,
//!   `odata.continue-on-error`).
//! - Change tracking (`Prefer: odata.track-changes`, `odata.maxpagesize`, next and delta
//!   links, `$deletedEntity`), only on tables where it is on. Delta tokens expire after
//!   `Organization.ExpireChangeTrackingInDays` (7 by default) with 400 `0x80044352`
//!   ExpiredVersionStamp; [`DataverseServer::pass_days`] moves the server's clock on.
//! - `activitypointers`: every activity, for timelines.
//!
//! Not modelled: `$expand`, `$count`, `$apply`, FetchXML, functions and actions, paging of
//! plain queries beyond `$top`, and paging of delta answers.

mod batch;
mod changes;
mod query;
mod routes;
mod server;
mod standard;
mod tables;
mod wire;
mod writes;

pub use batch::MAX_BATCH;
pub use server::{CLIENT_ID, CLIENT_SECRET, DataverseServer, TENANT_ID};
pub use standard::ACTIVITY_KEY;
pub use tables::{AGENT_OBJECT_ID, AGENT_USER_ID, APP_USER_ID, OTHER_AGENT_USER_ID};
pub use wire::API_PATH;
