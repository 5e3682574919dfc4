//! Admin SDK Directory API: `members.hasMember` (nested membership within the domain), and
//! `members.get` for members from outside the domain, where `hasMember` answers 400.

use std::sync::Arc;

use reqwest::StatusCode;
use serde::Deserialize;
use url::Url;

use super::{Api, GroupsError, classify, read_json, unreachable};
use crate::{
    metrics::{GoogleEndpoint, Metrics},
    service_auth::{SecretString, ServiceAuth},
};

pub(crate) const SCOPE: &str =
    "https://www.googleapis.com/auth/admin.directory.group.member.readonly";

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
