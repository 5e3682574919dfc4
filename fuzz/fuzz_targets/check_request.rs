//! CheckRequest bytes from the wire -> decode -> the Check service: never a panic, never an
//! allow (no valid token exists), and every denial carries a status and a body.
#![no_main]

#[path = "shared.rs"]
mod shared;

use std::sync::{Arc, OnceLock};

use authz::check::CheckService;
use envoy_types::ext_authz::v3::pb::{Authorization, CheckRequest, HttpResponse};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|bytes: &[u8]| {
    let Ok(request) = CheckRequest::decode(bytes) else {
        return;
    };
    let fixture = shared::fixture();
    static SERVICE: OnceLock<CheckService> = OnceLock::new();
    let service =
        SERVICE.get_or_init(|| CheckService::new(&fixture.config, Arc::clone(&fixture.authorizer)));
    let response = fixture
        .runtime
        .block_on(service.check(tonic::Request::new(request)));
    if let Ok(response) = response {
        let response = response.into_inner();
        let code = response.status.as_ref().map(|s| s.code).unwrap_or_default();
        assert_ne!(code, 0, "allowed a request no one could have signed");
        match response.http_response {
            Some(HttpResponse::DeniedResponse(denied)) => {
                assert!(denied.status.is_some() && !denied.body.is_empty());
            }
            other => panic!("a denial without a denied response: {other:?}"),
        }
    }
});
