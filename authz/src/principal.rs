//! Who a verified token speaks for: the one identity type the rest of the service sees.

use std::{
    sync::atomic::{AtomicU8, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

/// A user whose token verified. Nothing here is secret; the token itself is never kept.
///
/// The cache holds one per cached token, so it is packed: `sub`, `email`, `hd`, and for our own
/// tokens the session id, audience and client, end to end in one string, 56 bytes of fields
/// beside it (a struct of
/// `String`s took ~220 bytes in four allocations). Build one from [`Parts`]; read it through the accessors.
pub struct Principal {
    text: Box<str>,
    /// Where `sub`, `email`, `hd`, the session id, the audience and the client end in `text`;
    /// the client's name is the rest.
    ends: [u32; 6],
    /// Which of email, hd, session, audience, client and client name are present.
    present: u8,
    pub email_verified: bool,
    pub source: TokenSource,
    /// When the token stops being valid (unix seconds); no cached verdict outlives it.
    pub expires_at: u64,
    /// Verdicts cached for this identity (one per token): bounded, so that one valid token
    /// with endless tool names or methods cannot flood the verdict cache. Not part of the
    /// identity: ignored by `==` and reset by `clone`.
    verdicts_cached: AtomicU8,
}

/// How many verdicts one token may have cached at once (per identity-cache lifetime); past it,
/// decisions for new (route, method, tool) combinations are computed but not cached.
pub const MAX_VERDICTS_PER_TOKEN: u8 = 64;

impl Clone for Principal {
    fn clone(&self) -> Principal {
        Principal {
            text: self.text.clone(),
            ends: self.ends,
            present: self.present,
            email_verified: self.email_verified,
            source: self.source,
            expires_at: self.expires_at,
            verdicts_cached: AtomicU8::new(0),
        }
    }
}

impl PartialEq for Principal {
    fn eq(&self, other: &Principal) -> bool {
        self.parts() == other.parts()
            && (self.audience(), self.client(), self.client_name())
                == (other.audience(), other.client(), other.client_name())
    }
}

impl Eq for Principal {}

const EMAIL: u8 = 1;
const HOSTED_DOMAIN: u8 = 2;
const SESSION: u8 = 4;
const AUDIENCE: u8 = 8;
const CLIENT: u8 = 16;
const CLIENT_NAME: u8 = 32;

/// What a token our facade issued adds to the identity: the one resource it is valid at, and
/// the application it was issued to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Issued<'a> {
    /// The protected resource's URL (`aud`).
    pub audience: &'a str,
    /// Which client holds it, for audit: a metadata-document URL, or a short form of a
    /// registered client id.
    pub client: &'a str,
    /// The name the client gave itself (not verified).
    pub client_name: Option<&'a str>,
}

/// What a verified token says about its user, borrowed; [`Principal::new`] packs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts<'a> {
    /// Google's stable user id. Key users on this, not on `email`, which can change.
    pub sub: &'a str,
    pub email: Option<&'a str>,
    pub email_verified: bool,
    /// The Google Workspace domain (`hd`). Absent for consumer accounts, whatever their email.
    pub hosted_domain: Option<&'a str>,
    pub expires_at: u64,
    pub source: TokenSource,
    /// The sign-in session (refresh-token family) a token of ours belongs to; revoking the
    /// session refuses its access tokens at once. `None` for Google's tokens.
    pub session: Option<&'a str>,
}

impl Principal {
    pub fn new(parts: Parts<'_>) -> Principal {
        Principal::packed(parts, None)
    }

    /// A principal of a token our facade issued: valid only at its audience (the authorizer
    /// refuses it anywhere else), held by a known client.
    pub fn issued(parts: Parts<'_>, issued: Issued<'_>) -> Principal {
        Principal::packed(parts, Some(issued))
    }

    fn packed(parts: Parts<'_>, issued: Option<Issued<'_>>) -> Principal {
        let pieces = [
            parts.sub,
            parts.email.unwrap_or_default(),
            parts.hosted_domain.unwrap_or_default(),
            parts.session.unwrap_or_default(),
            issued.map(|i| i.audience).unwrap_or_default(),
            issued.map(|i| i.client).unwrap_or_default(),
            issued.and_then(|i| i.client_name).unwrap_or_default(),
        ];
        let text: Box<str> = pieces.concat().into();
        let mut ends = [0u32; 6];
        let mut end = 0usize;
        for (slot, piece) in ends.iter_mut().zip(pieces) {
            end += piece.len();
            // Claims this long were refused long before (a token is at most a few KiB).
            *slot = u32::try_from(end).unwrap_or(u32::MAX);
        }
        let present = [
            (parts.email.is_some(), EMAIL),
            (parts.hosted_domain.is_some(), HOSTED_DOMAIN),
            (parts.session.is_some(), SESSION),
            (issued.is_some(), AUDIENCE),
            (issued.is_some(), CLIENT),
            (issued.is_some_and(|i| i.client_name.is_some()), CLIENT_NAME),
        ]
        .iter()
        .filter(|(is, _)| *is)
        .fold(0, |bits, (_, bit)| bits | bit);
        Principal {
            text,
            ends,
            present,
            email_verified: parts.email_verified,
            source: parts.source,
            expires_at: parts.expires_at,
            verdicts_cached: AtomicU8::new(0),
        }
    }

    /// Claims a place for one more cached verdict of this identity; `false` once
    /// [`MAX_VERDICTS_PER_TOKEN`] are taken.
    pub fn may_cache_a_verdict(&self) -> bool {
        self.verdicts_cached
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < MAX_VERDICTS_PER_TOKEN).then_some(n + 1)
            })
            .is_ok()
    }

    /// Everything, borrowed: for logs, tests and building a changed copy.
    pub fn parts(&self) -> Parts<'_> {
        Parts {
            sub: self.sub(),
            email: self.email(),
            email_verified: self.email_verified,
            hosted_domain: self.hosted_domain(),
            expires_at: self.expires_at,
            source: self.source,
            session: self.session(),
        }
    }

    pub fn sub(&self) -> &str {
        self.piece(0)
    }

    pub fn email(&self) -> Option<&str> {
        (self.present & EMAIL != 0).then(|| self.piece(1))
    }

    pub fn hosted_domain(&self) -> Option<&str> {
        (self.present & HOSTED_DOMAIN != 0).then(|| self.piece(2))
    }

    pub fn session(&self) -> Option<&str> {
        (self.present & SESSION != 0).then(|| self.piece(3))
    }

    /// The one resource this principal's token is for, if it is bound to one.
    pub fn audience(&self) -> Option<&str> {
        (self.present & AUDIENCE != 0).then(|| self.piece(4))
    }

    /// The client holding a token of ours (see [`Issued::client`]).
    pub fn client(&self) -> Option<&str> {
        (self.present & CLIENT != 0).then(|| self.piece(5))
    }

    /// The name that client gave itself, unverified.
    pub fn client_name(&self) -> Option<&str> {
        (self.present & CLIENT_NAME != 0).then(|| self.piece(6))
    }

    fn piece(&self, index: usize) -> &str {
        let start = index.checked_sub(1).map_or(0, |i| self.ends[i] as usize);
        let end = self
            .ends
            .get(index)
            .map_or(self.text.len(), |&e| e as usize);
        self.text.get(start..end).unwrap_or_default()
    }
}

impl std::fmt::Debug for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.parts().fmt(f)
    }
}

/// Which kind of token proved the identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    GoogleIdToken,
    GoogleAccessToken,
    /// An access token our OAuth facade issued (ES256, audience = our resource).
    Facade,
}

impl TokenSource {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenSource::GoogleIdToken => "google_id_token",
            TokenSource::GoogleAccessToken => "google_access_token",
            TokenSource::Facade => "facade",
        }
    }
}

/// Seconds since the Unix epoch, the unit every token uses.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_keeps_every_part_and_tells_absent_from_empty() {
        let parts = Parts {
            sub: "110169484474386276334",
            email: Some("ada@example.com"),
            email_verified: true,
            hosted_domain: Some("example.com"),
            expires_at: 1_700_000_000,
            source: TokenSource::Facade,
            session: Some("s-1"),
        };
        assert_eq!(Principal::new(parts).parts(), parts);
        let sparse = Parts {
            email: None,
            hosted_domain: Some(""),
            session: None,
            ..parts
        };
        assert_eq!(Principal::new(sparse).parts(), sparse);
        let unicode = Parts {
            sub: "é",
            email: Some("ü@ß.example"),
            hosted_domain: None,
            session: Some(""),
            ..parts
        };
        assert_eq!(Principal::new(unicode).parts(), unicode);
        assert_eq!(std::mem::size_of::<Principal>(), 56);
    }
}
