use std::{path::Path, sync::atomic::AtomicUsize};

use super::*;
use crate::google::Google;

const BASE: &str = r#"
[listen]
grpc = "127.0.0.1:0"
http = "127.0.0.1:0"
admin = "127.0.0.1:0"
[google]
client_ids = ["test.apps.googleusercontent.com"]
[access]
domains = ["example.com"]
[resource]
url = "https://mcp.example.com/mcp"
"#;

const DENY_MALLORY: &str = r#"
[policies.default]
deny_users = ["mallory@example.com"]
"#;

/// A config file of its own for each test, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(text: &str) -> TempFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("authz-reload-{}-{n}.toml", std::process::id()));
        let file = TempFile(path);
        file.write(text);
        file
    }

    /// Writes atomically, as the docs ask operators to.
    fn write(&self, text: &str) {
        let temporary = self.0.with_extension("tmp");
        std::fs::write(&temporary, text).unwrap();
        std::fs::rename(&temporary, &self.0).unwrap();
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn reloader(file: &TempFile) -> (Arc<Reloader>, Arc<Authorizer>) {
    let source = Source {
        path: Some(file.path().to_path_buf()),
        env: Vec::new(),
    };
    let config = source.load().unwrap();
    let google = Google::new(&config).unwrap();
    let authorizer = Arc::new(Authorizer::new(&config, google, None));
    let secrets = Secrets::new(&config.secrets, Arc::default());
    let reloader = Reloader::new(source, config, None, authorizer.clone(), secrets);
    (Arc::new(reloader), authorizer)
}

#[tokio::test]
async fn a_valid_change_swaps_the_policies_and_bumps_the_version() {
    let file = TempFile::new(BASE);
    let (reloader, authorizer) = reloader(&file);
    let before = authorizer.fingerprint();
    assert_eq!(reloader.version().fingerprint, before);

    file.write(&format!("{BASE}{DENY_MALLORY}"));
    let version = reloader.reload().await.unwrap();

    assert_ne!(authorizer.fingerprint(), before);
    assert_eq!(version.fingerprint, authorizer.fingerprint());
    assert_eq!(version.reloads, 1);
    assert_eq!(version.last_error, None);
    assert!(
        version
            .label()
            .starts_with(&version.fingerprint_hex()[..12])
    );
}

#[tokio::test]
async fn a_bad_file_keeps_the_old_config_and_names_the_key() {
    let file = TempFile::new(BASE);
    let (reloader, authorizer) = reloader(&file);
    let before = authorizer.fingerprint();

    file.write(&format!("{BASE}{DENY_MALLORY}").replace(r#"["example.com"]"#, "[]"));
    let error = reloader.reload().await.unwrap_err().to_string();

    assert!(error.starts_with("config: access.domains:"), "{error}");
    assert_eq!(authorizer.fingerprint(), before);
    let version = reloader.version();
    assert_eq!(version.reloads, 0);
    assert_eq!(version.fingerprint, before);
    assert_eq!(version.last_error.as_deref(), Some(error.as_str()));

    // A good file afterwards applies and clears the error.
    file.write(&format!("{BASE}{DENY_MALLORY}"));
    let version = reloader.reload().await.unwrap();
    assert_ne!(version.fingerprint, before);
    assert_eq!(version.last_error, None);
}

#[tokio::test]
async fn unparsable_and_missing_files_change_nothing() {
    let file = TempFile::new(BASE);
    let (reloader, authorizer) = reloader(&file);
    let before = authorizer.fingerprint();

    file.write("[access\ndomains = ");
    let error = reloader.reload().await.unwrap_err().to_string();
    assert!(error.starts_with("config: (file):"), "{error}");

    std::fs::remove_file(file.path()).unwrap();
    let error = reloader.reload().await.unwrap_err().to_string();
    assert!(error.contains("cannot read"), "{error}");
    assert_eq!(authorizer.fingerprint(), before);
}

#[tokio::test]
async fn a_groups_secret_that_cannot_be_read_fails_the_reload() {
    let file = TempFile::new(BASE);
    let (reloader, authorizer) = reloader(&file);
    let before = authorizer.fingerprint();
    let missing =
        std::env::temp_dir().join(format!("authz-reload-{}-no-key.json", std::process::id()));
    file.write(&format!(
        "{BASE}{DENY_MALLORY}\n[groups]\napi = \"cloud-identity\"\n[groups.credentials]\nkind = \"service-account-key\"\njson = {{ file = {:?} }}\n",
        missing.display().to_string()
    ));

    let error = reloader.reload().await.unwrap_err().to_string();

    assert!(error.starts_with("config: groups: "), "{error}");
    assert!(error.contains("groups.credentials.json (file "), "{error}");
    assert!(error.contains("cannot read the file"), "{error}");
    assert_eq!(authorizer.fingerprint(), before);
    assert_eq!(reloader.version().reloads, 0);
}

#[tokio::test]
async fn sections_only_a_restart_can_apply_are_refused() {
    let file = TempFile::new(BASE);
    let (reloader, authorizer) = reloader(&file);
    let before = authorizer.fingerprint();
    for (from, to, key) in [
        (
            r#"grpc = "127.0.0.1:0""#,
            r#"grpc = "127.0.0.1:1""#,
            "listen.grpc",
        ),
        (
            r#"admin = "127.0.0.1:0""#,
            r#"admin = "127.0.0.1:2""#,
            "listen.admin",
        ),
        ("test.apps", "other.apps", "google"),
        (
            "[resource]",
            "[secrets]\nrefresh_interval = \"1m\"\n[resource]",
            "secrets",
        ),
        (
            "[resource]\nurl = \"https://mcp.example.com/mcp\"",
            "[resource]\nurl = \"https://other.example.com/mcp\"",
            "resource",
        ),
        (
            "[resource]\nurl = \"https://mcp.example.com/mcp\"",
            "[resource]\nurl = \"https://mcp.example.com/mcp\"\n[client_metadata]\nmax_entries = 5",
            "client_metadata",
        ),
        (
            "[resource]\nurl = \"https://mcp.example.com/mcp\"",
            "[resource]\nurl = \"https://mcp.example.com/mcp\"\n[tracing]\notlp_endpoint = \"http://127.0.0.1:4318/v1/traces\"",
            "tracing",
        ),
        (
            "[resource]\nurl = \"https://mcp.example.com/mcp\"",
            "[resource]\nurl = \"https://mcp.example.com/mcp\"\n[runtime]\nworker_threads = 3",
            "runtime",
        ),
    ] {
        let changed = format!("{BASE}{DENY_MALLORY}").replace(from, to);
        assert_ne!(changed, format!("{BASE}{DENY_MALLORY}"), "{key}");
        file.write(&changed);
        let error = reloader.reload().await.unwrap_err().to_string();
        assert_eq!(
            error,
            format!("config: {key}: cannot change on reload; restart authz to apply it")
        );
        assert_eq!(authorizer.fingerprint(), before, "{key}");
    }
}

#[tokio::test]
async fn the_watcher_reloads_when_the_file_changes() {
    let file = TempFile::new(BASE);
    let (reloader, authorizer) = reloader(&file);
    let before = authorizer.fingerprint();
    let stop = CancellationToken::new();
    let watcher = tokio::spawn(
        reloader
            .clone()
            .watch(Duration::from_millis(20), stop.clone()),
    );
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(
        reloader.version().reloads,
        0,
        "an unchanged file is not reloaded"
    );

    file.write(&format!("{BASE}{DENY_MALLORY}"));
    for _ in 0..100 {
        if reloader.version().reloads == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(reloader.version().reloads, 1);
    assert_ne!(authorizer.fingerprint(), before);
    stop.cancel();
    watcher.await.unwrap();
}
