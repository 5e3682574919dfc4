use super::*;

const JWT: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln";

fn check(header: Option<&[u8]>, path: &str, expected: Result<Credential<'_>, CredentialError>) {
    assert_eq!(
        extract(header, path),
        expected,
        "header {header:?} path {path:?}"
    );
}

#[test]
fn bearer_scheme_is_case_insensitive() {
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let header = format!("{scheme} {JWT}");
        check(Some(header.as_bytes()), "/mcp", Ok(Credential::Jwt(JWT)));
    }
}

#[test]
fn jwt_and_opaque_tokens_are_told_apart() {
    check(
        Some(b"Bearer ya29.a0AfB_byC-x~y+z/0="),
        "/mcp",
        Ok(Credential::Opaque("ya29.a0AfB_byC-x~y+z/0=")),
    );
    check(Some(b"Bearer a.b.c"), "/", Ok(Credential::Jwt("a.b.c")));
    // Two dots but an empty or non-base64url segment is not a JWT; it is still token-shaped.
    check(Some(b"Bearer a..c"), "/", Ok(Credential::Opaque("a..c")));
}

#[test]
fn rejections() {
    use CredentialError::*;
    let long = format!("Bearer {}", "a".repeat(64 * 1024));
    let long_opaque = format!("Bearer {}", "a".repeat(3000));
    let cases: &[(Option<&[u8]>, &str, CredentialError)] = &[
        (None, "/mcp", Missing),
        (Some(b"Bearer "), "/mcp", Missing),
        (Some(b"Bearer"), "/mcp", Missing),
        (Some(b"Bearerabc"), "/mcp", NotBearer),
        (Some(b"Basic dXNlcjpwYXNz"), "/mcp", NotBearer),
        (Some(b"Token abc"), "/mcp", NotBearer),
        (Some(b"Bearer \xff\xfe"), "/mcp", NotUtf8),
        (Some(long.as_bytes()), "/mcp", TooLong),
        (Some(long_opaque.as_bytes()), "/mcp", BadCharacters),
        (Some(b"Bearer a b"), "/mcp", BadCharacters),
        (Some(b"Bearer abc,Bearer def"), "/mcp", BadCharacters),
        (Some(b"Bearer <script>"), "/mcp", BadCharacters),
        (Some(b"Bearer abc"), "/mcp?access_token=abc", InQueryString),
        (None, "/mcp?x=1&access_token=abc", InQueryString),
        (None, "/mcp?access%5Ftoken=abc", InQueryString),
    ];
    for (header, path, expected) in cases {
        check(*header, path, Err(*expected));
    }
}

#[test]
fn other_query_parameters_are_fine() {
    check(
        Some(format!("Bearer {JWT}").as_bytes()),
        "/mcp?session=1&token=2",
        Ok(Credential::Jwt(JWT)),
    );
}

#[test]
fn only_missing_counts_as_not_presented() {
    assert!(!CredentialError::Missing.token_presented());
    assert!(CredentialError::BadCharacters.token_presented());
}
