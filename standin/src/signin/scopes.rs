//! The sign-in scopes Google grants: `openid`, `email` and `profile`, each of the latter two also
//! accepted under its long name. Google reports the long names at the token endpoint and in
//! tokeninfo; the redirect back to the client lists both spellings.

/// The long name of `email`.
pub(crate) const EMAIL: &str = "https://www.googleapis.com/auth/userinfo.email";
/// The long name of `profile`.
pub(crate) const PROFILE: &str = "https://www.googleapis.com/auth/userinfo.profile";

/// The scopes of one authorization request. Sign-in without `openid` gets no ID token, which
/// is of no use to the relying parties the stand-in plays Google for: it is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scopes {
    /// Whether `email` was asked for (as `email` or its long name): the ID token and userinfo
    /// then carry `email` and `email_verified`.
    pub(crate) email: bool,
    /// Whether `profile` was asked for: the ID token and userinfo then carry `name`.
    pub(crate) profile: bool,
    /// The short names the request used, as the redirect echoes them.
    short: Vec<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ScopeError {
    #[error("scope must contain openid")]
    NoOpenid,
    #[error("unknown scope")]
    Unknown,
}

impl Scopes {
    /// `scope` as an authorization request carries it: space-separated, any order.
    pub(crate) fn parse(scope: &str) -> Result<Self, ScopeError> {
        let (mut openid, mut email, mut profile) = (false, false, false);
        let mut short = Vec::new();
        for item in scope.split(' ').filter(|s| !s.is_empty()) {
            match item {
                "openid" => openid = true,
                EMAIL => email = true,
                PROFILE => profile = true,
                "email" => {
                    email = true;
                    push_once(&mut short, "email");
                }
                "profile" => {
                    profile = true;
                    push_once(&mut short, "profile");
                }
                _ => return Err(ScopeError::Unknown),
            }
        }
        if !openid {
            return Err(ScopeError::NoOpenid);
        }
        Ok(Self {
            email,
            profile,
            short,
        })
    }

    /// The granted scopes as the token endpoint and tokeninfo report them:
    /// `openid https://www.googleapis.com/auth/userinfo.email ...`.
    pub(crate) fn granted(&self) -> String {
        let mut scopes = vec!["openid"];
        scopes.extend(self.long_names());
        scopes.join(" ")
    }

    /// The `scope` parameter of the redirect back to the client: the short names asked for,
    /// the long names, then `openid` (the order Google uses).
    pub(crate) fn redirect_param(&self) -> String {
        let mut scopes = self.short.clone();
        scopes.extend(self.long_names());
        scopes.push("openid");
        scopes.join(" ")
    }

    fn long_names(&self) -> impl Iterator<Item = &'static str> {
        [(self.email, EMAIL), (self.profile, PROFILE)]
            .into_iter()
            .filter_map(|(asked, name)| asked.then_some(name))
    }
}

fn push_once(names: &mut Vec<&'static str>, name: &'static str) {
    if !names.contains(&name) {
        names.push(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_report() {
        let scopes = Scopes::parse("email openid").unwrap();
        assert!(scopes.email && !scopes.profile);
        assert_eq!(scopes.granted(), format!("openid {EMAIL}"));
        assert_eq!(scopes.redirect_param(), format!("email {EMAIL} openid"));

        let scopes = Scopes::parse(&format!("openid  {PROFILE} email email")).unwrap();
        assert!(scopes.email && scopes.profile);
        assert_eq!(scopes.granted(), format!("openid {EMAIL} {PROFILE}"));
        assert_eq!(
            scopes.redirect_param(),
            format!("email {EMAIL} {PROFILE} openid")
        );

        let scopes = Scopes::parse("openid").unwrap();
        assert!(!scopes.email && !scopes.profile);
        assert_eq!(scopes.granted(), "openid");
        assert_eq!(scopes.redirect_param(), "openid");
    }

    #[test]
    fn refused() {
        for (scope, error) in [
            ("", ScopeError::NoOpenid),
            ("email profile", ScopeError::NoOpenid),
            (
                "openid https://www.googleapis.com/auth/drive",
                ScopeError::Unknown,
            ),
            ("openid OpenID", ScopeError::Unknown),
            ("openid\temail", ScopeError::Unknown),
        ] {
            assert_eq!(Scopes::parse(scope), Err(error), "{scope:?}");
        }
    }
}
