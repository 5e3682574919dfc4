//! JWT splitting, decoding and the verification entry, against real (stand-in) Google keys.
#![no_main]

#[path = "shared.rs"]
mod shared;

use authz::{credentials::Credential, errors::VerifyError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|token: &str| {
    let fixture = shared::fixture();
    let google = fixture.authorizer.google();
    // Both paths: the token as a JWT, and (when token-shaped) as an opaque access token.
    for credential in [Credential::Jwt(token), Credential::Opaque(token)] {
        let result = fixture.runtime.block_on(google.verify(credential));
        assert!(
            matches!(
                result,
                Err(VerifyError::Token(_)) | Err(VerifyError::Backend(_))
            ),
            "a token nobody signed was accepted: {result:?}"
        );
    }
});
