//! `ferry` end to end: the built binary against a real ferry-api over TCP
//! (in-process, `ferry_api::testing`), on SQLite and PostgreSQL, with its
//! configuration in a temporary `FERRY_CONFIG_DIR`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use ferry_api::auth::{IdentityConfig, ThrottlePolicy};
use ferry_api::testing::TestApi;
use ferry_proto::ferry::v1 as pb;
use pb::auth_service_client::AuthServiceClient;
use serde_json::Value;
use tempfile::TempDir;
use tokio::io::AsyncWriteExt as _;

const PASSWORD: &str = "correct horse battery";

/// What one `ferry` run did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> Self {
        assert_eq!(self.code, 0, "expected success: {self:#?}");
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// A config directory, a working directory and the api they talk to.
struct Cli {
    config: TempDir,
    work: PathBuf,
    _work_dir: TempDir,
    url: String,
}

impl Cli {
    fn new(api: &TestApi) -> Cli {
        let work_dir = tempfile::tempdir().unwrap();
        Cli {
            config: tempfile::tempdir().unwrap(),
            work: work_dir.path().to_path_buf(),
            _work_dir: work_dir,
            url: api.url(),
        }
    }

    fn config_file(&self) -> PathBuf {
        self.config.path().join("config.toml")
    }

    /// Runs `ferry args...` in `dir` with `stdin`.
    async fn run_in(&self, dir: &Path, args: &[&str], stdin: &str) -> Run {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(args)
            .current_dir(dir)
            .env("FERRY_CONFIG_DIR", self.config.path())
            .env("NO_COLOR", "1")
            .env_remove("FERRY_SERVER")
            .env_remove("FERRY_TOKEN")
            .env_remove("FERRY_ORG")
            .env_remove("FERRY_PROJECT")
            .env_remove("FERRY_CONTEXT")
            .env_remove("FERRY_OTP")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).await.unwrap();
        drop(input);
        let output =
            tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
                .await
                .expect("ferry finishes")
                .unwrap();
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        }
    }

    async fn run(&self, args: &[&str]) -> Run {
        self.run_in(&self.work, args, "").await
    }

    async fn login(&self, username: &str, stdin: &str) -> Run {
        let args = [
            "login",
            "--server",
            &self.url,
            "--username",
            username,
            "--password-stdin",
        ];
        self.run_in(&self.work, &args, stdin).await
    }
}

fn identity() -> IdentityConfig {
    IdentityConfig {
        throttle: ThrottlePolicy {
            account_free_failures: 50,
            ip_free_failures: 500,
            register_free: 10_000,
            ..ThrottlePolicy::default()
        },
        ..IdentityConfig::default()
    }
}

async fn register(api: &TestApi, username: &str) -> AuthServiceClient<tonic::transport::Channel> {
    let mut auth = AuthServiceClient::connect(api.url()).await.unwrap();
    auth.register(pb::RegisterRequest {
        email: format!("{username}@example.com"),
        username: username.into(),
        password: PASSWORD.into(),
    })
    .await
    .unwrap();
    auth
}

/// A registered, logged-in user's CLI with an organization and a project
/// (the defaults of its context).
async fn tenant(api: &TestApi, user: &str, org: &str, project: &str) -> Cli {
    register(api, user).await;
    let cli = Cli::new(api);
    cli.login(user, &format!("{PASSWORD}\n")).await.ok();
    cli.run(&["orgs", "create", org]).await.ok();
    cli.run(&["projects", "create", project]).await.ok();
    cli
}

/// Every test body runs once per database (SQLite, then PostgreSQL).
macro_rules! on_every_db {
    ($name:ident, |$api:ident| $body:block) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            for db in ferry_tests::migrated_dbs().await {
                let $api = ferry_api::testing::start(&db.conn, identity()).await;
                $body
                $api.stop().await;
            }
        }
    };
}

on_every_db!(login_contexts_logout_and_the_config_file_mode, |api| {
    register(&api, "ada").await;
    let cli = Cli::new(&api);

    // Not logged in: exit 3 and a hint.
    let run = cli.run(&["whoami"]).await;
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(run.stderr.contains("hint: run `ferry login`"), "{run:#?}");
    let run = cli.login("ada", "wrong password\n").await;
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(
        run.stderr
            .contains("error: not logged in or the session expired"),
        "{run:#?}"
    );

    let run = cli.login("ada", &format!("{PASSWORD}\n")).await.ok();
    assert!(run.stdout.contains("as ada"), "{run:#?}");
    let mode = std::fs::metadata(cli.config_file())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let run = cli.run(&["whoami"]).await.ok();
    assert!(run.stdout.contains("ada <ada@example.com>"), "{run:#?}");
    let me = cli.run(&["whoami", "-o", "json"]).await.ok().json();
    assert_eq!(me["username"], "ada");
    assert_eq!(me["totpEnabled"], false);

    // A second context, switching back and forth.
    cli.run(&["context", "add", "other", "--url", "http://127.0.0.1:1"])
        .await
        .ok();
    let list = cli
        .run(&["context", "list", "-o", "json"])
        .await
        .ok()
        .json();
    let current: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["current"] == true)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(current, ["other"]);
    let run = cli.run(&["whoami"]).await;
    assert_eq!(run.code, 3, "the new context has no login: {run:#?}");
    let run = cli.run(&["--context", "default", "whoami"]).await.ok();
    assert!(run.stdout.contains("ada"), "{run:#?}");
    cli.run(&["context", "use", "default"]).await.ok();
    let run = cli.run(&["context", "list"]).await.ok();
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with('*') && l.contains("default")),
        "{run:#?}"
    );
    assert_eq!(cli.run(&["context", "use", "nope"]).await.code, 4);

    // A token instead of the saved session (CI).
    let text = std::fs::read_to_string(cli.config_file()).unwrap();
    let token = text
        .lines()
        .find_map(|l| l.strip_prefix("token = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_string();
    let run = cli
        .run(&[
            "--context",
            "other",
            "--server",
            &cli.url,
            "--token",
            &token,
            "whoami",
        ])
        .await
        .ok();
    assert!(run.stdout.contains("ada"), "{run:#?}");

    // A group-readable config file is refused, with the fix.
    std::fs::set_permissions(cli.config_file(), std::fs::Permissions::from_mode(0o640)).unwrap();
    let run = cli.run(&["whoami"]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("readable by other users"), "{run:#?}");
    assert!(run.stderr.contains("chmod 600"), "{run:#?}");
    std::fs::set_permissions(cli.config_file(), std::fs::Permissions::from_mode(0o600)).unwrap();

    cli.run(&["logout"]).await.ok();
    let run = cli.run(&["whoami"]).await;
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(run.stderr.contains("ferry login"), "{run:#?}");
    // The server forgot the session too.
    let run = cli.run(&["--token", &token, "whoami"]).await;
    assert_eq!(run.code, 3, "{run:#?}");
});

fn bearer<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// The TOTP code for `secret`, `offset` 30-second steps from now.
fn totp(secret: &str, offset: i64) -> String {
    let totp = totp_rs::Builder::new()
        .with_secret(totp_rs::Secret::try_from_base32(secret).unwrap())
        .build()
        .unwrap();
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    totp.generate(t.checked_add_signed(offset * 30).unwrap())
        .to_string()
}

on_every_db!(login_with_a_second_factor, |api| {
    let mut auth = register(&api, "bob").await;
    let session = auth
        .login(pb::LoginRequest {
            login: "bob".into(),
            password: PASSWORD.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    let begun = auth
        .begin_totp_enrollment(bearer(
            &session,
            pb::BeginTotpEnrollmentRequest {
                password: PASSWORD.into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    auth.confirm_totp_enrollment(bearer(
        &session,
        pb::ConfirmTotpEnrollmentRequest {
            code: totp(&begun.secret, 0),
        },
    ))
    .await
    .unwrap();

    let cli = Cli::new(&api);
    // Without a code and without a terminal: told how to pass one.
    let run = cli.login("bob", &format!("{PASSWORD}\n")).await;
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(run.stderr.contains("second factor"), "{run:#?}");
    assert!(run.stderr.contains("--otp"), "{run:#?}");
    // The code as the second stdin line (next step: the current one is spent).
    let stdin = format!("{PASSWORD}\n{}\n", totp(&begun.secret, 1));
    cli.login("bob", &stdin).await.ok();
    let me = cli.run(&["whoami", "-o", "json"]).await.ok().json();
    assert_eq!(me["totpEnabled"], true);
});

on_every_db!(create_deploy_history_rollback_link_and_json, |api| {
    register(&api, "cyd").await;
    let cli = Cli::new(&api);
    cli.login("cyd", &format!("{PASSWORD}\n")).await.ok();

    let org = cli
        .run(&["orgs", "create", "Acme", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(org["name"], "Acme");
    let project = cli
        .run(&["projects", "create", "shop", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(project["name"], "shop");
    assert!(
        project["namespace"]
            .as_str()
            .unwrap()
            .starts_with("ferry-shop-")
    );
    let service = cli
        .run(&[
            "services",
            "create",
            "web",
            "--image",
            "nginx:1.27",
            "--port",
            "80",
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(service["image"], "nginx:1.27");
    assert_eq!(service["ports"][0]["containerPort"], 80);
    let service_id = service["id"].as_str().unwrap().to_string();

    // Names or ids, tables, -q.
    let table = cli.run(&["services", "list"]).await.ok().stdout;
    let header = table.lines().next().unwrap();
    assert!(
        header.starts_with("ID") && header.contains("NAME") && header.contains("IMAGE"),
        "{table}"
    );
    assert!(table.contains("nginx:1.27"), "{table}");
    let ids = cli.run(&["services", "list", "-q"]).await.ok().stdout;
    assert_eq!(ids.trim(), service_id);
    let by_id = cli
        .run(&["services", "get", &service_id, "-q"])
        .await
        .ok()
        .stdout;
    assert_eq!(by_id.trim(), service_id);
    let by_flag = cli
        .run(&[
            "--org",
            "Acme",
            "--project",
            "shop",
            "services",
            "list",
            "-q",
        ])
        .await
        .ok();
    assert_eq!(by_flag.stdout.trim(), service_id);
    let yaml = cli
        .run(&["projects", "list", "-o", "yaml"])
        .await
        .ok()
        .stdout;
    assert!(yaml.contains("name: shop"), "{yaml}");

    // Environment: secrets are write-only.
    cli.run(&["env", "set", "web", "LOG_LEVEL=debug"])
        .await
        .ok();
    cli.run(&["env", "set", "web", "API_KEY=s3cret", "--secret"])
        .await
        .ok();
    let vars = cli
        .run(&["env", "list", "web", "-o", "json"])
        .await
        .ok()
        .json();
    let vars = vars.as_array().unwrap();
    assert_eq!(vars.len(), 2);
    assert!(!vars.iter().any(|v| v["value"] == "s3cret"), "{vars:?}");
    assert!(
        vars.iter()
            .any(|v| v["key"] == "LOG_LEVEL" && v["value"] == "debug"),
        "{vars:?}"
    );
    let run = cli.run(&["env", "set", "web", "NOEQUALS"]).await;
    assert_eq!(run.code, 2, "{run:#?}");

    // Deploy (plan-only api), history, plan, rollback.
    let run = cli.run(&["deploy", "web"]).await.ok();
    assert!(run.stdout.contains("planned"), "{run:#?}");
    assert!(
        run.stdout.contains("s] "),
        "stage lines carry the elapsed time: {run:#?}"
    );
    let second = cli
        .run(&["deploy", "web", "--detach", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(second["serviceId"], service_id.as_str());
    let history = cli
        .run(&["deployments", "web", "-o", "json"])
        .await
        .ok()
        .json();
    let history = history.as_array().unwrap();
    assert_eq!(history.len(), 2);
    assert!(
        history
            .iter()
            .all(|d| d["status"] == "DEPLOYMENT_STATUS_PLANNED"),
        "{history:?}"
    );
    let first_id = history[1]["id"].as_str().unwrap().to_string();
    let table = cli.run(&["deployments", "web"]).await.ok().stdout;
    assert!(
        table.contains("planned") && table.contains("manual"),
        "{table}"
    );

    let plan = cli.run(&["plan", "web"]).await.ok().stdout;
    assert!(plan.contains("kind: Deployment"), "{plan}");
    assert!(!plan.contains("s3cret"), "{plan}");

    let run = cli.run(&["rollback", "web"]).await.ok();
    assert!(
        run.stdout.contains(&format!("rolling back to {first_id}")),
        "{run:#?}"
    );
    let history = cli
        .run(&["deployments", "web", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(history.as_array().unwrap().len(), 3);
    assert_eq!(history[0]["trigger"], "DEPLOYMENT_TRIGGER_ROLLBACK");

    // `ferry link` writes ferry.toml; later commands read it from any subdirectory.
    let linked = cli.work.join("app");
    std::fs::create_dir_all(linked.join("src")).unwrap();
    cli.run_in(&linked, &["link", "--service", "web"], "")
        .await
        .ok();
    let toml = std::fs::read_to_string(linked.join("ferry.toml")).unwrap();
    assert!(toml.contains(&service_id), "{toml}");
    let run = cli
        .run_in(&linked.join("src"), &["deployments", "-q"], "")
        .await
        .ok();
    assert_eq!(run.stdout.lines().count(), 3, "{run:#?}");

    // Scale and stop.
    let scaled = cli
        .run(&["scale", "web", "3", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(scaled["replicas"], 3);

    // Errors: the server's field name and exit 5; unknown names exit 4.
    let run = cli
        .run(&["services", "create", "Not A Name!", "--image", "nginx"])
        .await;
    assert_eq!(run.code, 5, "{run:#?}");
    assert!(
        run.stderr
            .starts_with("error: invalid argument: field `name`"),
        "{run:#?}"
    );
    assert!(!run.stderr.contains("Status {"), "{run:#?}");
    let run = cli.run(&["deploy", "nope"]).await;
    assert_eq!(run.code, 4, "{run:#?}");
    assert!(run.stderr.contains("no service named `nope`"), "{run:#?}");
    let run = cli.run(&["services", "list", "--bogus"]).await;
    assert_eq!(run.code, 2, "{run:#?}");

    // Logs and events: the server answers UNIMPLEMENTED (or, once it streams,
    // FAILED_PRECONDITION without a cluster): a clear message, exit 1.
    for args in [&["logs", "web"][..], &["events", "web"]] {
        let run = cli.run(args).await;
        assert_eq!(run.code, 1, "{run:#?}");
        assert!(
            run.stderr.contains("not implemented by the server")
                || run.stderr.contains("are not available"),
            "{run:#?}"
        );
    }

    cli.run(&["services", "delete", "web"]).await.ok();
    assert_eq!(cli.run(&["services", "list", "-q"]).await.ok().stdout, "");
});

on_every_db!(up_and_down_from_a_compose_file, |api| {
    let cli = tenant(&api, "dee", "Dee Co", "stackz").await;

    let dir = cli.work.join("shop");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("compose.yaml"),
        "services:\n  web_app:\n    image: nginx:1.27\n    ports:\n      - \"8080:80\"\n  cache:\n    image: redis:7\n",
    )
    .unwrap();
    let run = cli.run_in(&dir, &["up"], "").await.ok();
    assert!(run.stderr.contains("warning: services.web_app"), "{run:#?}");
    assert!(run.stdout.contains("created: "), "{run:#?}");
    assert!(run.stdout.contains("planned"), "{run:#?}");
    assert!(
        run.stdout.contains("stack `shop`: 2 service(s) deployed"),
        "{run:#?}"
    );
    let services = cli
        .run(&["services", "list", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(services.as_array().unwrap().len(), 2, "{services}");

    // Again with one service fewer: updated in place, by file path.
    std::fs::write(
        dir.join("compose.yaml"),
        "services:\n  cache:\n    image: redis:7.2\n",
    )
    .unwrap();
    let file = dir.join("compose.yaml");
    let run = cli
        .run(&["up", "-f", file.to_str().unwrap(), "--detach", "-o", "json"])
        .await
        .ok();
    assert!(run.stderr.contains("removed: "), "{run:#?}");
    assert_eq!(run.json().as_array().unwrap().len(), 1);
    let services = cli
        .run(&["services", "list", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(services[0]["image"], "redis:7.2");

    cli.run_in(&dir, &["down"], "").await.ok();
    assert_eq!(cli.run(&["services", "list", "-q"]).await.ok().stdout, "");
    let run = cli.run_in(&dir, &["down"], "").await;
    assert_eq!(run.code, 4, "{run:#?}");
});

#[tokio::test]
async fn completions_man_page_and_version_need_no_server() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &'static [&'static str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(args)
            .env("FERRY_CONFIG_DIR", dir.path())
            .output()
            .unwrap()
    };
    let bash = run(&["completion", "bash"]);
    assert!(bash.status.success());
    assert!(String::from_utf8_lossy(&bash.stdout).contains("_ferry()"));
    for shell in ["zsh", "fish"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["completion", shell])
            .output()
            .unwrap();
        assert!(out.status.success() && !out.stdout.is_empty(), "{shell}");
    }
    let man = run(&["man"]);
    assert!(String::from_utf8_lossy(&man.stdout).contains(".TH ferry"));
    let version = run(&["--version"]);
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        concat!("ferry ", env!("CARGO_PKG_VERSION"))
    );
    let help = run(&["--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("Exit codes:")
            && help.contains("6  deployment failed")
            && help.contains("7  build failed"),
        "{help}"
    );
    assert!(!dir.path().join("config.toml").exists());
}

/// Cold start of `ferry services list` against a local api (SQLite), one
/// process per call: `FERRY_BENCH_BIN=target/release/ferry cargo nextest run
/// -p ferry-cli --run-ignored only services_list_cold_start --no-capture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn services_list_cold_start() {
    let db = ferry_tests::TestDb::sqlite().await;
    db.migrate().await;
    let api = ferry_api::testing::start(&db.conn, identity()).await;
    let cli = tenant(&api, "bench", "Bench", "bench").await;
    for name in ["web", "api", "worker"] {
        cli.run(&[
            "services", "create", name, "--image", "nginx", "--port", "80",
        ])
        .await
        .ok();
    }
    let bin =
        std::env::var("FERRY_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ferry").into());
    let mut times = Vec::new();
    for _ in 0..100 {
        let start = std::time::Instant::now();
        let out = tokio::process::Command::new(&bin)
            .args(["services", "list"])
            .current_dir(&cli.work)
            .env("FERRY_CONFIG_DIR", cli.config.path())
            .output()
            .await
            .unwrap();
        times.push(start.elapsed().as_secs_f64() * 1000.0);
        assert!(out.status.success());
    }
    times.sort_by(f64::total_cmp);
    println!(
        "ferry services list ({bin}): p50 {:.1} ms, p90 {:.1} ms, min {:.1} ms",
        times[50], times[90], times[0]
    );
    api.stop().await;
}

/// With a (fake, in-memory) cluster: `ferry deploy` follows the rollout to
/// `running`, and a rollout stuck on ImagePullBackOff exits 6 with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_follows_the_rollout_and_a_failure_exits_6() {
    use ferry_k8s::fake::{Behavior, FakeCluster};
    let db = ferry_tests::TestDb::sqlite().await;
    db.migrate().await;
    let fake = FakeCluster::new();
    let mut state = ferry_api::testing::state(&db.conn, None);
    state.cluster = Some(std::sync::Arc::new(
        ferry_k8s::cluster::Cluster::new(fake.client())
            .with_pod_check_interval(std::time::Duration::from_millis(20)),
    ));
    state.deploy.rollout_timeout = std::time::Duration::from_secs(20);
    let api = ferry_api::testing::start_state(&state, identity()).await;
    let cli = tenant(&api, "eve", "Eve", "live").await;
    cli.run(&[
        "services",
        "create",
        "web",
        "--image",
        "nginx:1.27",
        "--port",
        "80",
    ])
    .await
    .ok();

    fake.set_behavior("web", Behavior::Ready);
    let run = cli.run(&["deploy", "web"]).await.ok();
    assert!(run.stdout.contains("running after"), "{run:#?}");

    fake.set_behavior("web", Behavior::ImagePullBackOff);
    let run = cli
        .run(&["deploy", "web", "--image", "nginx:does-not-exist"])
        .await;
    assert_eq!(run.code, 6, "{run:#?}");
    assert!(run.stderr.contains("failed after"), "{run:#?}");
    assert!(run.stderr.contains("ImagePullBackOff"), "{run:#?}");
    let history = cli
        .run(&["deployments", "web", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(history[0]["status"], "DEPLOYMENT_STATUS_FAILED");

    // `ferry logs`: the service's pods, each line prefixed by its pod.
    let service = cli
        .run(&["services", "get", "web", "-o", "json"])
        .await
        .ok()
        .json();
    let projects = cli
        .run(&["projects", "list", "-o", "json"])
        .await
        .ok()
        .json();
    let (id, ns) = (
        service["id"].as_str().unwrap_or_default().to_owned(),
        projects[0]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    );
    let run = cli.run(&["logs", "web", "--tail", "10"]).await.ok();
    assert!(run.stderr.contains("no log lines"), "{run:#?}");
    for pod in ["web-a", "web-b"] {
        fake.insert(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod,
                "namespace": ns,
                "labels": {
                    "app.kubernetes.io/managed-by": "ferry",
                    "ferry.dev/service-id": id,
                },
            },
            "spec": { "containers": [{ "name": "app", "image": "nginx:1" }] },
            "status": { "phase": "Running" },
        }));
        fake.append_log(&ns, pod, "app", &format!("hello from {pod}"));
    }
    let run = cli.run(&["logs", "web", "--tail", "10"]).await.ok();
    for pod in ["web-a", "web-b"] {
        assert!(
            run.stdout.contains(&format!("{pod} | hello from {pod}")),
            "{run:#?}"
        );
    }
    api.stop().await;
}

on_every_db!(builds_are_triggered_listed_and_cancelled, |api| {
    let cli = tenant(&api, "boris", "Boris", "shop").await;
    cli.run(&["services", "create", "web", "--image", "nginx:1.27"])
        .await
        .ok();
    // Connect GitHub (token on stdin): the webhook URL and secret are shown once.
    let run = cli
        .run_in(
            &cli.work,
            &[
                "git",
                "connect",
                "gh",
                "--provider",
                "github",
                "--token-stdin",
            ],
            "github_pat_secret_value\n",
        )
        .await
        .ok();
    assert!(run.stdout.contains("/hooks/git/"), "{run:#?}");
    assert!(
        run.stderr.contains("shown once") || run.stdout.contains("shown once"),
        "{run:#?}"
    );
    assert!(!run.stdout.contains("github_pat_secret_value"), "{run:#?}");
    let list = cli.run(&["git", "list", "-o", "json"]).await.ok().json();
    assert_eq!(list[0]["name"], "gh", "{list}");
    // The secret is never listed again.
    assert!(
        list[0]["webhookSecret"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "{list}"
    );
    let run = cli
        .run(&[
            "builds", "config", "web", "--git", "gh", "--repo", "acme/web", "--watch", "src/**",
        ])
        .await
        .ok();
    assert!(run.stdout.contains("acme/web"), "{run:#?}");
    let run = cli
        .run(&[
            "builds", "config", "web", "--git", "gh", "--repo", "acme/web", "--branch", "a..b",
        ])
        .await;
    assert_ne!(run.code, 0, "{run:#?}");
    assert!(run.stderr.contains("branch"), "{run:#?}");

    let run = cli.run(&["builds", "trigger", "web"]).await.ok();
    assert!(run.stdout.contains("queued"), "{run:#?}");
    let list = cli
        .run(&["builds", "list", "web", "-o", "json"])
        .await
        .ok()
        .json();
    let id = list[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(list[0]["status"], "BUILD_STATUS_QUEUED", "{list}");
    let run = cli.run(&["builds", "cancel", &id]).await.ok();
    assert!(run.stdout.contains("cancelled"), "{run:#?}");
    let run = cli.run(&["builds", "cancel", &id]).await;
    assert_ne!(run.code, 0, "{run:#?}");
    assert!(run.stderr.contains("already finished"), "{run:#?}");
    let run = cli.run(&["builds", "deliveries", "web"]).await.ok();
    assert!(run.stdout.contains("DELIVERY"), "{run:#?}");
});

/// A scripted ferry-builder for `builds logs`: each RunBuild plays the next
/// script; a [`Step::Hold`] waits for [`ScriptedBuilder::release`].
mod scripted {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use ferry_proto::ferry::internal::v1 as ipb;
    use ipb::build_event::Event;
    use ipb::builder_service_server::{BuilderService, BuilderServiceServer};
    use tokio::sync::{Notify, mpsc};
    use tokio_stream::wrappers::ReceiverStream;
    use tonic::{Request, Response, Status};

    pub const IMAGE: &str = "registry.example.test/shop/web@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    pub enum Step {
        Send(Event),
        Hold,
    }

    #[derive(Clone, Default)]
    pub struct ScriptedBuilder {
        pub scripts: Arc<Mutex<VecDeque<Vec<Step>>>>,
        pub release: Arc<Notify>,
    }

    impl ScriptedBuilder {
        pub fn push(&self, script: Vec<Step>) {
            self.scripts.lock().unwrap().push_back(script);
        }
    }

    pub fn resolved(commit: &str) -> Step {
        Step::Send(Event::Resolved(ipb::Resolved {
            commit_sha: commit.into(),
            build_type: "dockerfile".into(),
            detection: vec!["Dockerfile found at Dockerfile".into()],
            job_name: "ferry-build-0123456789ab".into(),
        }))
    }

    pub fn step(name: &str) -> Step {
        Step::Send(Event::Progress(ipb::Progress {
            step: name.into(),
            message: String::new(),
        }))
    }

    pub fn logs(step: &str, lines: &[&str]) -> Step {
        Step::Send(Event::Logs(ipb::BuildLogLines {
            lines: lines
                .iter()
                .map(|l| ipb::BuildLogLine {
                    timestamp: None,
                    step: step.into(),
                    line: (*l).into(),
                })
                .collect(),
        }))
    }

    pub fn finished() -> Step {
        Step::Send(Event::Finished(ipb::Finished {
            image: IMAGE.into(),
            digest: IMAGE.rsplit('@').next().unwrap().into(),
        }))
    }

    pub fn failed(step: &str, reason: &str, timed_out: bool) -> Step {
        Step::Send(Event::Failed(ipb::Failed {
            step: step.into(),
            reason: reason.into(),
            last_lines: vec!["(last lines)".into()],
            timed_out,
        }))
    }

    #[tonic::async_trait]
    impl BuilderService for ScriptedBuilder {
        type RunBuildStream = ReceiverStream<Result<ipb::BuildEvent, Status>>;

        async fn run_build(
            &self,
            _request: Request<ipb::RunBuildRequest>,
        ) -> Result<Response<Self::RunBuildStream>, Status> {
            let script = self
                .scripts
                .lock()
                .unwrap()
                .pop_front()
                .ok_or_else(|| Status::failed_precondition("no script left"))?;
            let (tx, rx) = mpsc::channel(64);
            let release = self.release.clone();
            tokio::spawn(async move {
                for step in script {
                    match step {
                        Step::Hold => release.notified().await,
                        Step::Send(event) => {
                            let event = ipb::BuildEvent {
                                at: None,
                                event: Some(event),
                            };
                            if tx.send(Ok(event)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
            Ok(Response::new(ReceiverStream::new(rx)))
        }

        async fn cancel_build(
            &self,
            _request: Request<ipb::CancelBuildRequest>,
        ) -> Result<Response<ipb::CancelBuildResponse>, Status> {
            Ok(Response::new(ipb::CancelBuildResponse { found: true }))
        }
    }

    /// Serves `builder` on a loopback port; returns its `http://` URL.
    pub async fn serve(builder: ScriptedBuilder, stop: ferry_common::Shutdown) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(BuilderServiceServer::new(builder))
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    stop.wait(),
                ),
        );
        format!("http://{addr}")
    }
}

/// `ferry builds logs` against a real api whose build runner drives a
/// scripted builder: stored lines without `-f`; with `-f` the lines that
/// arrive while it follows, then exit 0 on success and 7 with the reason on
/// failure, time-out and cancel; `builds trigger --follow` the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_logs_follow_a_build_to_its_end() {
    use scripted::*;
    use std::time::Duration;
    for db in ferry_tests::migrated_dbs().await {
        let state = ferry_api::testing::state(&db.conn, None);
        let api = ferry_api::testing::start_state(&state, identity()).await;
        let builder = ScriptedBuilder::default();
        let stop = ferry_common::Shutdown::new();
        let url = serve(builder.clone(), stop.clone()).await;
        ferry_api::builds::runner::BuildRunner::new(
            db.conn.clone(),
            state.keyring.clone(),
            ferry_api::deployer(&state),
            ferry_api::builds::runner::RunnerConfig {
                builder_url: Some(url),
                poll: Duration::from_millis(100),
                lease_ttl: Duration::from_millis(900),
                ..Default::default()
            },
            state.builds.clone(),
            stop.clone(),
        )
        .unwrap()
        .spawn();

        let cli = tenant(&api, "bea", "Bea", "shop").await;
        cli.run(&["services", "create", "web", "--image", "nginx:1.27"])
            .await
            .ok();
        let connect = [
            "git",
            "connect",
            "gh",
            "--provider",
            "github",
            "--token-stdin",
        ];
        cli.run_in(&cli.work, &connect, "github_pat_x\n").await.ok();
        cli.run(&[
            "builds", "config", "web", "--git", "gh", "--repo", "acme/web",
        ])
        .await
        .ok();

        // Held after the clone: `logs` shows what is stored, `logs -f`
        // also what comes while it follows.
        let commit = "c".repeat(40);
        builder.push(vec![
            resolved(&commit),
            step("clone"),
            logs("clone", &["Cloning into '/workspace/src'..."]),
            Step::Hold,
            step("build"),
            logs(
                "build",
                &["#1 [internal] load build definition", "#9 DONE 1.2s"],
            ),
            finished(),
        ]);
        let id = cli
            .run(&["builds", "trigger", "web", "-q"])
            .await
            .ok()
            .stdout;
        let id = id.trim().to_owned();
        let mut so_far = None;
        for _ in 0..100 {
            let run = cli.run(&["builds", "logs", &id]).await.ok();
            if run.stdout.contains("Cloning into") {
                so_far = Some(run);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let so_far = so_far.expect("the clone lines are stored");
        assert!(!so_far.stdout.contains("#9 DONE"), "{so_far:#?}");
        assert!(so_far.stderr.contains("(`-f` follows it)"), "{so_far:#?}");

        let release = async {
            // Long enough for `ferry` to start following first.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            builder.release.notify_one();
        };
        let follow = ["builds", "logs", &id, "--follow"];
        let (run, ()) = tokio::join!(cli.run(&follow), release);
        let run = run.ok();
        let lines: Vec<&str> = run.stdout.lines().collect();
        assert_eq!(
            lines,
            [
                &format!("building commit {commit} (dockerfile)"),
                "  Dockerfile found at Dockerfile",
                "step clone",
                "Cloning into '/workspace/src'...",
                "step build",
                "#1 [internal] load build definition",
                "#9 DONE 1.2s",
                &format!("pushed {IMAGE}"),
                // The hand-over to the deploy, in the same transaction as
                // the deployment leaving `building`: the last line.
                &format!("deploying the built image {IMAGE}"),
            ],
            "{run:#?}"
        );
        assert!(
            run.stderr
                .contains(&format!("build {id} succeeded: {IMAGE}")),
            "{run:#?}"
        );
        // -o json: one object a line.
        let run = cli.run(&["builds", "logs", &id, "-o", "json"]).await.ok();
        let first: Value = serde_json::from_str(run.stdout.lines().next().unwrap()).unwrap();
        assert_eq!(first["level"], "info", "{run:#?}");
        assert!(
            first["message"]
                .as_str()
                .unwrap()
                .starts_with("building commit"),
            "{run:#?}"
        );
        assert_eq!(run.stdout.lines().count(), 8, "{run:#?}");

        // `trigger --follow`: a failure exits 7 with the step and reason.
        builder.push(vec![
            resolved(&commit),
            step("build"),
            logs("build", &["npm ERR! missing script: build"]),
            failed("build", "exit code 1", false),
        ]);
        let run = cli.run(&["builds", "trigger", "web", "--follow"]).await;
        assert_eq!(run.code, 7, "{run:#?}");
        assert!(
            run.stdout.contains("npm ERR! missing script: build"),
            "{run:#?}"
        );
        assert!(
            run.stderr
                .contains("failed: build failed at step build: exit code 1"),
            "{run:#?}"
        );

        // A time-out, the same under -o json (stdout stays empty).
        builder.push(vec![
            resolved(&commit),
            failed("build", "did not finish within 1800s", true),
        ]);
        let run = cli
            .run(&["builds", "trigger", "web", "--follow", "-o", "json"])
            .await;
        assert_eq!(run.code, 7, "{run:#?}");
        assert!(run.stderr.contains("timed out: "), "{run:#?}");
        assert_eq!(run.stdout, "", "{run:#?}");

        // Cancelled while followed.
        builder.push(vec![
            resolved(&commit),
            logs("build", &["#1 waiting"]),
            Step::Hold,
        ]);
        let id = cli
            .run(&["builds", "trigger", "web", "-q"])
            .await
            .ok()
            .stdout;
        let id = id.trim().to_owned();
        let cancel = async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            cli.run(&["builds", "cancel", &id]).await.ok();
        };
        let follow = ["builds", "logs", &id, "-f"];
        let (run, ()) = tokio::join!(cli.run(&follow), cancel);
        assert_eq!(run.code, 7, "{run:#?}");
        assert!(run.stdout.contains("#1 waiting"), "{run:#?}");
        assert!(run.stderr.contains("was cancelled: "), "{run:#?}");

        // A success under -o json: the lines on stderr, the build on stdout.
        builder.push(vec![
            resolved(&commit),
            logs("build", &["#9 DONE 0.1s"]),
            finished(),
        ]);
        let run = cli
            .run(&["builds", "trigger", "web", "--follow", "-o", "json"])
            .await
            .ok();
        assert_eq!(run.json()["status"], "BUILD_STATUS_SUCCEEDED", "{run:#?}");
        assert!(run.stderr.contains("#9 DONE 0.1s"), "{run:#?}");

        stop.trigger();
        builder.release.notify_waiters();
        api.stop().await;
    }
}

on_every_db!(jobs_are_created_run_and_removed, |api| {
    let cli = tenant(&api, "jola", "Jola", "shop").await;
    let run = cli
        .run(&[
            "jobs",
            "create",
            "report",
            "--image",
            "busybox:1.36",
            "--schedule",
            "30 2 * * *",
            "--tz",
            "Europe/Berlin",
            "--",
            "sh",
            "-c",
            "echo hi",
        ])
        .await
        .ok();
    assert!(run.stdout.contains("report"), "{run:#?}");
    assert!(run.stdout.contains("Europe/Berlin"), "{run:#?}");
    let job = cli
        .run(&["jobs", "get", "report", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(job["command"], serde_json::json!(["sh", "-c", "echo hi"]));
    assert_eq!(job["nextRuns"].as_array().unwrap().len(), 5, "{job}");
    let run = cli.run(&["jobs", "get", "report"]).await.ok();
    assert!(run.stdout.contains("Next runs: "), "{run:#?}");

    // The api's refusal names the field.
    let run = cli
        .run(&[
            "jobs",
            "create",
            "bad",
            "--image",
            "busybox:1.36",
            "--schedule",
            "61 * * * *",
        ])
        .await;
    assert_ne!(run.code, 0, "{run:#?}");
    assert!(run.stderr.contains("schedule"), "{run:#?}");

    // Run now; under the default policy (forbid) not twice at once.
    let run = cli.run(&["jobs", "run", "report"]).await.ok();
    assert!(run.stdout.contains("pending"), "{run:#?}");
    let run = cli.run(&["jobs", "run", "report"]).await;
    assert_ne!(run.code, 0, "{run:#?}");
    assert!(run.stderr.contains("still"), "{run:#?}");
    let runs = cli
        .run(&["jobs", "runs", "report", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs}");
    assert_eq!(runs[0]["status"], "JOB_RUN_STATUS_PENDING", "{runs}");
    assert_eq!(runs[0]["trigger"], "JOB_RUN_TRIGGER_MANUAL", "{runs}");
    let run = cli.run(&["jobs", "logs", "report"]).await.ok();
    assert!(run.stdout.is_empty(), "{run:#?}");
    assert!(run.stderr.contains("still active"), "{run:#?}");
    let run = cli.run(&["jobs", "list"]).await.ok();
    assert!(
        run.stdout.contains("report") && run.stdout.contains("pending"),
        "{run:#?}"
    );

    let run = cli.run(&["jobs", "rm", "report"]).await.ok();
    assert!(run.stdout.contains("Deleted job `report`"), "{run:#?}");
    let list = cli.run(&["jobs", "list", "-o", "json"]).await.ok().json();
    assert_eq!(list, serde_json::json!([]));
    let run = cli.run(&["jobs", "get", "report"]).await;
    assert_eq!(run.code, 4, "not found: {run:#?}");
});

/// `ferry domains`: add prints both proofs, verify fails in words until
/// the TXT record is published (on a loopback DNS server), list and rm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domains_are_added_proven_listed_and_removed() {
    let dns = ferry_api::testing::TxtServer::start().await;
    for db in ferry_tests::migrated_dbs().await {
        let mut state = ferry_api::testing::state(&db.conn, None);
        state.deploy.domains.dns_resolver = Some(dns.addr);
        state.deploy.domains.dns_timeout = std::time::Duration::from_millis(300);
        let api = ferry_api::testing::start_state(&state, identity()).await;
        let cli = tenant(&api, "dora", "Dora", "shop").await;

        let run = cli.run(&["domains", "add", "Shop.Dora.test"]).await.ok();
        assert!(run.stdout.contains("shop.dora.test"), "{run:#?}");
        assert!(
            run.stdout.contains("_ferry-challenge.shop.dora.test  TXT"),
            "{run:#?}"
        );
        assert!(
            run.stdout.contains("verify shop.dora.test --http"),
            "{run:#?}"
        );
        let list = cli
            .run(&["domains", "list", "-o", "json"])
            .await
            .ok()
            .json();
        assert_eq!(list[0]["status"], "pending", "{list}");
        let token = list[0]["txtRecordValue"].as_str().unwrap().to_owned();

        let run = cli.run(&["domains", "verify", "shop.dora.test"]).await;
        assert_ne!(run.code, 0, "{run:#?}");
        assert!(run.stderr.contains("no TXT record"), "{run:#?}");
        let run = cli
            .run(&["domains", "verify", "shop.dora.test", "--http"])
            .await;
        assert_ne!(run.code, 0, "{run:#?}");
        assert!(run.stderr.contains("no A record"), "{run:#?}");
        dns.set("_ferry-challenge.shop.dora.test", &[&token]);
        let run = cli
            .run(&["domains", "verify", "SHOP.dora.test."])
            .await
            .ok();
        assert!(run.stdout.contains("is verified"), "{run:#?}");
        let run = cli.run(&["domains", "list"]).await.ok();
        assert!(
            run.stdout.contains("verified") && run.stdout.contains("dns"),
            "{run:#?}"
        );

        let run = cli.run(&["domains", "rm", "shop.dora.test"]).await.ok();
        assert!(run.stdout.contains("Removed domain"), "{run:#?}");
        let list = cli
            .run(&["domains", "list", "-o", "json"])
            .await
            .ok()
            .json();
        assert_eq!(list, serde_json::json!([]));
        let run = cli.run(&["domains", "rm", "shop.dora.test"]).await;
        assert_ne!(run.code, 0, "{run:#?}");
        dns.set("_ferry-challenge.shop.dora.test", &[]);
        api.stop().await;
    }
}
