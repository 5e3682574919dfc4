//! The Authorization header and bearer extraction: any bytes, any path.
#![no_main]

use authz::credentials::{Credential, MAX_TOKEN_LEN, extract};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&[u8], &str)| {
    let (header, path) = input;
    if let Ok(credential) = extract(Some(header), path) {
        let token = match credential {
            Credential::Jwt(t) | Credential::Opaque(t) => t,
        };
        assert!(!token.is_empty() && token.len() <= MAX_TOKEN_LEN);
        let query = path.split_once('?').map(|(_, q)| q).unwrap_or_default();
        let query = query.split('#').next().unwrap_or_default();
        assert!(
            !query
                .split('&')
                .any(|pair| pair.starts_with("access_token=")),
            "query-string token accepted"
        );
        let header = std::str::from_utf8(header).expect("a token only comes from UTF-8");
        assert!(header.contains(token));
    }
});
