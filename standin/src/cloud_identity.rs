//! The Cloud Identity Groups API's lookup and transitive check (Google's
//! `https://cloudidentity.googleapis.com`).
//!
//! Unlike the Directory API these need no delegation: a service account holding the Group
//! Administrator role may call them. Transitive checks span domains, but only on premium
//! tenants (Enterprise or Cloud Identity Premium); others get 403.

use std::{collections::HashMap, sync::Arc};

use axum::{
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use serde_json::json;

use crate::{
    Shared,
    api_tokens::Principal,
    directory::opaque_id,
    google_error::{Family, api_error, insufficient_scopes, unauthenticated},
    now,
    routes::{gate, json_response},
    stats::Counter,
};

const SCOPES: [&str; 3] = [
    "https://www.googleapis.com/auth/cloud-identity.groups.readonly",
    "https://www.googleapis.com/auth/cloud-identity.groups",
    "https://www.googleapis.com/auth/cloud-platform",
];

fn permission_denied() -> Response {
    api_error(
        Family::Cloud,
        StatusCode::FORBIDDEN,
        "The caller does not have permission",
        "forbidden",
    )
}

fn not_found() -> Response {
    api_error(
        Family::Cloud,
        StatusCode::NOT_FOUND,
        "Requested entity was not found.",
        "notFound",
    )
}

fn invalid(message: &str) -> Response {
    api_error(
        Family::Cloud,
        StatusCode::BAD_REQUEST,
        message,
        "badRequest",
    )
}

/// `None` lets a group admin through: a service account with the role acting as itself, or a
/// delegated token for a Workspace admin.
fn refusal(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = shared.api_tokens.bearer(headers, now()) else {
        return Some(unauthenticated(Family::Cloud));
    };
    let allowed = match &token.principal {
        Principal::ServiceAccount {
            subject: Some(sub), ..
        } => shared.directory.is_admin(sub),
        Principal::ServiceAccount {
            email,
            subject: None,
        } => shared
            .accounts
            .get(email)
            .is_some_and(|account| account.group_admin),
        Principal::Federated { .. } => false,
    };
    if !allowed {
        return Some(permission_denied());
    }
    if !token.has_any_scope(&SCOPES) {
        return Some(insufficient_scopes(Family::Cloud));
    }
    None
}

/// `GET /v1/groups:lookup?groupKey.id=<email>` → `{"name": "groups/<id>"}`.
pub(crate) async fn lookup(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(faulted) = gate(&shared, Counter::CloudidentityLookup).await {
        return faulted;
    }
    if let Some(refused) = refusal(&shared, &headers) {
        return refused;
    }
    let Some(group) = query.get("groupKey.id").filter(|g| !g.is_empty()) else {
        return invalid("Request contains an invalid argument.");
    };
    if !shared.directory.group_exists(group) {
        return not_found();
    }
    json_response(
        StatusCode::OK,
        &json!({ "name": format!("groups/{}", opaque_id(group)) }),
    )
}

/// `GET /v1/groups/{id}/memberships:checkTransitiveMembership?query=member_key_id == 'x'` →
/// `{"hasMembership": bool}`.
pub(crate) async fn check_transitive(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(faulted) = gate(&shared, Counter::CloudidentityCheck).await {
        return faulted;
    }
    if let Some(refused) = refusal(&shared, &headers) {
        return refused;
    }
    if !shared.directory.premium() {
        return permission_denied();
    }
    let Some(member) = query.get("query").and_then(|q| member_key(q)) else {
        return invalid("Request contains an invalid argument.");
    };
    let Some(group) = shared.directory.group_by_id(&id) else {
        return not_found();
    };
    match shared.directory.is_transitive_member(&group, &member) {
        Some(has) => json_response(StatusCode::OK, &json!({ "hasMembership": has })),
        None => not_found(),
    }
}

/// The member of a `member_key_id == 'user@x'` query (single or double quotes).
fn member_key(query: &str) -> Option<String> {
    let rest = query.trim().strip_prefix("member_key_id")?.trim_start();
    let quoted = rest.strip_prefix("==")?.trim();
    let quote = quoted.chars().next().filter(|q| *q == '\'' || *q == '"')?;
    let inner = quoted.strip_prefix(quote)?.strip_suffix(quote)?;
    (!inner.is_empty() && !inner.contains(quote)).then(|| inner.to_owned())
}

#[cfg(test)]
mod tests {
    use super::member_key;

    #[test]
    fn member_key_queries() {
        assert_eq!(
            member_key("member_key_id == 'a@x.com'").as_deref(),
            Some("a@x.com")
        );
        assert_eq!(
            member_key(" member_key_id==\"a@x.com\" ").as_deref(),
            Some("a@x.com")
        );
        assert_eq!(member_key("member_key_id == 'a@x.com"), None);
        assert_eq!(member_key("member_key_id == ''"), None);
        assert_eq!(member_key("parent == 'a@x.com'"), None);
    }
}
