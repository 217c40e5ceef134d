//! A token endpoint that redirects: the client secret must not follow the redirect.

use std::time::Duration;

use cxbridge_connectors::client::http_client;
use cxbridge_connectors::client::oauth::{ClientCredentials, Secret, TokenCache};
use cxbridge_domain::crm::CrmError;
use cxbridge_testkit::oauth::{Flavor, TokenServer};

#[tokio::test]
async fn a_token_endpoint_answering_307_does_not_get_the_secret_resent_elsewhere() {
    // Where the redirect points: it would issue a token to whoever brings the secret.
    let elsewhere = TokenServer::new(Flavor::Entra, "client-1", "the-client-secret", None);
    let elsewhere_url = cxbridge_testkit::serve(elsewhere.router("/token")).await.expect("serve");
    let redirecting = TokenServer::new(Flavor::Entra, "client-1", "the-client-secret", None);
    redirecting.redirect_to(&format!("{elsewhere_url}/token"));
    let url = cxbridge_testkit::serve(redirecting.router("/token")).await.expect("serve");

    let credentials = ClientCredentials {
        token_url: format!("{url}/token"),
        client_id: "client-1".into(),
        client_secret: Secret::new("the-client-secret"),
        scope: None,
        default_lifetime: Duration::from_secs(3600),
    };
    let cache = TokenCache::new(http_client(), credentials);
    let err = cache.token().await.expect_err("a redirect is not a token");
    assert!(matches!(&err, CrmError::Permanent { message } if message.contains("307")), "{err}");
    assert_eq!((elsewhere.issued(), elsewhere.refused()), (0, 0), "the form with the client secret went to the redirect's target");
}
