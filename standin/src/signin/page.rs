//! The HTML pages of Google's sign-in: the account chooser and the error page. Small and plain,
//! for test browsers: the chooser is one form, an error page states Google's error code.
//!
//! Everything interpolated is escaped: client ids, hints and emails come from the request.

use axum::{
    http::{StatusCode, header},
    response::{IntoResponse as _, Response},
};

use super::AUTHORIZE_PATH;

/// What the chooser shows besides its form.
#[derive(Debug, Clone, Copy)]
pub(super) struct Chooser<'a> {
    /// The pending request's id, carried by the form's hidden `request` input.
    pub(super) request: &'a str,
    pub(super) client_id: &'a str,
    /// Prefills the email input (`login_hint`).
    pub(super) email: Option<&'a str>,
    /// Shown above the form, e.g. after an unknown email.
    pub(super) problem: Option<&'a str>,
}

/// The sign-in page: a form posting `request` and `email` to the authorization path.
pub(super) fn chooser(status: StatusCode, page: Chooser<'_>) -> Response {
    let problem = page
        .problem
        .map(|p| format!("<p class=\"error\">{}</p>\n", escape(p)))
        .unwrap_or_default();
    let body = format!(
        "<h1>Sign in with Google</h1>\n\
         <p>Choose an account to continue to {client}</p>\n\
         {problem}\
         <form method=\"post\" action=\"{AUTHORIZE_PATH}\">\n\
         <input type=\"hidden\" name=\"request\" value=\"{request}\">\n\
         <label>Email or phone <input type=\"text\" name=\"email\" value=\"{email}\" \
         autocomplete=\"username\"></label>\n\
         <button type=\"submit\">Next</button>\n\
         </form>\n",
        client = escape(page.client_id),
        request = escape(page.request),
        email = escape(page.email.unwrap_or("")),
    );
    html(status, "Sign in - Google Accounts", &body)
}

/// Google's error page: "Error 400: redirect_uri_mismatch" and a sentence on what is wrong.
/// `shown` is the number Google prints before the code (401 for `invalid_client`); the HTTP
/// status is always 400.
pub(super) fn error(shown: u16, code: &str, detail: &str) -> Response {
    let body = format!(
        "<h1>Access blocked: Authorization Error</h1>\n\
         <p>{detail}</p>\n\
         <p>Error {shown}: {code}</p>\n",
        detail = escape(detail),
        code = escape(code),
    );
    html(StatusCode::BAD_REQUEST, "Error - Google Accounts", &body)
}

fn html(status: StatusCode, title: &str, body: &str) -> Response {
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{title}</title></head>\n<body>\n{body}</body></html>\n",
        title = escape(title),
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // The page carries a single-use request id: never from a cache, never framed.
            (
                header::CACHE_CONTROL,
                "no-cache, no-store, max-age=0, must-revalidate",
            ),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        page,
    )
        .into_response()
}

/// `value` safe inside HTML text and double- or single-quoted attributes.
pub(super) fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(
            escape(r#"<a href="x" title='y'>&amp;</a>"#),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;amp;&lt;/a&gt;"
        );
        assert_eq!(escape("ada@example.com"), "ada@example.com");
    }
}
