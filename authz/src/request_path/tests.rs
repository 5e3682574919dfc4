use super::is_normal;

#[test]
fn paths_the_upstream_reads_differently_are_not_normal() {
    for normal in [
        "",
        "/",
        "/mcp",
        "/tools/mcp",
        "/tools/mcp/",
        "/tools/mcp?x=%2F..//",
        "/a%20b",
        "/%E2%82%AC",
        "/a.b/..c/...",
    ] {
        assert!(is_normal(normal), "{normal:?} is normal");
    }
    for confused in [
        "//tools/mcp",
        "/tools//mcp",
        "/x/../tools/mcp",
        "/./tools/mcp",
        "/tools/.",
        "/tools/..",
        "/%74ools/mcp",
        "/tools%2Fmcp",
        "/tools%2fmcp",
        "/tools%5Cmcp",
        "/tools\\mcp",
        "/%2E%2E/tools",
        "/tools/%7e",
        "/%",
        "/%4",
        "/%zz",
        "tools/mcp",
        "/tools;x/mcp",
        "/public/..;/tools/mcp",
        "/tools%3Bx/mcp",
        "/%2574ools/mcp",
        "/%C0%AE%C0%AE/tools",
    ] {
        assert!(!is_normal(confused), "{confused:?} is not normal");
    }
}
