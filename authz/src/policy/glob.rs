//! Glob patterns for MCP method and tool names: `*` matches any run of characters (including
//! none), `?` exactly one; everything else matches itself, case-sensitively (MCP names are).

/// A compiled pattern. Kept as characters so `?` means one character, not one byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: Vec<char>,
}

impl Glob {
    pub fn new(pattern: &str) -> Glob {
        Glob {
            pattern: pattern.chars().collect(),
        }
    }

    /// Linear-time matching (the classic two-pointer algorithm with one backtrack point), so
    /// a hostile tool name cannot make a pattern like `*a*a*a*b` take exponential time.
    pub fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().collect();
        let (mut p, mut t) = (0, 0);
        // Where the last `*` was, and the text position it is currently absorbing up to.
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            match self.pattern.get(p) {
                Some('*') => {
                    star = Some((p, t));
                    p += 1;
                }
                Some(&c) if c == '?' || c == text[t] => {
                    p += 1;
                    t += 1;
                }
                _ => match star {
                    // Let the last star absorb one more character and retry after it.
                    Some((star_p, star_t)) => {
                        star = Some((star_p, star_t + 1));
                        p = star_p + 1;
                        t = star_t + 1;
                    }
                    None => return false,
                },
            }
        }
        self.pattern[p..].iter().all(|&c| c == '*')
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;

    #[test]
    fn matching() {
        let cases = [
            ("delete_*", "delete_dashboard", true),
            ("delete_*", "delete_", true),
            ("delete_*", "undelete_x", false),
            ("delete_*", "Delete_x", false),
            ("*", "", true),
            ("*", "anything/at all", true),
            ("tools/call", "tools/call", true),
            ("tools/call", "tools/callx", false),
            ("tools/*", "tools/list", true),
            ("tools/*", "resources/read", false),
            ("get_?", "get_a", true),
            ("get_?", "get_ab", false),
            ("get_?", "get_é", true),
            ("*_dashboard", "delete_dashboard", true),
            ("*a*b", "aaab", true),
            ("*a*b", "aaac", false),
            ("", "", true),
            ("", "x", false),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(
                Glob::new(pattern).matches(text),
                expected,
                "{pattern} vs {text}"
            );
        }
    }

    proptest::proptest! {
        /// A pattern without wildcards is plain equality; `*` + literal + `*` is containment.
        #[test]
        fn literal_and_contains(literal in "[a-z_/]{0,12}", text in "[a-z_/]{0,16}") {
            proptest::prop_assert_eq!(Glob::new(&literal).matches(&text), literal == text);
            let contains = Glob::new(&format!("*{literal}*"));
            proptest::prop_assert_eq!(contains.matches(&text), text.contains(&literal));
        }
    }
}
