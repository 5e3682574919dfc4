use super::*;

const TOOLS: &str = r#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"list_dashboards","inputSchema":{"type":"object"}}, {"name":"delete_dashboard","description":"a \"quoted\" ] text"},{"inputSchema":{},"name":"whoami"}],"nextCursor":"abc=="}}"#;

fn filter(
    method: ListMethod,
    kind: BodyKind,
    body: &str,
    keep: impl Fn(&str) -> bool,
) -> Option<String> {
    let listing = Listing::parse(method, kind, body.as_bytes()).expect("parses");
    let flags: Vec<bool> = listing.names().map(&keep).collect();
    listing.render(&flags)
}

fn parse_error(method: ListMethod, kind: BodyKind, body: &str) -> Unparseable {
    Listing::parse(method, kind, body.as_bytes()).expect_err("refused")
}

#[test]
fn names_are_read_in_order() {
    let listing = Listing::parse(ListMethod::Tools, BodyKind::Json, TOOLS.as_bytes()).unwrap();
    let names: Vec<&str> = listing.names().collect();
    assert_eq!(names, ["list_dashboards", "delete_dashboard", "whoami"]);
}

#[test]
fn a_refused_tool_is_removed_and_everything_else_is_kept_byte_for_byte() {
    let filtered = filter(ListMethod::Tools, BodyKind::Json, TOOLS, |n| {
        !n.starts_with("delete_")
    })
    .unwrap();
    assert_eq!(
        filtered,
        r#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"list_dashboards","inputSchema":{"type":"object"}},{"inputSchema":{},"name":"whoami"}],"nextCursor":"abc=="}}"#
    );
    let value: serde_json::Value = serde_json::from_str(&filtered).unwrap();
    assert_eq!(value["id"], 7);
    assert_eq!(value["result"]["nextCursor"], "abc==");
}

#[test]
fn a_body_with_nothing_to_remove_is_not_touched() {
    assert_eq!(
        filter(ListMethod::Tools, BodyKind::Json, TOOLS, |_| true),
        None
    );
}

#[test]
fn everything_may_be_removed() {
    let filtered = filter(ListMethod::Tools, BodyKind::Json, TOOLS, |_| false).unwrap();
    assert!(
        filtered.contains(r#""tools":[],"nextCursor":"abc==""#),
        "{filtered}"
    );
}

#[test]
fn whitespace_and_unknown_members_around_the_array_stay() {
    let body = "{ \"id\" : \"x\",\n  \"result\" : { \"_meta\": {\"k\": [1]}, \"tools\" : [ {\"name\":\"a\"} ,\n {\"name\":\"b\"} ] },\n \"jsonrpc\":\"2.0\" }\n";
    let filtered = filter(ListMethod::Tools, BodyKind::Json, body, |n| n == "b").unwrap();
    assert_eq!(
        filtered,
        "{ \"id\" : \"x\",\n  \"result\" : { \"_meta\": {\"k\": [1]}, \"tools\" : [{\"name\":\"b\"}] },\n \"jsonrpc\":\"2.0\" }\n"
    );
}

#[test]
fn escaped_names_are_decoded() {
    let body = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"del\u0065te_x"}]}}"#;
    let listing = Listing::parse(ListMethod::Tools, BodyKind::Json, body.as_bytes()).unwrap();
    assert_eq!(listing.names().collect::<Vec<_>>(), ["delete_x"]);
}

#[test]
fn each_list_method_reads_its_own_array_and_name() {
    let prompts = r#"{"jsonrpc":"2.0","id":1,"result":{"prompts":[{"name":"p1"},{"name":"p2"}]}}"#;
    let resources =
        r#"{"jsonrpc":"2.0","id":1,"result":{"resources":[{"uri":"file:///a","name":"A"}]}}"#;
    let templates = r#"{"jsonrpc":"2.0","id":1,"result":{"resourceTemplates":[{"uriTemplate":"db://{t}","name":"T"}]}}"#;
    for (method, body, names) in [
        (ListMethod::Prompts, prompts, vec!["p1", "p2"]),
        (ListMethod::Resources, resources, vec!["file:///a"]),
        (ListMethod::ResourceTemplates, templates, vec!["db://{t}"]),
    ] {
        let listing = Listing::parse(method, BodyKind::Json, body.as_bytes()).unwrap();
        assert_eq!(listing.names().collect::<Vec<_>>(), names, "{method:?}");
    }
}

#[test]
fn an_error_response_has_nothing_to_filter() {
    let body = r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no"}}"#;
    let listing = Listing::parse(ListMethod::Tools, BodyKind::Json, body.as_bytes()).unwrap();
    assert!(listing.is_empty());
    assert_eq!(listing.render(&[]), None);
}

#[test]
fn unreadable_bodies_are_refused() {
    let tools = ListMethod::Tools;
    let json = BodyKind::Json;
    assert_eq!(
        Listing::parse(tools, json, b"\xff\xfe").unwrap_err(),
        Unparseable::NotUtf8
    );
    for (body, why) in [
        ("not json", Unparseable::NotJson),
        ("", Unparseable::NotJson),
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}} trailing"#,
            Unparseable::NotJson,
        ),
        (
            r#"[{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}]"#,
            Unparseable::NotJson,
        ),
        (r#"{"jsonrpc":"2.0","id":1}"#, Unparseable::NotAResponse),
        // A JSON answer is the response itself, never a request or notification.
        (
            r#"{"jsonrpc":"2.0","method":"tools/list","params":{}}"#,
            Unparseable::NotAResponse,
        ),
        (
            r#"{"method":"POST","path":"/mcp"}"#,
            Unparseable::NotAResponse,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]},"error":{}}"#,
            Unparseable::NotAResponse,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
            Unparseable::NoEntries,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":{}}}"#,
            Unparseable::NoEntries,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"title":"x"}]}}"#,
            Unparseable::UnnamedEntry,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":3}]}}"#,
            Unparseable::UnnamedEntry,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":["a"]}}"#,
            Unparseable::UnnamedEntry,
        ),
        // Which copy a client reads is anyone's guess: refused.
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]},"result":{"tools":[]}}"#,
            Unparseable::DuplicateKey,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"tools":[{"name":"x"}]}}"#,
            Unparseable::DuplicateKey,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a","name":"delete_x"}]}}"#,
            Unparseable::DuplicateKey,
        ),
    ] {
        assert_eq!(parse_error(tools, json, body), why, "{body}");
    }
}

#[test]
fn content_types() {
    assert_eq!(
        BodyKind::from_content_type("application/json"),
        Some(BodyKind::Json)
    );
    assert_eq!(
        BodyKind::from_content_type("Application/JSON; charset=utf-8"),
        Some(BodyKind::Json)
    );
    assert_eq!(
        BodyKind::from_content_type("text/event-stream"),
        Some(BodyKind::EventStream)
    );
    assert_eq!(BodyKind::from_content_type("text/html"), None);
    assert_eq!(BodyKind::from_content_type(""), None);
}

// === SSE ===

#[test]
fn an_sse_result_event_is_filtered_and_the_other_events_kept() {
    let body = format!(
        "id: prime-1\ndata: \n\n: a comment\nevent: message\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{{\"tools\":[{{\"name\":\"delete_x\"}}]}}}}\n\nevent: message\nid: 2\ndata: {TOOLS}\n\n"
    );
    let filtered = filter(ListMethod::Tools, BodyKind::EventStream, &body, |n| {
        !n.starts_with("delete_")
    })
    .unwrap();
    let expected = body.replace(
        r#"{"name":"list_dashboards","inputSchema":{"type":"object"}}, {"name":"delete_dashboard","description":"a \"quoted\" ] text"},"#,
        r#"{"name":"list_dashboards","inputSchema":{"type":"object"}},"#,
    );
    assert_eq!(filtered, expected);
}

#[test]
fn an_sse_result_split_over_data_lines_with_crlf() {
    let body = "event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\r\ndata: \"result\":{\"tools\":[{\"name\":\"a\"},{\"name\":\"b\"}]}}\r\n\r\n";
    let filtered = filter(ListMethod::Tools, BodyKind::EventStream, body, |n| n == "a").unwrap();
    assert_eq!(
        filtered,
        "event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\r\ndata: \"result\":{\"tools\":[{\"name\":\"a\"}]}}\r\n\r\n"
    );
}

#[test]
fn an_sse_event_without_its_blank_line_is_still_filtered() {
    let body = "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"a\"},{\"name\":\"b\"}]}}";
    let filtered = filter(ListMethod::Tools, BodyKind::EventStream, body, |n| n == "b").unwrap();
    assert_eq!(
        filtered,
        "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"b\"}]}}\n"
    );
}

#[test]
fn an_sse_stream_with_nothing_to_remove_is_not_touched() {
    let body = format!("event: message\ndata: {TOOLS}\n\n");
    assert_eq!(
        filter(ListMethod::Tools, BodyKind::EventStream, &body, |_| true),
        None
    );
    // No result at all (a stream of notifications): nothing to filter.
    let listing = Listing::parse(
        ListMethod::Tools,
        BodyKind::EventStream,
        b"data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n",
    )
    .unwrap();
    assert!(listing.is_empty());
}

#[test]
fn an_sse_event_whose_data_is_not_json_is_refused() {
    assert_eq!(
        parse_error(
            ListMethod::Tools,
            BodyKind::EventStream,
            "data: {\"jsonrpc\"\n\n"
        ),
        Unparseable::NotJson
    );
    assert_eq!(
        parse_error(
            ListMethod::Tools,
            BodyKind::EventStream,
            "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"a\",\"name\":\"b\"}]}}\n\n"
        ),
        Unparseable::DuplicateKey
    );
}
