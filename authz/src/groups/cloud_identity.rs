//! Cloud Identity Groups API: `groups:lookup` (group email -> `groups/{id}`, cached) and
//! `memberships:checkTransitiveMembership` (nesting across domains).

use std::{sync::Arc, time::Duration};

use moka::future::Cache;
use reqwest::StatusCode;
use serde::Deserialize;
use url::Url;

use super::{Api, GroupsError, classify, read_json, unreachable};
use crate::{
    metrics::{GoogleEndpoint, Metrics},
    secret_string::SecretString,
    service_auth::ServiceAuth,
};

pub(crate) const SCOPE: &str = "https://www.googleapis.com/auth/cloud-identity.groups.readonly";

/// Group ids do not change for a group's life; an hour bounds the effect of a re-created group.
const GROUP_NAME_TTL: Duration = Duration::from_secs(3600);
const GROUP_NAME_CAPACITY: u64 = 10_000;

#[derive(Debug)]
pub(crate) struct CloudIdentity {
    http: reqwest::Client,
    base: Url,
    auth: Arc<ServiceAuth>,
    metrics: Arc<Metrics>,
    /// Lower-cased group email -> `groups/{id}`; only found groups are kept.
    names: Cache<String, String>,
}

#[derive(Deserialize)]
struct LookupResponse {
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CheckResponse {
    has_membership: bool,
}

impl CloudIdentity {
    pub(crate) fn new(
        http: reqwest::Client,
        base: Url,
        auth: Arc<ServiceAuth>,
        metrics: Arc<Metrics>,
    ) -> CloudIdentity {
        CloudIdentity {
            http,
            base,
            auth,
            metrics,
            names: Cache::builder()
                .max_capacity(GROUP_NAME_CAPACITY)
                .time_to_live(GROUP_NAME_TTL)
                .build(),
        }
    }

    pub(crate) async fn is_member(&self, email: &str, group: &str) -> Result<bool, GroupsError> {
        let query = membership_query(email)?;
        let token = self.auth.token().await.map_err(GroupsError::Credentials)?;
        let Some(name) = self.group_name(&token, group).await? else {
            tracing::warn!(
                group,
                "Cloud Identity does not know this group; answering not a member (check the policy's group email)"
            );
            return Ok(false);
        };
        let mut url = self.url(["v1"]);
        if let Ok(mut path) = url.path_segments_mut() {
            path.extend(name.split('/'))
                .push("memberships:checkTransitiveMembership");
        }
        url.set_query(Some(&format!("query={}", encode_query_value(&query))));
        let response = self.send(&token, url).await?;
        match response.status() {
            StatusCode::OK => Ok(read_json::<CheckResponse>(Api::CloudIdentity, response)
                .await?
                .has_membership),
            StatusCode::NOT_FOUND => {
                // The group went away since we looked it up.
                self.names.invalidate(&group.to_lowercase()).await;
                Ok(false)
            }
            _ => Err(self.fail(response).await),
        }
    }

    /// `groups/{id}` for a group email, from the cache or `groups:lookup` (one call per group
    /// however many wait); `None` when Google does not know the group.
    async fn group_name(
        &self,
        token: &SecretString,
        group: &str,
    ) -> Result<Option<String>, GroupsError> {
        let key = group.to_lowercase();
        let found = self
            .names
            .try_get_with(key, async {
                let mut url = self.url(["v1", "groups:lookup"]);
                url.query_pairs_mut().append_pair("groupKey.id", group);
                let response = self.send(token, url).await.map_err(NameError::Failed)?;
                match response.status() {
                    StatusCode::OK => {
                        let found: LookupResponse = read_json(Api::CloudIdentity, response)
                            .await
                            .map_err(NameError::Failed)?;
                        valid_group_name(&found.name)
                            .then_some(found.name)
                            .ok_or_else(|| {
                                NameError::Failed(GroupsError::Unavailable {
                                    api: Api::CloudIdentity,
                                    problem: "groups:lookup answered a malformed group name".into(),
                                })
                            })
                    }
                    // Not found is not cached here (moka keeps only successes); the membership
                    // cache keeps the "not a member" answer for its negative TTL.
                    StatusCode::NOT_FOUND => Err(NameError::NotFound),
                    _ => Err(NameError::Failed(self.fail(response).await)),
                }
            })
            .await;
        match found {
            Ok(name) => Ok(Some(name)),
            Err(error) => match &*error {
                NameError::NotFound => Ok(None),
                NameError::Failed(error) => Err(error.clone()),
            },
        }
    }

    fn url<const N: usize>(&self, segments: [&str; N]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    async fn send(&self, token: &SecretString, url: Url) -> Result<reqwest::Response, GroupsError> {
        let send = self.http.get(url).bearer_auth(token.expose()).send();
        (self.metrics)
            .google_http(GoogleEndpoint::CloudIdentity, send)
            .await
            .map_err(|e| unreachable(Api::CloudIdentity, &e))
    }

    async fn fail(&self, response: reqwest::Response) -> GroupsError {
        let error = classify(Api::CloudIdentity, response).await;
        if let GroupsError::Forbidden { status: 401, .. } = error {
            self.auth.forget_token();
        }
        error
    }
}

/// Why `groups:lookup` gave no name.
enum NameError {
    NotFound,
    Failed(GroupsError),
}

fn valid_group_name(name: &str) -> bool {
    name.strip_prefix("groups/").is_some_and(|id| {
        !id.is_empty()
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

/// `member_key_id == 'email'`, as the API's CEL filter wants it. The email goes in a CEL string
/// literal; single quotes unless the email holds one (Workspace allows apostrophes), then
/// double quotes. An email that fits in neither, or holds a backslash or control character,
/// cannot be quoted safely and is refused.
pub(crate) fn membership_query(email: &str) -> Result<String, GroupsError> {
    if email.is_empty() || email.chars().any(|c| c.is_control() || c == '\\') {
        return Err(GroupsError::UnsupportedEmail);
    }
    let quote = match (email.contains('\''), email.contains('"')) {
        (false, _) => '\'',
        (true, false) => '"',
        (true, true) => return Err(GroupsError::UnsupportedEmail),
    };
    Ok(format!("member_key_id == {quote}{email}{quote}"))
}

/// Percent-encodes a query value; spaces become `%20`, not `+`.
pub(crate) fn encode_query_value(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}
