//! The Admin SDK Directory API (Google's `https://admin.googleapis.com`): the membership methods
//! `members.hasMember` and `members.get`, and `users.get`.
//!
//! All need a token for a Workspace admin, obtained by a service account through domain-wide
//! delegation (`sub`), with a group-reading scope (members) or a user-reading scope (users).

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use serde_json::json;

use crate::{
    Shared,
    api_tokens::Principal,
    directory::numeric_id,
    google_error::{Family, api_error, insufficient_scopes, unauthenticated},
    now,
    routes::{gate, json_response},
    stats::Counter,
};

/// The scopes that let a caller read group membership.
const SCOPES: [&str; 4] = [
    "https://www.googleapis.com/auth/admin.directory.group.member.readonly",
    "https://www.googleapis.com/auth/admin.directory.group.readonly",
    "https://www.googleapis.com/auth/admin.directory.group.member",
    "https://www.googleapis.com/auth/admin.directory.group",
];

/// The scopes that let a caller read user accounts.
const USER_SCOPES: [&str; 2] = [
    "https://www.googleapis.com/auth/admin.directory.user.readonly",
    "https://www.googleapis.com/auth/admin.directory.user",
];

/// `None` lets the request through: only an admin's delegated token with a group scope.
fn refusal(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    refusal_for(shared, headers, &SCOPES)
}

/// `None` lets the request through: only an admin's delegated token with one of `scopes`.
fn refusal_for(shared: &Shared, headers: &HeaderMap, scopes: &[&str]) -> Option<Response> {
    let Some(token) = shared.api_tokens.bearer(headers, now()) else {
        return Some(unauthenticated(Family::Admin));
    };
    let delegated = matches!(&token.principal,
        Principal::ServiceAccount { subject: Some(sub), .. } if shared.directory.is_admin(sub));
    if !delegated {
        return Some(api_error(
            Family::Admin,
            StatusCode::FORBIDDEN,
            "Not Authorized to access this resource/api",
            "forbidden",
        ));
    }
    if !token.has_any_scope(scopes) {
        return Some(insufficient_scopes(Family::Admin));
    }
    None
}

fn group_not_found() -> Response {
    api_error(
        Family::Admin,
        StatusCode::NOT_FOUND,
        "Resource Not Found: groupKey",
        "notFound",
    )
}

/// `GET /admin/directory/v1/groups/{groupKey}/hasMember/{memberKey}` → `{"isMember": bool}`,
/// nested groups included. A member outside the tenant's domains is a 400 "Invalid Input", as
/// Google answers when group and member are not in the same domain.
pub(crate) async fn has_member(
    State(shared): State<Arc<Shared>>,
    Path((group, member)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(faulted) = gate(&shared, Counter::DirectoryHasMember).await {
        return faulted;
    }
    if let Some(refused) = refusal(&shared, &headers) {
        return refused;
    }
    if !shared.directory.group_exists(&group) {
        return group_not_found();
    }
    if !shared.directory.owns(&member) {
        return api_error(
            Family::Admin,
            StatusCode::BAD_REQUEST,
            "Invalid Input",
            "invalid",
        );
    }
    match shared.directory.is_transitive_member(&group, &member) {
        Some(is_member) => json_response(StatusCode::OK, &json!({ "isMember": is_member })),
        None => group_not_found(),
    }
}

/// `GET /admin/directory/v1/groups/{groupKey}/members/{memberKey}` → the member resource of a
/// direct member (any domain), or 404.
pub(crate) async fn get_member(
    State(shared): State<Arc<Shared>>,
    Path((group, member)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(faulted) = gate(&shared, Counter::DirectoryMembersGet).await {
        return faulted;
    }
    if let Some(refused) = refusal(&shared, &headers) {
        return refused;
    }
    match shared.directory.direct_member(&group, &member) {
        Err(()) => group_not_found(),
        Ok(None) => api_error(
            Family::Admin,
            StatusCode::NOT_FOUND,
            "Resource Not Found: memberKey",
            "notFound",
        ),
        Ok(Some(found)) => {
            let mut body = json!({
                "kind": "admin#directory#member",
                "etag": format!("\"{}\"", numeric_id(&format!("etag:{}", found.email))),
                "id": numeric_id(&found.email),
                "email": found.email,
                "role": "MEMBER",
                "type": if found.is_group { "GROUP" } else { "USER" },
            });
            // Google reports a status for user members only.
            if !found.is_group {
                body["status"] = json!(found.status);
            }
            json_response(StatusCode::OK, &body)
        }
    }
}

/// `GET /admin/directory/v1/users/{userKey}` → the user resource of an account of the tenant
/// (by primary email): `primaryEmail`, `suspended`, `archived`, `orgUnitPath`. An account the
/// tenant does not have (a consumer account, a deleted one, another domain's) is a 404, as at
/// Google.
pub(crate) async fn get_user(
    State(shared): State<Arc<Shared>>,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(faulted) = gate(&shared, Counter::DirectoryUsersGet).await {
        return faulted;
    }
    if let Some(refused) = refusal_for(&shared, &headers, &USER_SCOPES) {
        return refused;
    }
    let found = shared.users.get(&user).filter(|account| {
        account
            .hd
            .as_deref()
            .is_some_and(|hd| shared.directory.owns(&format!("x@{hd}")))
    });
    let Some(account) = found else {
        return api_error(
            Family::Admin,
            StatusCode::NOT_FOUND,
            "Resource Not Found: userKey",
            "notFound",
        );
    };
    json_response(
        StatusCode::OK,
        &json!({
            "kind": "admin#directory#user",
            "id": account.sub,
            "primaryEmail": account.email,
            "suspended": account.suspended,
            "archived": account.archived,
            "orgUnitPath": account.org_unit,
            "isAdmin": shared.directory.is_admin(&account.email),
        }),
    )
}
