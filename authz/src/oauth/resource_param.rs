//! The `resource` parameter (RFC 8707) of authorization and token requests, as clients really
//! send it: absent (some clients omit it), once, or repeated with one value (some send it
//! twice). Our tokens are for one MCP server, so differing values are `invalid_target`.

use std::sync::Arc;

use url::form_urlencoded;

use crate::resource::{McpResource, Resources};

/// A query or form body split into its `resource` values and everything else (re-encoded, for
/// the typed parser, which refuses repeated fields).
pub fn split(raw: &str) -> (String, Vec<String>) {
    let mut rest = form_urlencoded::Serializer::new(String::new());
    let mut resources = Vec::new();
    for (name, value) in form_urlencoded::parse(raw.as_bytes()) {
        if name == "resource" {
            resources.push(value.into_owned());
        } else {
            rest.append_pair(&name, &value);
        }
    }
    (rest.finish(), resources)
}

/// The one resource `values` name: `Ok(None)` when none is named.
pub fn resolve<'r>(
    resources: &'r Resources,
    values: &[String],
) -> Result<Option<&'r Arc<McpResource>>, &'static str> {
    let mut named: Option<&Arc<McpResource>> = None;
    for value in values {
        let resource = resources
            .by_url(value)
            .ok_or("the resource is not served here")?;
        match named {
            Some(earlier) if !Arc::ptr_eq(earlier, resource) => {
                return Err("a token is for one resource: name only one");
            }
            _ => named = Some(resource),
        }
    }
    Ok(named)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources() -> Resources {
        crate::test_support::resources(&[
            "https://mcp.example.com/mcp",
            "https://mcp.example.com/sre/mcp",
        ])
    }

    #[test]
    fn repeated_values_are_split_from_the_rest() {
        let (rest, values) = split(
            "client_id=a&resource=https%3A%2F%2Fmcp.example.com%2Fmcp&state=x%20y&resource=https://mcp.example.com/mcp/",
        );
        assert_eq!(rest, "client_id=a&state=x+y");
        assert_eq!(
            values,
            [
                "https://mcp.example.com/mcp",
                "https://mcp.example.com/mcp/"
            ]
        );
    }

    #[test]
    fn one_resource_however_often_it_is_named() {
        let all = resources();
        assert!(resolve(&all, &[]).unwrap().is_none());
        let twice = [
            "https://mcp.example.com/sre/mcp".to_string(),
            "https://mcp.example.com/sre/mcp/".to_string(),
        ];
        assert_eq!(
            resolve(&all, &twice).unwrap().unwrap().url,
            "https://mcp.example.com/sre/mcp"
        );
        let two = [
            "https://mcp.example.com/mcp".to_string(),
            "https://mcp.example.com/sre/mcp".to_string(),
        ];
        assert!(resolve(&all, &two).is_err());
        assert!(resolve(&all, &["https://elsewhere.example/mcp".to_string()]).is_err());
    }
}
