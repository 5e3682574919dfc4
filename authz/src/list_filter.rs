//! Hiding the entries of MCP list results a user may not use: the names in a `tools/list`,
//! `prompts/list`, `resources/list` or `resources/templates/list` response body, and the body
//! again with only the entries the caller keeps. Pure: no IO, no envoy-types; `ext_proc.rs`
//! feeds it the body Envoy buffered and the authorizer says which names stay.
//!
//! Both forms of a streamable-HTTP answer are read: `application/json` (one JSON-RPC response)
//! and `text/event-stream` (SSE events, one of which carries the JSON-RPC response). Only the
//! result's array is rewritten, by splicing the kept entries' own text back in: the envelope,
//! `nextCursor`, `_meta`, every other event and every other byte stay as they were, and a body
//! from which nothing is removed is not touched at all.
//!
//! Anything that is not plainly a JSON-RPC response of the expected shape is [`Unparseable`]:
//! a duplicate key (clients disagree on which copy wins), an entry without its name, a body that
//! is not UTF-8. The caller refuses such a body where rules apply (fail closed).

use std::{borrow::Cow, fmt};

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The MCP list methods whose results can be filtered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListMethod {
    Tools,
    Prompts,
    Resources,
    ResourceTemplates,
}

impl ListMethod {
    pub fn from_method(method: &str) -> Option<ListMethod> {
        match method {
            "tools/list" => Some(ListMethod::Tools),
            "prompts/list" => Some(ListMethod::Prompts),
            "resources/list" => Some(ListMethod::Resources),
            "resources/templates/list" => Some(ListMethod::ResourceTemplates),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ListMethod::Tools => "tools/list",
            ListMethod::Prompts => "prompts/list",
            ListMethod::Resources => "resources/list",
            ListMethod::ResourceTemplates => "resources/templates/list",
        }
    }

    /// The method a listed entry is used with: what the policy is asked about.
    pub fn call_method(self) -> &'static str {
        match self {
            ListMethod::Tools => "tools/call",
            ListMethod::Prompts => "prompts/get",
            ListMethod::Resources | ListMethod::ResourceTemplates => "resources/read",
        }
    }

    /// The result's array.
    fn array_key(self) -> &'static str {
        match self {
            ListMethod::Tools => "tools",
            ListMethod::Prompts => "prompts",
            ListMethod::Resources => "resources",
            ListMethod::ResourceTemplates => "resourceTemplates",
        }
    }

    /// What names an entry (what `Mcp-Name` carries for its call).
    fn name_key(self) -> &'static str {
        match self {
            ListMethod::Tools | ListMethod::Prompts => "name",
            ListMethod::Resources => "uri",
            ListMethod::ResourceTemplates => "uriTemplate",
        }
    }
}

/// The two forms a streamable-HTTP server answers a POST in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    EventStream,
}

impl BodyKind {
    /// From `content-type` (parameters such as `charset` ignored); `None`: neither form.
    pub fn from_content_type(content_type: &str) -> Option<BodyKind> {
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        if essence.eq_ignore_ascii_case("application/json") {
            Some(BodyKind::Json)
        } else if essence.eq_ignore_ascii_case("text/event-stream") {
            Some(BodyKind::EventStream)
        } else {
            None
        }
    }
}

/// Why a body could not be read as a list result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unparseable {
    #[error("the body is not UTF-8")]
    NotUtf8,
    #[error("the body is not JSON")]
    NotJson,
    #[error("an object has the same key twice")]
    DuplicateKey,
    #[error("the body is not a JSON-RPC response")]
    NotAResponse,
    #[error("the result has no array of entries")]
    NoEntries,
    #[error("an entry has no name")]
    UnnamedEntry,
}

impl Unparseable {
    pub fn reason(self) -> &'static str {
        match self {
            Unparseable::NotUtf8 => "not_utf8",
            Unparseable::NotJson => "not_json",
            Unparseable::DuplicateKey => "duplicate_key",
            Unparseable::NotAResponse => "not_a_response",
            Unparseable::NoEntries => "no_entries",
            Unparseable::UnnamedEntry => "unnamed_entry",
        }
    }
}

/// A parsed list response: where its entries are and what they are called.
#[derive(Debug)]
pub struct Listing<'a> {
    body: &'a str,
    kind: BodyKind,
    /// JSON: one part covering the body. SSE: one per event that carries a list result.
    parts: Vec<Part>,
}

/// One JSON-RPC response carrying entries.
#[derive(Debug)]
struct Part {
    /// SSE: the event's bytes in the body, and its data (the JSON text the spans index).
    /// JSON: `None`; the spans index the body.
    event: Option<Event>,
    /// The array's span in the JSON text (its `[` to its `]`).
    array: (usize, usize),
    /// Each entry's span in the JSON text, and its name.
    entries: Vec<((usize, usize), String)>,
}

#[derive(Debug)]
struct Event {
    /// The event's lines, each with its terminator, as spans of the body.
    lines: Vec<(usize, usize)>,
    data: String,
}

impl<'a> Listing<'a> {
    /// Reads `body` as the answer to `method` in the form `kind`.
    pub fn parse(method: ListMethod, kind: BodyKind, body: &'a [u8]) -> Result<Self, Unparseable> {
        let body = std::str::from_utf8(body).map_err(|_| Unparseable::NotUtf8)?;
        let parts = match kind {
            BodyKind::Json => response_entries(method, body, false)?
                .map(|(array, entries)| Part {
                    event: None,
                    array,
                    entries,
                })
                .into_iter()
                .collect(),
            BodyKind::EventStream => {
                let mut parts = Vec::new();
                for event in events(body) {
                    // Priming events (an id, empty data) and comments carry nothing.
                    if event.data.is_empty() {
                        continue;
                    }
                    if let Some((array, entries)) = response_entries(method, &event.data, true)? {
                        parts.push(Part {
                            event: Some(event),
                            array,
                            entries,
                        });
                    }
                }
                parts
            }
        };
        Ok(Listing { body, kind, parts })
    }

    /// Every entry's name, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.parts
            .iter()
            .flat_map(|part| part.entries.iter().map(|(_, name)| name.as_str()))
    }

    pub fn len(&self) -> usize {
        self.parts.iter().map(|part| part.entries.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The body with only the entries whose `keep` is true (one per name, in order); `None`
    /// when every entry is kept, so the body passes unchanged.
    pub fn render(&self, keep: &[bool]) -> Option<String> {
        debug_assert_eq!(keep.len(), self.len());
        if keep.iter().all(|&k| k) {
            return None;
        }
        let mut keep = keep.iter().copied();
        let mut out = String::with_capacity(self.body.len());
        let mut copied = 0;
        for part in &self.parts {
            let flags: Vec<bool> = keep.by_ref().take(part.entries.len()).collect();
            match (&part.event, self.kind) {
                (None, _) => {
                    out.push_str(&splice(self.body, part, &flags));
                    copied = self.body.len();
                }
                (Some(event), _) => {
                    let Some(&(start, _)) = event.lines.first() else {
                        continue;
                    };
                    let end = event.lines.last().map_or(start, |&(_, end)| end);
                    out.push_str(&self.body[copied..start]);
                    let data = splice(&event.data, part, &flags);
                    let mut wrote_data = false;
                    for &(line_start, line_end) in &event.lines {
                        let line = &self.body[line_start..line_end];
                        let (content, terminator) = split_terminator(line);
                        if field_name(content) != "data" {
                            out.push_str(line);
                            continue;
                        }
                        // The first data line stands for all of them: the new data, one line
                        // per line, with that line's terminator.
                        if !wrote_data {
                            wrote_data = true;
                            let terminator = if terminator.is_empty() {
                                "\n"
                            } else {
                                terminator
                            };
                            for data_line in data.split('\n') {
                                out.push_str("data: ");
                                out.push_str(data_line);
                                out.push_str(terminator);
                            }
                        }
                    }
                    copied = end;
                }
            }
        }
        out.push_str(&self.body[copied..]);
        Some(out)
    }
}

/// `text` with the part's array holding only the kept entries.
fn splice<'t>(text: &'t str, part: &Part, keep: &[bool]) -> Cow<'t, str> {
    if keep.iter().all(|&k| k) {
        return Cow::Borrowed(text);
    }
    let (start, end) = part.array;
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..start]);
    out.push('[');
    let kept = part
        .entries
        .iter()
        .zip(keep)
        .filter(|(_, keep)| **keep)
        .map(|(((s, e), _), _)| &text[*s..*e]);
    for (i, entry) in kept.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(entry);
    }
    out.push(']');
    out.push_str(&text[end..]);
    Cow::Owned(out)
}

/// The array's span and each entry's span and name.
type Entries = ((usize, usize), Vec<((usize, usize), String)>);

/// The entries of a JSON-RPC response to `method`: `None` for a message that carries none (an
/// error response; with `messages`, a request or notification the server sends on an SSE
/// stream before its response). A JSON body must be the response itself.
fn response_entries(
    method: ListMethod,
    text: &str,
    messages: bool,
) -> Result<Option<Entries>, Unparseable> {
    let envelope = object(text)?;
    let field = |key: &str| envelope.iter().find(|(k, _)| k == key).map(|(_, v)| *v);
    let Some(result) = field("result") else {
        return if field("error").is_some() || (messages && field("method").is_some()) {
            Ok(None)
        } else {
            Err(Unparseable::NotAResponse)
        };
    };
    if field("method").is_some() || field("error").is_some() {
        return Err(Unparseable::NotAResponse);
    }
    let result = object(result.get())?;
    let array = result
        .iter()
        .find(|(k, _)| k == method.array_key())
        .map(|(_, v)| *v)
        .ok_or(Unparseable::NoEntries)?;
    let items: Vec<&RawValue> =
        serde_json::from_str(array.get()).map_err(|_| Unparseable::NoEntries)?;
    let mut entries = Vec::with_capacity(items.len());
    for item in items {
        let fields = object(item.get()).map_err(|error| match error {
            Unparseable::DuplicateKey => error,
            _ => Unparseable::UnnamedEntry,
        })?;
        let name = fields
            .iter()
            .find(|(k, _)| k == method.name_key())
            .and_then(|(_, v)| serde_json::from_str::<String>(v.get()).ok())
            .ok_or(Unparseable::UnnamedEntry)?;
        entries.push((span(text, item.get()), name));
    }
    Ok(Some((span(text, array.get()), entries)))
}

/// Where `inner` (a slice of `outer`) lies in `outer`.
fn span(outer: &str, inner: &str) -> (usize, usize) {
    let start = inner.as_ptr() as usize - outer.as_ptr() as usize;
    (start, start + inner.len())
}

/// A JSON object's members, in order, their values unparsed; a key twice is refused, and so is
/// anything after the object.
fn object(text: &str) -> Result<Vec<(Cow<'_, str>, &RawValue)>, Unparseable> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let members = (&mut deserializer)
        .deserialize_map(Members)
        .map_err(|_| Unparseable::NotJson)?;
    deserializer.end().map_err(|_| Unparseable::NotJson)?;
    for (i, (key, _)) in members.iter().enumerate() {
        if members[..i].iter().any(|(other, _)| other == key) {
            return Err(Unparseable::DuplicateKey);
        }
    }
    Ok(members)
}

struct Members;

impl<'de> Visitor<'de> for Members {
    type Value = Vec<(Cow<'de, str>, &'de RawValue)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::new();
        while let Some(key) = map.next_key::<CowStr<'de>>()? {
            members.push((key.0, map.next_value::<&'de RawValue>()?));
        }
        Ok(members)
    }
}

/// A key borrowed when it has no escapes.
struct CowStr<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// The SSE events of `body` (WHATWG HTML, "Parsing an event stream"): lines end in CRLF, LF or
/// CR; a blank line ends an event; `data` lines are joined with LF. A last event without its
/// blank line is read too, so nothing at the end escapes the filter.
fn events(body: &str) -> Vec<Event> {
    let mut events = Vec::new();
    let mut lines = Vec::new();
    let mut data: Option<String> = None;
    let mut finish = |lines: &mut Vec<(usize, usize)>, data: &mut Option<String>| {
        if !lines.is_empty() {
            events.push(Event {
                lines: std::mem::take(lines),
                data: data.take().unwrap_or_default(),
            });
        }
    };
    for (start, end) in line_spans(body) {
        let (content, _) = split_terminator(&body[start..end]);
        lines.push((start, end));
        if content.is_empty() {
            finish(&mut lines, &mut data);
            continue;
        }
        if field_name(content) == "data" {
            let value = field_value(content);
            match &mut data {
                Some(text) => {
                    text.push('\n');
                    text.push_str(value);
                }
                None => data = Some(value.to_owned()),
            }
        }
    }
    finish(&mut lines, &mut data);
    events
}

/// Each line's span, its terminator included.
fn line_spans(body: &str) -> Vec<(usize, usize)> {
    let bytes = body.as_bytes();
    let mut spans = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\r' => {
                let end = if bytes.get(i + 1) == Some(&b'\n') {
                    i + 2
                } else {
                    i + 1
                };
                spans.push((start, end));
                start = end;
                i = end;
            }
            b'\n' => {
                spans.push((start, i + 1));
                start = i + 1;
                i += 1;
            }
            _ => i += 1,
        }
    }
    if start < bytes.len() {
        spans.push((start, bytes.len()));
    }
    spans
}

fn split_terminator(line: &str) -> (&str, &str) {
    let content = line.trim_end_matches(['\r', '\n']);
    (content, &line[content.len()..])
}

/// A line's field name (a comment line, starting with `:`, has the empty name).
fn field_name(line: &str) -> &str {
    line.split_once(':').map_or(line, |(name, _)| name)
}

/// A line's value: after the first `:`, one leading space removed.
fn field_value(line: &str) -> &str {
    match line.split_once(':') {
        Some((_, value)) => value.strip_prefix(' ').unwrap_or(value),
        None => "",
    }
}

#[cfg(test)]
mod tests;
