//! AWS Signature Version 4, enough to check the signed `GetCallerIdentity` request an AWS
//! workload hands Google's STS as its subject token. Google forwards that request to AWS, which
//! checks the signature; the stand-in knows the registered secret key, so it recomputes it.

use hmac::{Hmac, Mac as _};
use sha2::{Digest as _, Sha256};

/// The parts of an `Authorization: AWS4-HMAC-SHA256 Credential=.., SignedHeaders=.., Signature=..`
/// header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Authorization {
    pub(crate) access_key_id: String,
    /// `YYYYMMDD`.
    pub(crate) date: String,
    pub(crate) region: String,
    pub(crate) service: String,
    /// Lowercase, `;`-separated as sent.
    pub(crate) signed_headers: Vec<String>,
    pub(crate) signature: String,
}

impl Authorization {
    pub(crate) fn parse(value: &str) -> Option<Self> {
        let rest = value.strip_prefix("AWS4-HMAC-SHA256 ")?;
        let (mut credential, mut signed, mut signature) = (None, None, None);
        for part in rest.split(',') {
            let (name, value) = part.trim().split_once('=')?;
            match name {
                "Credential" => credential = Some(value),
                "SignedHeaders" => signed = Some(value),
                "Signature" => signature = Some(value),
                _ => return None,
            }
        }
        let mut scope = credential?.split('/');
        let access_key_id = scope.next()?.to_owned();
        let date = scope.next()?.to_owned();
        let region = scope.next()?.to_owned();
        let service = scope.next()?.to_owned();
        if scope.next()? != "aws4_request" || scope.next().is_some() {
            return None;
        }
        Some(Self {
            access_key_id,
            date,
            region,
            service,
            signed_headers: signed?.split(';').map(str::to_owned).collect(),
            signature: signature?.to_owned(),
        })
    }
}

/// The request being signed: everything SigV4 covers.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    pub(crate) method: &'a str,
    /// The URI path; `/` when empty.
    pub(crate) path: &'a str,
    /// Decoded query pairs, in any order.
    pub(crate) query: Vec<(String, String)>,
    /// Lowercase names with their values; must hold every signed header.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: &'a [u8],
}

/// The hex signature of `request` under `auth`'s scope and signed headers with `secret`, or
/// `None` when a signed header is missing.
pub(crate) fn signature(
    request: &Request<'_>,
    auth: &Authorization,
    amz_date: &str,
    secret: &str,
) -> Option<String> {
    let canonical = canonical_request(request, &auth.signed_headers)?;
    let scope = format!(
        "{}/{}/{}/aws4_request",
        auth.date, auth.region, auth.service
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let key = [
        auth.date.as_str(),
        &auth.region,
        &auth.service,
        "aws4_request",
    ]
    .iter()
    .fold(format!("AWS4{secret}").into_bytes(), |key, part| {
        hmac(&key, part.as_bytes())
    });
    Some(hex(&hmac(&key, string_to_sign.as_bytes())))
}

fn canonical_request(request: &Request<'_>, signed_headers: &[String]) -> Option<String> {
    let mut query: Vec<(String, String)> = request
        .query
        .iter()
        .map(|(k, v)| (uri_encode(k), uri_encode(v)))
        .collect();
    query.sort();
    let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut headers = String::new();
    for name in signed_headers {
        let (_, value) = request.headers.iter().find(|(n, _)| n == name)?;
        // Trimmed, inner runs of spaces collapsed.
        let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
        headers.push_str(&format!("{name}:{value}\n"));
    }
    let path = if request.path.is_empty() {
        "/"
    } else {
        request.path
    };
    Some(format!(
        "{}\n{path}\n{}\n{headers}\n{}\n{}",
        request.method,
        query.join("&"),
        signed_headers.join(";"),
        hex(&Sha256::digest(request.body))
    ))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// AWS's URI encoding: everything but unreserved characters, uppercase hex.
fn uri_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Decodes `%XX` escapes (and nothing else: `+` stays a plus, as in a URL-encoded JSON).
pub(crate) fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of AWS's SigV4 documentation (IAM ListUsers).
    #[test]
    fn aws_documentation_example() {
        let auth = Authorization::parse(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
        )
        .unwrap();
        assert_eq!(auth.access_key_id, "AKIDEXAMPLE");
        let request = Request {
            method: "GET",
            path: "/",
            query: vec![
                ("Version".into(), "2010-05-08".into()),
                ("Action".into(), "ListUsers".into()),
            ],
            headers: vec![
                (
                    "content-type".into(),
                    "application/x-www-form-urlencoded; charset=utf-8".into(),
                ),
                ("host".into(), "iam.amazonaws.com".into()),
                ("x-amz-date".into(), "20150830T123600Z".into()),
            ],
            body: b"",
        };
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        assert_eq!(
            signature(&request, &auth, "20150830T123600Z", secret).as_deref(),
            Some(auth.signature.as_str())
        );
        assert_ne!(
            signature(&request, &auth, "20150830T123601Z", secret),
            Some(auth.signature.clone())
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("%7B%22a%22%3A1%7D+").as_deref(),
            Some("{\"a\":1}+")
        );
        assert_eq!(percent_decode("%7"), None);
    }
}
