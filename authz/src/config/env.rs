//! `AUTHZ_*` environment variables laid over the file: `AUTHZ_<SECTION>__<KEY>`, a value read
//! as TOML when it parses as one.

use std::collections::BTreeMap;

use super::ConfigError;

/// The environment variable prefix for overrides.
pub const ENV_PREFIX: &str = "AUTHZ_";
/// Read by the CLI for the config path; not a config key.
pub const ENV_CONFIG_PATH: &str = "AUTHZ_CONFIG";
/// Variables with our prefix that are the CLI's, not config keys (`authz admin` reads the
/// admin token from them; an ECS task may set them in the authz container).
const NOT_CONFIG_KEYS: [&str; 3] = [
    ENV_CONFIG_PATH,
    "AUTHZ_ADMIN_TOKEN",
    "AUTHZ_ADMIN_TOKEN_FILE",
];
/// The top-level sections, to tell `AUTHZ_GOOGLE_CLIENT_IDS` what it meant.
const SECTIONS: [&str; 18] = [
    "listen",
    "google",
    "access",
    "policies",
    "routes",
    "groups",
    "secrets",
    "resource",
    "resources",
    "oauth",
    "cache",
    "headers",
    "envoy",
    "log",
    "tracing",
    "client_metadata",
    "store",
    "runtime",
];

/// serde's "missing field `x`" at `path`, said as the key to set and its variable. A missing
/// section is said as the key it requires.
pub(super) fn missing_key(path: &str, message: &str) -> Option<ConfigError> {
    let field = message.strip_prefix("missing field `")?.split('`').next()?;
    let key = match (path, field) {
        ("", "google") => "google.client_ids".to_string(),
        ("", "access") => "access.domains".to_string(),
        ("", field) => field.to_string(),
        (path, field) => format!("{path}.{field}"),
    };
    let plain = key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    let message = if plain {
        format!("required (in the file, or as {})", env_name(&key))
    } else {
        "required".to_string()
    };
    Some(ConfigError { key, message })
}

/// The variable that sets `key` (`google.client_ids` -> `AUTHZ_GOOGLE__CLIENT_IDS`).
pub fn env_name(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        key.replace('.', "__").to_ascii_uppercase()
    )
}

/// Applies `AUTHZ_A__B=value` pairs onto the TOML tree as `a.b = value`.
pub(super) fn overlay_env(
    tree: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    // Sorted so that a clash (`AUTHZ_GOOGLE=x` and `AUTHZ_GOOGLE__ISSUER=y`) fails the same way
    // on every start.
    let vars: BTreeMap<String, String> = env
        .into_iter()
        .filter(|(name, _)| {
            name.starts_with(ENV_PREFIX) && !NOT_CONFIG_KEYS.contains(&name.as_str())
        })
        .collect();
    for (name, raw) in vars {
        let path: Vec<String> = name[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        let key = path.join(".");
        // `AUTHZ_GOOGLE_CLIENT_IDS`: a level joined with one underscore.
        if !SECTIONS.contains(&path[0].as_str()) {
            if let Some(section) = SECTIONS
                .iter()
                .find(|section| path[0].starts_with(&format!("{section}_")))
            {
                let meant = format!("{section}.{}", &key[section.len() + 1..]);
                return Err(ConfigError {
                    key: name,
                    message: format!(
                        "levels are separated by two underscores: {} sets {meant}",
                        env_name(&meant)
                    ),
                });
            }
        }
        if path.iter().any(String::is_empty) {
            return Err(ConfigError {
                key: name,
                message: "malformed variable name".into(),
            });
        }
        let (leaf, parents) = path.split_last().expect("split yields at least one part");
        let mut table = &mut *tree;
        for part in parents {
            let entry = table
                .entry(part.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = entry.as_table_mut().ok_or_else(|| ConfigError {
                key: key.clone(),
                message: format!("{part} is not a section"),
            })?;
        }
        table.insert(leaf.clone(), env_value(&raw));
    }
    Ok(())
}

/// `10` -> integer, `["a"]` -> array, `example.com` -> string.
fn env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}
