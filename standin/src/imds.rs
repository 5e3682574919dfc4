//! A tiny AWS instance-metadata server, so a Google `external_account` credential with an
//! `aws1` source can find its region and credentials here: it hands out the keys of the most
//! recently registered workload-identity binding. Not a Google endpoint: neither counted nor
//! faulted.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    http::{StatusCode, header},
    response::{IntoResponse as _, Response},
};
use serde_json::json;

use crate::{Shared, clock::rfc3339, now, routes::json_response, tokens::random_token};

/// The region the metadata server reports (as an availability zone, which clients trim).
pub(crate) const REGION: &str = "us-east-1";
/// The instance role whose credentials it serves.
const ROLE: &str = "standin-role";

fn text(body: String) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

/// `PUT /aws/token` → an IMDSv2 session token (any value: the GETs do not require one).
pub(crate) async fn session_token() -> Response {
    text(random_token())
}

/// `GET /aws/region` → the availability zone, e.g. `us-east-1a`.
pub(crate) async fn region() -> Response {
    text(format!("{REGION}a"))
}

/// `GET /aws/credentials` → the role name.
pub(crate) async fn role() -> Response {
    text(ROLE.to_owned())
}

/// `GET /aws/credentials/{role}` → the credentials of the latest binding, as IMDS formats them.
pub(crate) async fn credentials(
    State(shared): State<Arc<Shared>>,
    Path(role): Path<String>,
) -> Response {
    let binding = shared.workload.latest().filter(|_| role == ROLE);
    let Some(binding) = binding else {
        return json_response(StatusCode::NOT_FOUND, &json!({"Code": "NotFound"}));
    };
    json_response(
        StatusCode::OK,
        &json!({
            "Code": "Success",
            "LastUpdated": rfc3339(now()),
            "Type": "AWS-HMAC",
            "AccessKeyId": binding.aws_access_key_id,
            "SecretAccessKey": binding.aws_secret_access_key,
            "Token": binding.aws_session_token.unwrap_or_default(),
            "Expiration": rfc3339(now() + 6 * 3600),
        }),
    )
}
