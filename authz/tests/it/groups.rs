//! Group membership end to end against the stand-in: the three credential modes, the
//! Directory fallback for members outside the domain, the token cache, outages within and
//! beyond the stale bound, and the quota backoff.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use authz::{
    config::GroupsConfig,
    groups::{Freshness, Groups, GroupsError, Membership},
    secrets::Secrets,
    service_auth::AwsEnv,
};
use standin::{
    Endpoint, FaultMode, FaultSpec, Options, ServiceAccountSpec, StandIn, WorkloadIdentitySpec,
};

const SA: &str = "authz@groups-test.iam.gserviceaccount.com";
const ADMIN: &str = "admin@example.com";
const DIRECTORY_SCOPE: &str =
    "https://www.googleapis.com/auth/admin.directory.group.member.readonly";
const AUDIENCE: &str =
    "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/aws/providers/aws";

/// A stand-in with a small tenant: `sre` holds ada and the nested group `oncall` (bob);
/// `partners` holds carol (active) and dave (suspended) from outside the domain.
struct Tenant {
    standin: StandIn,
    files: Vec<PathBuf>,
}

impl Drop for Tenant {
    fn drop(&mut self) {
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
    }
}

async fn tenant() -> Tenant {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let standin = StandIn::start(listener, Options::default()).await.unwrap();
    standin.set_directory(&["example.com"], &[ADMIN]);
    standin.set_group(
        "sre@example.com",
        &["ada@example.com", "oncall@example.com"],
    );
    standin.set_group("oncall@example.com", &["bob@example.com"]);
    standin.set_group(
        "partners@example.com",
        &["carol@partner.org", "dave@partner.org"],
    );
    standin
        .set_member_status("partners@example.com", "dave@partner.org", "SUSPENDED")
        .unwrap();
    Tenant {
        standin,
        files: Vec::new(),
    }
}

impl Tenant {
    fn base(&self) -> &str {
        self.standin.issuer()
    }

    /// Writes `json` to a file of its own and returns the path as a TOML string.
    fn write(&mut self, json: &serde_json::Value) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "authz-groups-it-{}-{}.json",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::write(&path, json.to_string()).unwrap();
        self.files.push(path.clone());
        path.to_str().unwrap().replace('\\', "\\\\")
    }

    async fn key_file(&mut self) -> String {
        let key = self
            .standin
            .create_service_account(&ServiceAccountSpec {
                email: SA.into(),
                delegated_scopes: vec![DIRECTORY_SCOPE.into()],
                group_admin: true,
            })
            .await;
        self.write(&key)
    }

    /// Registers an AWS workload allowed to impersonate [`SA`] and writes its credential file.
    async fn external_account_file(&mut self) -> String {
        let json = self.external_account_json().await;
        self.write(&json)
    }

    async fn external_account_json(&mut self) -> serde_json::Value {
        self.standin
            .create_service_account(&ServiceAccountSpec {
                email: SA.into(),
                delegated_scopes: vec![DIRECTORY_SCOPE.into()],
                group_admin: true,
            })
            .await;
        self.standin.add_workload_identity(WorkloadIdentitySpec {
            audience: AUDIENCE.into(),
            aws_access_key_id: "AKIAGROUPSTEST".into(),
            aws_secret_access_key: "groups-test-secret".into(),
            aws_session_token: None,
            service_account: SA.into(),
        });
        self.standin.external_account_json(AUDIENCE, SA)
    }

    /// A `[groups]` section pointing at the stand-in; `extra` adds keys and the credentials.
    fn config(&self, extra: &str) -> GroupsConfig {
        let base = self.base();
        let text = format!(
            r#"
            directory_url = "{base}"
            cloud_identity_url = "{base}"
            iam_credentials_url = "{base}"
            token_url = "{token}"
            # Generous: these tests are about answers, not timeouts, and the stand-in shares
            # the test's runtime on a machine that may be busy.
            request_timeout = "10s"
            {extra}
            "#,
            token = self.standin.token_url(),
        );
        toml::from_str(&text).unwrap()
    }

    fn fault(&self, mode: FaultMode, status: u16, endpoint: Endpoint) {
        self.standin
            .set_fault(&FaultSpec {
                mode,
                status: Some(status),
                endpoints: Some(vec![endpoint]),
            })
            .unwrap();
    }
}

fn key_credentials(file: &str, subject: Option<&str>) -> String {
    let subject = subject.map_or(String::new(), |s| format!("subject = \"{s}\""));
    format!("[credentials]\nkind = \"service-account-key\"\nfile = \"{file}\"\n{subject}")
}

fn external_credentials(file: &str, subject: Option<&str>) -> String {
    let subject = subject.map_or(String::new(), |s| format!("subject = \"{s}\""));
    format!(
        "[credentials]\nkind = \"external-account\"\nfile = \"{file}\"\nservice_account = \"{SA}\"\n{subject}"
    )
}

/// [`Groups::with_aws_env`] with secrets read as configured (files here) and no refresher.
async fn groups_with(config: &GroupsConfig, aws_env: AwsEnv) -> anyhow::Result<Groups> {
    let secrets = Secrets::new(&Default::default(), Default::default());
    Groups::with_aws_env(config, &secrets, aws_env).await
}

/// The answers for the tenant's fixed cases through `groups`.
async fn check_tenant(groups: &Groups) {
    for (email, group, expected) in [
        ("ada@example.com", "sre@example.com", true),
        ("Bob@Example.com", "SRE@example.com", true),
        ("eve@example.com", "sre@example.com", false),
        ("ada@example.com", "oncall@example.com", false),
        ("ada@example.com", "no-such-group@example.com", false),
    ] {
        let answer = groups.is_member(email, group).await;
        assert_eq!(
            answer.as_ref().map(|m| m.is_member),
            Ok(expected),
            "{email} in {group}: {answer:?}"
        );
    }
}

#[tokio::test]
async fn key_with_subject_reads_nested_membership_from_the_directory() {
    let mut t = tenant().await;
    let file = t.key_file().await;
    let groups = groups_with(
        &t.config(&key_credentials(&file, Some(ADMIN))),
        AwsEnv::default(),
    )
    .await
    .unwrap();
    check_tenant(&groups).await;
    let stats = t.standin.stats();
    assert_eq!(stats.token, 1);
    assert_eq!(stats.directory_has_member, 5);
    assert_eq!(stats.cloudidentity_check, 0);
    assert_eq!(
        groups.is_member("ada@example.com", "sre@example.com").await,
        Ok(Membership {
            is_member: true,
            freshness: Freshness::Cached
        })
    );
    assert!(groups.ready().await);
}

#[tokio::test]
async fn directory_falls_back_to_members_get_outside_the_domain() {
    let mut t = tenant().await;
    let file = t.key_file().await;
    let groups = groups_with(
        &t.config(&key_credentials(&file, Some(ADMIN))),
        AwsEnv::default(),
    )
    .await
    .unwrap();
    for (email, expected) in [
        ("carol@partner.org", true),
        ("dave@partner.org", false),
        ("erin@partner.org", false),
    ] {
        let answer = groups.is_member(email, "partners@example.com").await;
        assert_eq!(answer.map(|m| m.is_member), Ok(expected), "{email}");
    }
    assert_eq!(t.standin.stats().directory_members_get, 3);
}

#[tokio::test]
async fn external_account_with_subject_signs_through_iam_for_the_directory() {
    let mut t = tenant().await;
    let file = t.external_account_file().await;
    // No AWS variables: region and credentials come from the metadata URLs in the file.
    let groups = groups_with(
        &t.config(&external_credentials(&file, Some(ADMIN))),
        AwsEnv::default(),
    )
    .await
    .unwrap();
    check_tenant(&groups).await;
    let stats = t.standin.stats();
    assert_eq!(stats.sts, 1);
    assert_eq!(stats.iamcredentials_generate_access_token, 1);
    assert_eq!(stats.iamcredentials_sign_jwt, 1);
    assert_eq!(stats.token, 1);
}

#[tokio::test]
async fn external_account_reads_ecs_container_credentials() {
    let mut t = tenant().await;
    // No metadata URLs in the file: the container endpoint is the only source of credentials.
    let mut json = t.external_account_json().await;
    let source = json["credential_source"].as_object_mut().unwrap();
    for imds in ["url", "region_url", "imdsv2_session_token_url"] {
        source.remove(imds);
    }
    let file = t.write(&json);
    // The ECS task role arrives through the container credentials endpoint; the stand-in's
    // metadata server answers that format too.
    let role = reqwest::get(format!("{}/aws/credentials", t.base()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let env = AwsEnv::from_vars(
        [
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                format!("{}/aws/credentials/{}", t.base(), role.trim()),
            ),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN",
                "ecs-agent-token".into(),
            ),
            ("AWS_REGION", "eu-west-1".into()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    );
    let groups = groups_with(
        &t.config(&format!(
            "api = \"cloud-identity\"\n{}",
            external_credentials(&file, None)
        )),
        env,
    )
    .await
    .unwrap();
    check_tenant(&groups).await;
    assert_eq!(t.standin.stats().sts, 1);
}

#[tokio::test]
async fn wrong_aws_keys_are_refused_by_sts() {
    let mut t = tenant().await;
    let file = t.external_account_file().await;
    let env = AwsEnv::from_vars(
        [
            ("AWS_ACCESS_KEY_ID", "AKIAGROUPSTEST"),
            ("AWS_SECRET_ACCESS_KEY", "not-the-secret"),
            ("AWS_REGION", "us-east-1"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let groups = groups_with(
        &t.config(&format!(
            "api = \"cloud-identity\"\n{}",
            external_credentials(&file, None)
        )),
        env,
    )
    .await
    .unwrap();
    let answer = groups.is_member("ada@example.com", "sre@example.com").await;
    assert!(
        matches!(&answer, Err(GroupsError::Credentials(e)) if e.rejected && e.problem.contains("signature")),
        "{answer:?}"
    );
    assert!(!groups.ready().await);
}

#[tokio::test]
async fn key_without_subject_uses_cloud_identity() {
    let mut t = tenant().await;
    let file = t.key_file().await;
    let groups = groups_with(
        &t.config(&format!(
            "api = \"cloud-identity\"\n{}",
            key_credentials(&file, None)
        )),
        AwsEnv::default(),
    )
    .await
    .unwrap();
    check_tenant(&groups).await;
    let stats = t.standin.stats();
    assert_eq!(stats.token, 1);
    assert_eq!(stats.directory_has_member, 0);
    // One lookup per known group (sre, oncall) plus the unknown one; names are cached.
    assert_eq!(stats.cloudidentity_lookup, 3);
    assert_eq!(stats.cloudidentity_check, 4);
}

#[tokio::test]
async fn external_account_without_subject_uses_cloud_identity() {
    let mut t = tenant().await;
    let file = t.external_account_file().await;
    let groups = groups_with(
        &t.config(&format!(
            "api = \"cloud-identity\"\n{}",
            external_credentials(&file, None)
        )),
        AwsEnv::default(),
    )
    .await
    .unwrap();
    check_tenant(&groups).await;
    let stats = t.standin.stats();
    assert_eq!(stats.sts, 1);
    assert_eq!(stats.iamcredentials_generate_access_token, 1);
    assert_eq!(stats.iamcredentials_sign_jwt, 0);
    assert_eq!(stats.token, 0);
}

#[tokio::test]
async fn the_api_token_is_fetched_once_for_many_lookups() {
    let mut t = tenant().await;
    let file = t.key_file().await;
    let groups = groups_with(
        &t.config(&key_credentials(&file, Some(ADMIN))),
        AwsEnv::default(),
    )
    .await
    .unwrap();
    let lookups = (0..40).map(|i| {
        let groups = groups.clone();
        async move {
            groups
                .is_member(&format!("user{i}@example.com"), "sre@example.com")
                .await
        }
    });
    let answers = futures::future::join_all(lookups).await;
    assert!(
        answers
            .iter()
            .all(|a| a.as_ref().is_ok_and(|m| !m.is_member))
    );
    let stats = t.standin.stats();
    assert_eq!(stats.token, 1);
    assert_eq!(stats.directory_has_member, 40);
}

#[tokio::test]
async fn an_outage_serves_stale_answers_within_the_bound_only() {
    let mut t = tenant().await;
    let file = t.key_file().await;
    let groups = groups_with(
        &t.config(&format!(
            "positive_ttl = \"300ms\"\nnegative_ttl = \"300ms\"\nrefresh_ahead = \"0s\"\nstale_bound = \"700ms\"\n{}",
            key_credentials(&file, Some(ADMIN))
        )),
        AwsEnv::default(),
    ).await
    .unwrap();
    let fresh = groups.is_member("ada@example.com", "sre@example.com").await;
    assert_eq!(fresh.map(|m| m.freshness), Ok(Freshness::Fresh));
    t.fault(FaultMode::Error, 503, Endpoint::Directory);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        groups.is_member("ada@example.com", "sre@example.com").await,
        Ok(Membership {
            is_member: true,
            freshness: Freshness::Stale
        })
    );
    // Nobody we never asked about gets a stale answer.
    let unknown = groups.is_member("bob@example.com", "sre@example.com").await;
    assert!(
        matches!(unknown, Err(GroupsError::Unavailable { .. })),
        "{unknown:?}"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    let beyond = groups.is_member("ada@example.com", "sre@example.com").await;
    assert!(
        matches!(beyond, Err(GroupsError::Unavailable { .. })),
        "{beyond:?}"
    );
    t.fault(FaultMode::Ok, 200, Endpoint::Directory);
    let back = groups.is_member("ada@example.com", "sre@example.com").await;
    assert_eq!(back.map(|m| m.freshness), Ok(Freshness::Fresh));
}

#[tokio::test]
async fn a_quota_error_backs_off_without_calling_google() {
    let mut t = tenant().await;
    let file = t.key_file().await;
    let groups = groups_with(
        &t.config(&format!(
            "backoff_initial = \"500ms\"\nbackoff_max = \"2s\"\n{}",
            key_credentials(&file, Some(ADMIN))
        )),
        AwsEnv::default(),
    )
    .await
    .unwrap();
    t.fault(FaultMode::Quota, 403, Endpoint::Directory);
    let first = groups.is_member("ada@example.com", "sre@example.com").await;
    assert!(matches!(first, Err(GroupsError::Quota { .. })), "{first:?}");
    for i in 0..20 {
        let answer = groups
            .is_member(&format!("user{i}@example.com"), "sre@example.com")
            .await;
        assert_eq!(answer, Err(GroupsError::BackingOff));
    }
    assert_eq!(t.standin.stats().directory_has_member, 1);
    t.fault(FaultMode::Ok, 200, Endpoint::Directory);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = groups.is_member("ada@example.com", "sre@example.com").await;
    assert_eq!(after.map(|m| m.is_member), Ok(true));
    assert_eq!(t.standin.stats().directory_has_member, 2);
}

#[tokio::test]
async fn the_directory_without_a_subject_is_refused_at_start_up() {
    let mut t = tenant().await;
    let file = t.key_file().await;
    let error = groups_with(&t.config(&key_credentials(&file, None)), AwsEnv::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("groups.credentials.subject"), "{error}");
    let error = groups_with(
        &t.config(&key_credentials("no-such-file.json", Some(ADMIN))),
        AwsEnv::default(),
    )
    .await
    .unwrap_err();
    assert!(
        format!("{error:#}").contains("no-such-file.json"),
        "{error:#}"
    );
}
