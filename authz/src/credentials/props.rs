//! Properties of bearer extraction over arbitrary input.

use proptest::prelude::*;

use super::*;

proptest! {
    /// Whatever the header holds, extraction never panics, never returns more than the limits
    /// allow, and only ever returns a substring of the header.
    #[test]
    fn extraction_is_total_and_bounded(header in proptest::collection::vec(any::<u8>(), 0..12_000), path in ".{0,64}") {
        if let Ok(credential) = extract(Some(&header), &path) {
            let token = match credential { Credential::Jwt(t) | Credential::Opaque(t) => t };
            prop_assert!(token.len() <= MAX_TOKEN_LEN);
            prop_assert!(!token.is_empty());
            prop_assert!(!token.contains(' ') && !token.contains(','));
            let header = std::str::from_utf8(&header).unwrap();
            prop_assert!(header.contains(token));
        }
    }

    /// A query-string token is refused wherever it sits in the query and whatever the header.
    #[test]
    fn query_tokens_are_always_refused(
        before in "[a-z]{0,5}(=[a-z0-9]{0,5})?",
        token in "[A-Za-z0-9._-]{1,40}",
        header in proptest::option::of("Bearer [a-z]{1,20}"),
    ) {
        let path = if before.is_empty() {
            format!("/mcp?access_token={token}")
        } else {
            format!("/mcp?{before}&access_token={token}")
        };
        prop_assert_eq!(
            extract(header.as_deref().map(str::as_bytes), &path),
            Err(CredentialError::InQueryString)
        );
    }

    /// Well-formed bearer headers round-trip, whatever the scheme's case.
    #[test]
    fn bearer_tokens_round_trip(upper in proptest::collection::vec(any::<bool>(), 6), token in "[A-Za-z0-9._~+/-]{1,200}") {
        let scheme: String = "bearer".chars().zip(upper).map(|(c, u)| if u { c.to_ascii_uppercase() } else { c }).collect();
        let header = format!("{scheme} {token}");
        let credential = extract(Some(header.as_bytes()), "/mcp").unwrap();
        let got = match credential { Credential::Jwt(t) | Credential::Opaque(t) => t };
        prop_assert_eq!(got, token.as_str());
    }
}
