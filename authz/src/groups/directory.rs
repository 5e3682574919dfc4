//! Admin SDK Directory API: `members.hasMember` (nested membership within the domain), and
//! `members.get` for members from outside the domain, where `hasMember` answers 400; `users.get`
//! for a policy's organizational units (and whether the account is active).

use std::sync::Arc;

use reqwest::StatusCode;
use serde::Deserialize;
use url::Url;

use super::{Api, GroupsError, classify, read_json, unreachable};
use crate::{
    metrics::{GoogleEndpoint, Metrics},
    secret_string::SecretString,
    service_auth::ServiceAuth,
};

pub(crate) const SCOPE: &str =
    "https://www.googleapis.com/auth/admin.directory.group.member.readonly";
/// [`SCOPE`] and reading user accounts, for policies with `org_units` (space-separated, as the
/// token request wants them). The delegation must grant both.
pub(crate) const SCOPES_WITH_USERS: &str = "https://www.googleapis.com/auth/admin.directory.group.member.readonly \
     https://www.googleapis.com/auth/admin.directory.user.readonly";

#[derive(Debug)]
pub(crate) struct Directory {
    http: reqwest::Client,
    base: Url,
    auth: Arc<ServiceAuth>,
    metrics: Arc<Metrics>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HasMember {
    is_member: bool,
}

#[derive(Deserialize)]
struct Member {
    status: Option<String>,
}

/// The fields of a `users.get` answer that decide.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct User {
    #[serde(default)]
    suspended: bool,
    #[serde(default)]
    archived: bool,
    #[serde(default)]
    org_unit_path: Option<String>,
}

impl Directory {
    pub(crate) fn new(
        http: reqwest::Client,
        base: Url,
        auth: Arc<ServiceAuth>,
        metrics: Arc<Metrics>,
    ) -> Directory {
        Directory {
            http,
            base,
            auth,
            metrics,
        }
    }

    pub(crate) async fn is_member(&self, email: &str, group: &str) -> Result<bool, GroupsError> {
        let token = self.auth.token().await.map_err(GroupsError::Credentials)?;
        let response = self.get(&token, group, &["hasMember", email]).await?;
        match response.status() {
            StatusCode::OK => Ok(read_json::<HasMember>(Api::Directory, response)
                .await?
                .is_member),
            // "Invalid Input": the member is outside the group's domain, where hasMember does
            // not answer. members.get sees direct members only, which is what such a member
            // can be.
            StatusCode::BAD_REQUEST => self.direct_member(&token, email, group).await,
            StatusCode::NOT_FOUND => {
                tracing::warn!(
                    group,
                    "Directory API does not know this group; answering not a member (check the policy's group email)"
                );
                Ok(false)
            }
            _ => Err(self.fail(response).await),
        }
    }

    /// `users.get`: whether the account exists in the tenant, is neither suspended nor
    /// archived, and sits in `unit` or below it (case-insensitive, by whole path segments).
    pub(crate) async fn active_in_org_unit(
        &self,
        email: &str,
        unit: &str,
    ) -> Result<bool, GroupsError> {
        let token = self.auth.token().await.map_err(GroupsError::Credentials)?;
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty()
                .extend(["admin", "directory", "v1", "users", email]);
        }
        let send = self.http.get(url).bearer_auth(token.expose()).send();
        let response = (self.metrics)
            .google_http(GoogleEndpoint::Directory, send)
            .await
            .map_err(|e| unreachable(Api::Directory, &e))?;
        match response.status() {
            StatusCode::OK => {
                let user: User = read_json(Api::Directory, response).await?;
                let path = user.org_unit_path.unwrap_or_else(|| "/".into());
                Ok(!user.suspended && !user.archived && within(&path, unit))
            }
            // Not an account of the tenant (deleted, consumer, another domain's).
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.fail(response).await),
        }
    }

    /// `members.get`: a member only when listed and ACTIVE (not SUSPENDED, not invited).
    async fn direct_member(
        &self,
        token: &SecretString,
        email: &str,
        group: &str,
    ) -> Result<bool, GroupsError> {
        let response = self.get(token, group, &["members", email]).await?;
        match response.status() {
            StatusCode::OK => {
                let member: Member = read_json(Api::Directory, response).await?;
                Ok(member.status.as_deref() == Some("ACTIVE"))
            }
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.fail(response).await),
        }
    }

    /// `GET {base}/admin/directory/v1/groups/{group}/{tail...}`, each segment percent-encoded.
    async fn get(
        &self,
        token: &SecretString,
        group: &str,
        tail: &[&str],
    ) -> Result<reqwest::Response, GroupsError> {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty()
                .extend(["admin", "directory", "v1", "groups", group])
                .extend(tail);
        }
        let send = self.http.get(url).bearer_auth(token.expose()).send();
        (self.metrics)
            .google_http(GoogleEndpoint::Directory, send)
            .await
            .map_err(|e| unreachable(Api::Directory, &e))
    }

    async fn fail(&self, response: reqwest::Response) -> GroupsError {
        let error = classify(Api::Directory, response).await;
        if let GroupsError::Forbidden { status: 401, .. } = error {
            // Our token may have been revoked: get a new one next time.
            self.auth.forget_token();
        }
        error
    }
}

/// Whether `path` is the organizational unit `unit` or one of its sub-units.
fn within(path: &str, unit: &str) -> bool {
    let (path, unit) = (
        path.to_lowercase(),
        unit.trim_end_matches('/').to_lowercase(),
    );
    unit.is_empty()
        || path == unit
        || path
            .strip_prefix(&unit)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::within;

    #[test]
    fn sub_units_are_within_by_whole_segments() {
        assert!(within("/Engineering", "/engineering"));
        assert!(within("/Engineering/SRE", "/Engineering"));
        assert!(within("/Sales", "/"));
        assert!(within("/", "/"));
        assert!(!within("/Engineering-Contractors", "/Engineering"));
        assert!(!within("/", "/Engineering"));
        assert!(!within("/Sales", "/Engineering"));
    }
}
