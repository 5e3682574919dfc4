//! A real verifier against the in-process Google stand-in, shared by the verification targets.
//! No token the fuzzer can produce is valid (it holds no signing key and no access token was
//! ever minted), so any allow is a bug.

use std::sync::{Arc, OnceLock};

use authz::{authorizer::Authorizer, config::Config, google::Google};
use tokio::runtime::Runtime;

#[allow(dead_code)] // each target uses a different part
pub struct Fixture {
    pub runtime: Runtime,
    pub authorizer: Arc<Authorizer>,
    pub config: Config,
}

pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (config, google) = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let standin = standin::StandIn::start(listener, standin::Options::default())
                .await
                .expect("stand-in");
            let issuer = standin.issuer().to_string();
            let env = [
                (
                    "AUTHZ_GOOGLE__CLIENT_IDS",
                    "fuzz.apps.googleusercontent.com".to_string(),
                ),
                ("AUTHZ_GOOGLE__ISSUER", issuer.clone()),
                ("AUTHZ_GOOGLE__TOKENINFO_URL", format!("{issuer}/tokeninfo")),
                ("AUTHZ_ACCESS__DOMAINS", "example.com".into()),
                ("AUTHZ_RESOURCE__URL", "https://mcp.example.com/mcp".into()),
                ("AUTHZ_CACHE__MAX_ENTRIES", "1000".into()),
            ];
            let config = Config::load(None, env.map(|(k, v)| (k.to_string(), v))).expect("config");
            let google = Google::new(&config).expect("google");
            tokio::spawn(google.clone().run(Default::default()));
            while !google.is_ready() {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            std::mem::forget(standin);
            (config, google)
        });
        let authorizer = Arc::new(Authorizer::new(&config, google, None));
        Fixture {
            runtime,
            authorizer,
            config,
        }
    })
}
