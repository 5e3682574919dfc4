//! The access decision for a verified principal. Pure: no IO, cannot fail, cheap enough to run
//! on every request.

use crate::principal::Principal;

/// Who may pass, as configured.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    /// Allowed Workspace domains, lower-cased (DNS names are case-insensitive).
    domains: Vec<String>,
}

/// Why a valid token is still refused (a 403).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Forbidden {
    #[error("the account's email address is not verified")]
    EmailNotVerified,
    #[error("the account does not belong to a Google Workspace domain")]
    NoHostedDomain,
    #[error("the account's Workspace domain is not allowed")]
    DomainNotAllowed,
}

impl Forbidden {
    pub fn reason(self) -> &'static str {
        match self {
            Forbidden::EmailNotVerified => "email_not_verified",
            Forbidden::NoHostedDomain => "no_hosted_domain",
            Forbidden::DomainNotAllowed => "domain_not_allowed",
        }
    }
}

impl AccessPolicy {
    pub fn new(domains: &[String]) -> AccessPolicy {
        AccessPolicy {
            domains: domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
        }
    }

    /// Allows a principal whose verified account belongs to an allowed Workspace domain.
    ///
    /// The domain comes from `hd` only. A consumer account can register any email address,
    /// including one at the company's domain, so the email suffix proves nothing.
    pub fn decide(&self, principal: &Principal) -> Result<(), Forbidden> {
        if !principal.email_verified {
            return Err(Forbidden::EmailNotVerified);
        }
        let domain = principal
            .hosted_domain
            .as_deref()
            .ok_or(Forbidden::NoHostedDomain)?;
        if self.domains.iter().any(|d| d.eq_ignore_ascii_case(domain)) {
            Ok(())
        } else {
            Err(Forbidden::DomainNotAllowed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::TokenSource;

    fn principal(email: &str, hd: Option<&str>, verified: bool) -> Principal {
        Principal {
            sub: "1".into(),
            email: Some(email.into()),
            email_verified: verified,
            hosted_domain: hd.map(String::from),
            expires_at: u64::MAX,
            source: TokenSource::GoogleIdToken,
        }
    }

    #[test]
    fn decisions() {
        let policy = AccessPolicy::new(&["Example.com".into(), "corp.example.org".into()]);
        let cases = [
            (
                principal("a@example.com", Some("example.com"), true),
                Ok(()),
            ),
            (
                principal("a@example.com", Some("EXAMPLE.COM"), true),
                Ok(()),
            ),
            (
                principal("a@other.com", Some("corp.example.org"), true),
                Ok(()),
            ),
            // The email suffix looks right, but a consumer account has no hd.
            (
                principal("a@example.com", None, true),
                Err(Forbidden::NoHostedDomain),
            ),
            (
                principal("a@example.com", Some("evil.com"), true),
                Err(Forbidden::DomainNotAllowed),
            ),
            (
                principal("a@example.com", Some("sub.example.com"), true),
                Err(Forbidden::DomainNotAllowed),
            ),
            (
                principal("a@example.com", Some("example.com"), false),
                Err(Forbidden::EmailNotVerified),
            ),
        ];
        for (p, expected) in cases {
            assert_eq!(policy.decide(&p), expected, "{p:?}");
        }
    }

    proptest::proptest! {
        /// The decision is exactly "verified email and an allowed hd"; the email never matters.
        #[test]
        fn only_hd_and_verification_decide(
            domain in "[a-z]{1,8}\\.(com|org)",
            hd in proptest::option::of("[a-zA-Z]{1,8}\\.(com|org|COM)"),
            local in "[a-z]{1,8}",
            verified: bool,
        ) {
            let policy = AccessPolicy::new(std::slice::from_ref(&domain));
            // The email is always at the allowed domain: it must make no difference.
            let p = principal(&format!("{local}@{domain}"), hd.as_deref(), verified);
            let allowed = verified && hd.as_deref().is_some_and(|h| h.eq_ignore_ascii_case(&domain));
            proptest::prop_assert_eq!(policy.decide(&p).is_ok(), allowed);
        }
    }
}
