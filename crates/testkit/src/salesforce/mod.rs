//! A Salesforce org in memory behind the REST API, for contract tests and the benchmark.
//!
//! Two listeners, as in real life: the login server (`login_url`, the OAuth token endpoint
//! `/services/oauth2/token`, Salesforce flavour) and the org's own instance (`instance_url`,
//! `/services/data/vNN.N/…`), which the token answer names. The instance serves the subset of
//! the REST API the adapter uses and refuses what Salesforce refuses, with Salesforce's error
//! bodies (`[{"message":…,"errorCode":…,"fields":[…]}]`):
//!
//! - SOQL `query` (`SELECT … FROM … [WHERE …] [ORDER BY …] [LIMIT n] [OFFSET n]`, paging
//!   through `nextRecordsUrl`; a query locator expires after 15 minutes of inactivity and at
//!   most 10 are open, the oldest released first → 400 `INVALID_QUERY_LOCATOR`), unknown fields → 400 `INVALID_FIELD`, a quoted datetime or an
//!   unquoted string → 400 `INVALID_FIELD`, `AND` mixed with `OR` without parentheses → 400
//!   `MALFORMED_QUERY`, a field selected twice → 400 `MALFORMED_QUERY`;
//! - SOSL `search` (`FIND {…} IN PHONE FIELDS RETURNING Obj(fields [LIMIT n]), … [LIMIT n]`),
//!   unescaped reserved characters in the search term → 400 `MALFORMED_SEARCH`;
//! - sObject rows (`POST`, `GET`, `PATCH`, `DELETE`), upsert by external id on `Task` only
//!   for the configured external id field, `sobjects/{Object}/deleted/` (seconds ignored, a
//!   window of a minute or less, a start older than 15 days or than a purged Recycle Bin →
//!   400 `INVALID_REPLICATION_DATE`);
//! - Composite (≤ 25 subrequests, `allOrNone`), counted as one API call.
//!
//! Writes are checked like Salesforce checks them: unknown or read-only fields, required
//! fields, fields set on create only (`TaskSubtype` in an update → 400
//! `INVALID_FIELD_FOR_INSERT_UPDATE`, also when an upsert finds the record), text lengths
//! (`STRING_TOO_LONG`), restricted picklists (`CallType`, `TaskSubtype`), numbers and
//! dates, and references (`WhoId` must be a Contact or Lead, `WhatId` an Account, `OwnerId`
//! a User; a wrong kind of id → `FIELD_INTEGRITY_EXCEPTION`, a missing record →
//! `INVALID_CROSS_REFERENCE_KEY`; a Task whose `WhoId` is a Lead cannot have a `WhatId` →
//! `FIELD_INTEGRITY_EXCEPTION`, also when an update adds one of the two).
//!
//! **Phone search rule.** Salesforce indexes phone fields by their digits, so formatting
//! never matters. This server matches a search word against a stored phone value when, with
//! every non-digit removed from both, one digit string ends with the other and the shorter
//! one has at least 7 digits. That is looser than an exact digit match on purpose: a search
//! for the national digits `3012345678` also hits `+43 30 12345678`, the kind of false hit a
//! client must weed out.
//!
//! Every answer from the instance carries `Sforce-Limit-Info: api-usage=n/15000`, where `n`
//! counts API calls served (a Composite is one call). When the allocation is used up
//! ([`SalesforceServer::set_api_limit`]) the instance answers 403 `REQUEST_LIMIT_EXCEEDED`.


mod changes;
mod composite;
mod org;
mod query;
mod reply;
mod routes;
mod rows;
mod schema;
mod server;
mod soql;
mod sosl;

pub use org::{DEFAULT_API_LIMIT, DEFAULT_EXTERNAL_ID_FIELD, DEFAULT_PAGE_SIZE, INTEGRATION_USER};
pub use server::{CLIENT_ID, CLIENT_SECRET, SalesforceServer};
