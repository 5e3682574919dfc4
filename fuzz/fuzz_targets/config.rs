//! The config file and environment overrides: never a panic, and anything accepted is valid.
#![no_main]

use authz::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, Vec<(String, String)>)| {
    let (file, env) = input;
    let env = env.into_iter().map(|(k, v)| (format!("AUTHZ_{k}"), v));
    match Config::load(Some(file), env) {
        Ok(config) => {
            assert!(!config.google.client_ids.is_empty());
            assert!(!config.access.domains.is_empty());
            assert!(config.cache.max_entries > 0);
        }
        Err(error) => {
            let text = error.to_string();
            assert!(
                text.starts_with("config: ") && !text.contains('\n'),
                "{text:?}"
            );
        }
    }
});
