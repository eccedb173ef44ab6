//! End-to-end parsing of realistic compose files (tests/fixtures) and of
//! small inline files for each rule.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use ferry_compose::{
    ComposeMount, ComposePort, ComposeProject, ComposeService, Error, NamedVolume, Protocol, parse,
};

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}.yml", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn service<'a>(project: &'a ComposeProject, name: &str) -> &'a ComposeService {
    project
        .services
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no service {name}"))
}

fn names(project: &ComposeProject) -> Vec<&str> {
    project.services.iter().map(|s| s.name.as_str()).collect()
}

fn warning_paths(project: &ComposeProject) -> Vec<&str> {
    project.warnings.iter().map(|w| w.path.as_str()).collect()
}

fn env_of(service: &ComposeService) -> Vec<(&str, &str)> {
    service
        .environment
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

fn tcp(container_port: u16, published: Option<u16>) -> ComposePort {
    ComposePort {
        container_port,
        published,
        protocol: Protocol::Tcp,
    }
}

fn mount(volume: &str, target: &str) -> ComposeMount {
    ComposeMount {
        volume: volume.into(),
        target: target.into(),
        read_only: false,
        sub_path: None,
    }
}

fn vol(name: &str, size_gb: Option<i32>) -> NamedVolume {
    NamedVolume {
        name: name.into(),
        size_gb,
    }
}

/// Parses an inline file with no variables.
fn inline(yaml: &str) -> Result<ComposeProject, Error> {
    parse(yaml, &BTreeMap::new())
}

fn refused_paths(err: Error) -> Vec<String> {
    match err {
        Error::Refused(refusals) => refusals.into_iter().map(|r| r.path).collect(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn wordpress_mysql() {
    let p = parse(
        &fixture("wordpress"),
        &env(&[
            ("MYSQL_ROOT_PASSWORD", "root"),
            ("WORDPRESS_DB_PASSWORD", "wp"),
        ]),
    )
    .unwrap();
    assert_eq!(names(&p), ["db", "wordpress"]);
    let db = service(&p, "db");
    assert_eq!(db.image, "mysql:8.0");
    assert_eq!(
        db.command,
        ["--default-authentication-plugin=mysql_native_password"]
    );
    assert_eq!(
        env_of(db),
        [
            ("MYSQL_DATABASE", "wordpress"),
            ("MYSQL_PASSWORD", "wp"),
            ("MYSQL_ROOT_PASSWORD", "root"),
            ("MYSQL_USER", "wordpress")
        ]
    );
    assert_eq!(db.ports, [tcp(3306, None), tcp(33060, None)]);
    assert_eq!(db.mounts, [mount("db-data", "/var/lib/mysql")]);
    let wp = service(&p, "wordpress");
    assert_eq!(wp.depends_on, ["db"]);
    assert_eq!(wp.ports, [tcp(80, Some(8080))]);
    assert_eq!(wp.mounts, [mount("wp-content", "/var/www/html/wp-content")]);
    assert!(env_of(wp).contains(&("WORDPRESS_DEBUG", "0")));
    assert!(env_of(wp).contains(&("WORDPRESS_DB_HOST", "db:3306")));
    assert_eq!(
        p.volumes,
        [vol("db-data", Some(10)), vol("wp-content", None)]
    );
    assert_eq!(
        warning_paths(&p),
        [
            "volumes.db_data",
            "volumes.wp_content",
            "services.db.restart",
            "services.wordpress.restart"
        ]
    );
}

#[test]
fn wordpress_requires_root_password() {
    let err = parse(
        &fixture("wordpress"),
        &env(&[("WORDPRESS_DB_PASSWORD", "wp")]),
    )
    .unwrap_err();
    assert_eq!(
        err,
        Error::RequiredVariable {
            name: "MYSQL_ROOT_PASSWORD".into(),
            path: "services.db.environment[0]".into(),
            message: "set the MySQL root password".into(),
        }
    );
}

#[test]
fn gitea_postgres() {
    let p = parse(&fixture("gitea"), &env(&[("DB_PASSWORD", "pw")])).unwrap();
    assert_eq!(names(&p), ["db", "server"]);
    let server = service(&p, "server");
    assert_eq!(server.ports, [tcp(3000, Some(3000)), tcp(22, Some(222))]);
    assert_eq!(server.mounts, [mount("gitea-data", "/data")]);
    assert!(env_of(server).contains(&("GITEA__database__PASSWD", "pw")));
    assert_eq!(server.healthcheck_port, Some(3000));
    assert_eq!(server.healthcheck_path.as_deref(), Some("/api/healthz"));
    let db = service(&p, "db");
    assert_eq!(db.healthcheck_port, None);
    assert_eq!(
        env_of(db),
        [
            ("POSTGRES_DB", "gitea"),
            ("POSTGRES_PASSWORD", "pw"),
            ("POSTGRES_USER", "gitea")
        ]
    );
    let paths = warning_paths(&p);
    for expected in [
        "version",
        "networks.gitea",
        "services.server.container_name",
        "services.server.networks",
        "services.server.healthcheck",
        "services.db.healthcheck",
    ] {
        assert!(
            paths.contains(&expected),
            "missing warning {expected} in {paths:?}"
        );
    }
    let db_health = p
        .warnings
        .iter()
        .find(|w| w.path == "services.db.healthcheck")
        .unwrap();
    assert!(db_health.message.contains("not mapped"));
}

#[test]
fn gitea_unset_variable_names_variable_and_path() {
    let err = parse(&fixture("gitea"), &BTreeMap::new()).unwrap_err();
    assert_eq!(
        err,
        Error::UnsetVariable {
            name: "DB_PASSWORD".into(),
            path: "services.server.environment[6]".into()
        }
    );
}

#[test]
fn nextcloud_redis_mariadb() {
    let p = parse(
        &fixture("nextcloud"),
        &env(&[
            ("MYSQL_ROOT_PASSWORD", "root"),
            ("MYSQL_PASSWORD", "mp"),
            ("DOMAIN", "cloud.example.com"),
        ]),
    )
    .unwrap();
    assert_eq!(names(&p), ["mariadb", "redis", "app"]);
    let db = service(&p, "mariadb");
    assert_eq!(
        db.command,
        [
            "--transaction-isolation=READ-COMMITTED",
            "--log-bin=binlog",
            "--binlog-format=ROW"
        ]
    );
    assert_eq!(db.memory_limit.as_deref(), Some("1Gi"));
    assert_eq!(db.memory_request.as_deref(), Some("512Mi"));
    assert_eq!(db.mounts, [mount("db", "/var/lib/mysql")]);
    let redis = service(&p, "redis");
    assert_eq!(
        redis.command,
        ["redis-server", "--save", "60", "1", "--loglevel", "warning"]
    );
    assert_eq!(redis.cpu_limit.as_deref(), Some("500m"));
    assert_eq!(redis.memory_limit.as_deref(), Some("256Mi"));
    let app = service(&p, "app");
    assert_eq!(app.ports, [tcp(80, Some(8081))]);
    assert_eq!(app.depends_on, ["mariadb", "redis"]);
    assert_eq!(app.replicas, Some(1));
    assert_eq!(app.cpu_limit.as_deref(), Some("2"));
    assert_eq!(app.memory_limit.as_deref(), Some("2Gi"));
    assert_eq!(app.cpu_request.as_deref(), Some("250m"));
    assert_eq!(
        app.mounts,
        [
            mount("nextcloud", "/var/www/html"),
            ComposeMount {
                sub_path: Some("config".into()),
                ..mount("nextcloud", "/var/www/html/config")
            },
            mount("nextcloud-data", "/var/www/html/data"),
        ]
    );
    assert!(env_of(app).contains(&("NEXTCLOUD_TRUSTED_DOMAINS", "cloud.example.com")));
    assert_eq!(
        p.volumes,
        [
            vol("db", None),
            vol("nextcloud", None),
            vol("nextcloud-data", Some(50))
        ]
    );
    assert!(warning_paths(&p).contains(&"name"));
    // x-ferry-size-gb is interpolated.
    let p = parse(
        &fixture("nextcloud"),
        &env(&[
            ("MYSQL_ROOT_PASSWORD", "r"),
            ("MYSQL_PASSWORD", "m"),
            ("DOMAIN", "d"),
            ("DATA_SIZE_GB", "200"),
        ]),
    )
    .unwrap();
    assert_eq!(p.volumes[2], vol("nextcloud-data", Some(200)));
}

#[test]
fn plausible_interpolation_and_conditions() {
    let vars = env(&[
        ("BASE_URL", "https://stats.example.com"),
        ("SECRET_KEY_BASE", "s3cr3t"),
    ]);
    let p = parse(&fixture("plausible"), &vars).unwrap();
    assert_eq!(
        names(&p),
        ["plausible-db", "plausible-events-db", "plausible"]
    );
    let app = service(&p, "plausible");
    assert_eq!(app.depends_on, ["plausible-db", "plausible-events-db"]);
    assert_eq!(
        app.command,
        [
            "sh",
            "-c",
            "/entrypoint.sh db createdb && /entrypoint.sh db migrate && /entrypoint.sh run"
        ]
    );
    assert_eq!(app.ports, [tcp(8000, Some(8000))]);
    let e = env_of(app);
    assert!(e.contains(&("BASE_URL", "https://stats.example.com")));
    assert!(e.contains(&(
        "DATABASE_URL",
        "postgres://postgres:postgres@plausible_db:5432/plausible_db"
    )));
    assert!(e.contains(&("HTTP_PORT", "8000")));
    assert!(e.contains(&("DISABLE_REGISTRATION", "invite_only")));
    assert!(e.contains(&("PRICE", "$5")));
    assert!(!e.iter().any(|(k, _)| *k == "MAILER_EMAIL"));
    let events = service(&p, "plausible-events-db");
    assert_eq!(
        (events.healthcheck_port, events.healthcheck_path.as_deref()),
        (Some(8123), Some("/ping"))
    );
    let paths = warning_paths(&p);
    for expected in [
        "services.plausible_db",
        "services.plausible_events_db",
        "services.plausible.depends_on.plausible_db.condition",
        "services.plausible.depends_on.plausible_events_db.condition",
        "services.plausible.ulimits",
        "services.plausible.environment[7]",
        "services.plausible.environment.DATABASE_URL",
    ] {
        assert!(
            paths.contains(&expected),
            "missing warning {expected} in {paths:?}"
        );
    }

    // Pass-through variables come from the stack variables; `${X-default}`
    // keeps a set-but-empty value.
    let mut vars = vars;
    vars.insert("MAILER_EMAIL".into(), "hi@example.com".into());
    vars.insert("POSTGRES_PASSWORD".into(), "pg".into());
    let p = parse(&fixture("plausible"), &vars).unwrap();
    let e = env_of(service(&p, "plausible"));
    assert!(e.contains(&("MAILER_EMAIL", "hi@example.com")));
    assert!(e.contains(&(
        "DATABASE_URL",
        "postgres://postgres:pg@plausible_db:5432/plausible_db"
    )));

    let err = parse(&fixture("plausible"), &env(&[("SECRET_KEY_BASE", "x")])).unwrap_err();
    assert!(matches!(&err, Error::RequiredVariable { name, message, .. }
        if name == "BASE_URL" && message.contains("plausible.example.com")));
}

#[test]
fn node_redis_anchors_merge_keys_and_extensions() {
    let p = parse(&fixture("node-redis"), &env(&[("TAG", "1.4.2")])).unwrap();
    assert_eq!(names(&p), ["cache", "web", "worker"]);
    let web = service(&p, "web");
    assert_eq!(web.image, "registry.example.com/acme/shop:1.4.2");
    assert_eq!(web.command, ["node", "dist/server.js"]);
    assert_eq!(
        env_of(web),
        [
            ("LOG_LEVEL", "info"),
            ("NODE_ENV", "production"),
            ("REDIS_URL", "redis://cache:6379")
        ]
    );
    // `ports: ["3000"]` and `expose: ["3000"]` are one port.
    assert_eq!(web.ports, [tcp(3000, None)]);
    assert_eq!(web.replicas, Some(2));
    assert_eq!(
        (
            web.cpu_limit.as_deref(),
            web.memory_limit.as_deref(),
            web.cpu_request.as_deref(),
            web.memory_request.as_deref()
        ),
        (Some("500m"), Some("512Mi"), Some("100m"), Some("128Mi"))
    );
    assert_eq!(
        (web.run_as_user, web.run_as_group),
        (Some(1000), Some(1000))
    );
    assert_eq!(web.working_dir.as_deref(), Some("/app"));
    assert_eq!(
        (web.healthcheck_port, web.healthcheck_path.as_deref()),
        (Some(3000), Some("/healthz"))
    );
    let worker = service(&p, "worker");
    assert_eq!(
        worker.command,
        ["node", "dist/worker.js", "--queue", "default high"]
    );
    assert!(env_of(worker).contains(&("WORKER_CONCURRENCY", "4")));
    assert!(env_of(worker).contains(&("NODE_ENV", "production")));
    assert_eq!(worker.replicas, None);
    assert_eq!(
        (worker.run_as_user, worker.run_as_group),
        (Some(1000), None)
    );
    let cache = service(&p, "cache");
    assert_eq!(
        cache.command,
        [
            "redis-server",
            "--appendonly",
            "yes",
            "--requirepass",
            "dev only"
        ]
    );
    assert_eq!(cache.mounts, [mount("redis", "/data")]);
    assert!(warning_paths(&p).contains(&"services.worker.init"));
    assert!(warning_paths(&p).contains(&"services.web.labels"));
}

#[test]
fn uptime_kuma_single_service() {
    let p = parse(&fixture("uptime-kuma"), &BTreeMap::new()).unwrap();
    assert_eq!(names(&p), ["uptime-kuma"]);
    let s = &p.services[0];
    assert_eq!(s.image, "louislam/uptime-kuma:1");
    assert_eq!(s.ports, [tcp(3001, Some(3001))]);
    assert_eq!(s.mounts, [mount("uptime-kuma", "/app/data")]);
    assert_eq!(p.volumes, [vol("uptime-kuma", None)]);
    assert_eq!(
        warning_paths(&p),
        [
            "services.uptime-kuma.container_name",
            "services.uptime-kuma.restart"
        ]
    );
}

#[test]
fn dangerous_file_reports_every_refusal() {
    let err = parse(&fixture("dangerous"), &BTreeMap::new()).unwrap_err();
    let text = err.to_string();
    let paths = refused_paths(err);
    assert_eq!(
        paths,
        [
            "volumes.legacy.external",
            "networks.macvlan.driver",
            "secrets",
            "configs",
            "services.agent.privileged",
            "services.agent.network_mode",
            "services.agent.pid",
            "services.agent.ipc",
            "services.agent.userns_mode",
            "services.agent.cap_add",
            "services.agent.devices",
            "services.agent.security_opt[1]",
            "services.agent.sysctls",
            "services.agent.volumes[0]",
            "services.agent.volumes[1]",
            "services.agent.volumes[2]",
            "services.agent.volumes[3]",
            "services.agent.volumes[4].type",
            "services.agent.env_file",
            "services.agent.user",
            "services.sidecar.build",
            "services.sidecar.volumes_from",
            "services.sidecar.extends",
            "services.sidecar.secrets",
            "services.sidecar.configs",
        ]
    );
    // The Display lists every path with its reason.
    for path in &paths {
        assert!(
            text.contains(&format!("  - {path}: ")),
            "{path} missing from {text}"
        );
    }
    assert!(text.contains("Docker socket"));
    assert!(text.contains("push the image"));
    assert!(text.contains("inline the variables under `environment:`"));
}

#[test]
fn docker_socket_refused_in_every_form() {
    for volume in [
        "/var/run/docker.sock:/var/run/docker.sock:ro",
        "/run/docker.sock:/tmp/d.sock",
        "{type: bind, source: /var/run/docker.sock, target: /var/run/docker.sock}",
        "{type: volume, source: data, target: /var/run/docker.sock}",
    ] {
        let yaml = format!(
            "services:\n  a:\n    image: x\n    volumes:\n      - {volume}\nvolumes:\n  data:\n"
        );
        let err = inline(&yaml).unwrap_err();
        assert!(err.to_string().contains("Docker socket"), "{volume}: {err}");
    }
    let err = inline("services:\n  a:\n    image: x\n    use_api_socket: true\n").unwrap_err();
    assert_eq!(refused_paths(err), ["services.a.use_api_socket"]);
}

#[test]
fn refusals_win_over_other_errors_and_defaults_are_accepted() {
    let err =
        inline("services:\n  a:\n    image: x\n    bogus: 1\n    privileged: true\n").unwrap_err();
    assert_eq!(refused_paths(err), ["services.a.privileged"]);
    // Keys set to their harmless defaults are fine.
    let p = inline(
        "services:\n  a:\n    image: x\n    privileged: false\n    cap_add: []\n    init: false\n    tty: false\n    network_mode: bridge\n    security_opt: [no-new-privileges:true]\n",
    )
    .unwrap();
    assert_eq!(
        warning_paths(&p),
        ["services.a.network_mode", "services.a.security_opt[0]"]
    );
    let err =
        inline("services:\n  a:\n    image: x\n    network_mode: service:b\n  b:\n    image: y\n")
            .unwrap_err();
    assert_eq!(refused_paths(err), ["services.a.network_mode"]);
}

#[test]
fn unknown_keys_are_errors() {
    let cases = [
        ("bogus: 1\nservices:\n  a:\n    image: x\n", "bogus"),
        (
            "services:\n  a:\n    image: x\n    imgae: y\n",
            "services.a.imgae",
        ),
        (
            "services:\n  a:\n    image: x\n    blkio_config: {weight: 300}\n",
            "services.a.blkio_config",
        ),
        (
            "services:\n  a:\n    image: x\n    deploy: {resource: {}}\n",
            "services.a.deploy.resource",
        ),
        (
            "services:\n  a:\n    image: x\n    deploy: {resources: {limits: {memroy: 1g}}}\n",
            "services.a.deploy.resources.limits.memroy",
        ),
        (
            "services:\n  a:\n    image: x\n    ports: [{target: 80, publish: 8080}]\n",
            "services.a.ports[0].publish",
        ),
        (
            "services:\n  a:\n    image: x\n    volumes: [{type: volume, source: v, target: /d, bind: {}}]\nvolumes: {v: {}}\n",
            "services.a.volumes[0].bind",
        ),
        (
            "services:\n  a:\n    image: x\n    healthcheck: {test: [NONE], intervall: 1s}\n",
            "services.a.healthcheck.intervall",
        ),
        (
            "services:\n  a:\n    image: x\n    depends_on: {b: {conditon: service_started}}\n  b:\n    image: y\n",
            "services.a.depends_on.b.conditon",
        ),
        (
            "services:\n  a:\n    image: x\nvolumes:\n  v:\n    size: 10\n",
            "volumes.v.size",
        ),
    ];
    for (yaml, path) in cases {
        assert_eq!(
            inline(yaml).unwrap_err(),
            Error::Unsupported { path: path.into() },
            "{yaml}"
        );
    }
    // x-* extensions are ignored everywhere, and not interpolated.
    let p = inline(
        "x-top: ${UNSET}\nservices:\n  a:\n    image: x\n    x-note: $UNSET\n    deploy: {x-d: 1, resources: {x-r: 1}}\n    ports: [{target: 80, x-p: 1}]\n",
    )
    .unwrap();
    assert!(p.warnings.is_empty());
}

#[test]
fn dependency_cycles_and_unknown_dependencies() {
    let err = inline(
        "services:\n  a: {image: x, depends_on: [b]}\n  b: {image: x, depends_on: [c]}\n  c: {image: x, depends_on: [a]}\n  d: {image: x}\n",
    )
    .unwrap_err();
    assert_eq!(
        err,
        Error::DependencyCycle(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    assert_eq!(err.to_string(), "depends_on cycle: a -> b -> c -> a");

    let err = inline("services:\n  a: {image: x, depends_on: [a]}\n").unwrap_err();
    assert_eq!(err, Error::DependencyCycle(vec!["a".into(), "a".into()]));

    // A cycle downstream of an acyclic part names only the loop.
    let err = inline(
        "services:\n  a: {image: x, depends_on: [b]}\n  b: {image: x, depends_on: [c]}\n  c: {image: x, depends_on: [b]}\n",
    )
    .unwrap_err();
    assert_eq!(
        err,
        Error::DependencyCycle(vec!["b".into(), "c".into(), "b".into()])
    );

    let err = inline("services:\n  web: {image: x, depends_on: [db]}\n").unwrap_err();
    assert_eq!(
        err,
        Error::UnknownDependency {
            service: "web".into(),
            dependency: "db".into()
        }
    );
}

#[test]
fn ordering_is_dependencies_first_then_by_name() {
    let p = inline(
        "services:\n  zeta: {image: x}\n  app: {image: x, depends_on: {db: {condition: service_started}, cache: null}}\n  db: {image: x}\n  cache: {image: x, depends_on: [zeta]}\n  alpha: {image: x}\n",
    )
    .unwrap();
    assert_eq!(names(&p), ["alpha", "db", "zeta", "cache", "app"]);
    assert_eq!(service(&p, "app").depends_on, ["cache", "db"]);
}

#[test]
fn service_names() {
    let p = inline("services:\n  my_app: {image: x, depends_on: [my_db]}\n  my_db: {image: y}\n")
        .unwrap();
    assert_eq!(names(&p), ["my-db", "my-app"]);
    assert_eq!(service(&p, "my-app").depends_on, ["my-db"]);
    for bad in ["Web", "web.1", "-web", "a".repeat(64).as_str(), "web_"] {
        let err = inline(&format!("services:\n  {bad}: {{image: x}}\n")).unwrap_err();
        assert!(
            matches!(&err, Error::Invalid { path, .. } if path == &format!("services.{bad}")),
            "{bad}: {err:?}"
        );
    }
    let err = inline("services:\n  my_app: {image: x}\n  my-app: {image: x}\n").unwrap_err();
    assert!(err.to_string().contains("both"), "{err}");
}

#[test]
fn image_is_required_and_build_is_refused() {
    let err = inline("services:\n  a:\n    command: x\n").unwrap_err();
    assert!(
        matches!(&err, Error::Invalid { path, message } if path == "services.a" && message.contains("image"))
    );
    let err = inline("services:\n  a:\n    image: x\n    build: .\n").unwrap_err();
    assert_eq!(refused_paths(err), ["services.a.build"]);
    let err = inline("services:\n  a:\n    build: {context: .}\n").unwrap_err();
    assert_eq!(refused_paths(err), ["services.a.build"]);
}

#[test]
fn ports_long_and_short_syntaxes() {
    let p = inline(
        "services:\n  dns:\n    image: x\n    ports:\n      - 53:53/udp\n      - \"127.0.0.1:8080:80\"\n      - 9000-9001:9000-9001\n      - target: 443\n        published: \"8443\"\n        protocol: tcp\n        mode: host\n      - 8125\n    expose: [\"7000/udp\", 80]\n",
    )
    .unwrap();
    let udp = |c, p| ComposePort {
        container_port: c,
        published: p,
        protocol: Protocol::Udp,
    };
    assert_eq!(
        p.services[0].ports,
        [
            udp(53, Some(53)),
            tcp(80, Some(8080)),
            tcp(9000, Some(9000)),
            tcp(9001, Some(9001)),
            tcp(443, Some(8443)),
            tcp(8125, None),
            udp(7000, None)
        ]
    );
    assert_eq!(
        warning_paths(&p),
        ["services.dns.ports[1]", "services.dns.ports[3].mode"]
    );
    for bad in [
        "[\"1-1000\"]",
        "[\"80/sctp\"]",
        "[{published: 80}]",
        "[\"x\"]",
    ] {
        let err = inline(&format!(
            "services:\n  a:\n    image: x\n    ports: {bad}\n"
        ))
        .unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }), "{bad}: {err:?}");
    }
}

#[test]
fn volumes_syntaxes() {
    let p = inline(
        "services:\n  a:\n    image: x\n    volumes:\n      - data:/data:ro\n      - /cache\n      - type: volume\n        source: data\n        target: /b\n        read_only: true\n        volume: {nocopy: true, subpath: sub/dir}\n      - type: tmpfs\n        target: /tmp\n    tmpfs: /run\nvolumes:\n  data:\n",
    )
    .unwrap();
    assert_eq!(
        p.services[0].mounts,
        [
            ComposeMount {
                read_only: true,
                ..mount("data", "/data")
            },
            mount("a-cache", "/cache"),
            ComposeMount {
                read_only: true,
                sub_path: Some("sub/dir".into()),
                ..mount("data", "/b")
            },
        ]
    );
    assert_eq!(p.volumes, [vol("a-cache", None), vol("data", None)]);
    assert_eq!(
        warning_paths(&p),
        [
            "services.a.volumes[1]",
            "services.a.volumes[3]",
            "services.a.tmpfs"
        ]
    );

    let err = inline("services:\n  a:\n    image: x\n    volumes: [missing:/data]\n").unwrap_err();
    assert!(err.to_string().contains("not declared"), "{err}");
    let err =
        inline("services:\n  a:\n    image: x\n    volumes: [data:relative]\nvolumes: {data: }\n")
            .unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err:?}");
    let err = inline("services:\n  a:\n    image: x\nvolumes:\n  data:\n    driver: local\n    driver_opts: {type: none, o: bind, device: /srv}\n").unwrap_err();
    assert_eq!(refused_paths(err), ["volumes.data.driver_opts"]);
}

#[test]
fn environment_forms() {
    let vars = env(&[("FROM_STACK", "s"), ("EMPTY", "")]);
    let p = parse(
        "services:\n  a:\n    image: x\n    environment:\n      B: 2\n      A: \"yes\"\n      ON: true\n      FROM_STACK:\n      EMPTY: ${EMPTY}\n      URL: http://x/?a=b=c\n  b:\n    image: x\n    environment: [\"Z=a=b\", \"Y=\", FROM_STACK, NOT_SET]\n",
        &vars,
    )
    .unwrap();
    assert_eq!(
        env_of(service(&p, "a")),
        [
            ("A", "yes"),
            ("B", "2"),
            ("EMPTY", ""),
            ("FROM_STACK", "s"),
            ("ON", "true"),
            ("URL", "http://x/?a=b=c")
        ]
    );
    assert_eq!(
        env_of(service(&p, "b")),
        [("FROM_STACK", "s"), ("Y", ""), ("Z", "a=b")]
    );
    assert_eq!(warning_paths(&p), ["services.b.environment[3]"]);
    let err = inline("services:\n  a:\n    image: x\n    environment: [A=1, A=2]\n").unwrap_err();
    assert!(err.to_string().contains("twice"), "{err}");
}

#[test]
fn resources_and_replicas() {
    let p = inline(
        "services:\n  a:\n    image: x\n    scale: 3\n    mem_limit: 1.5g\n    mem_reservation: 268435456\n    cpus: 1.5\n    deploy:\n      replicas: 3\n      mode: replicated\n      resources:\n        limits: {memory: 1536M, pids: 100}\n        reservations: {cpus: '0.5'}\n",
    )
    .unwrap();
    let a = &p.services[0];
    assert_eq!(a.replicas, Some(3));
    assert_eq!(a.memory_limit.as_deref(), Some("1536Mi"));
    assert_eq!(a.memory_request.as_deref(), Some("256Mi"));
    assert_eq!(a.cpu_limit.as_deref(), Some("1500m"));
    assert_eq!(a.cpu_request.as_deref(), Some("500m"));
    assert_eq!(
        warning_paths(&p),
        ["services.a.deploy.resources.limits.pids"]
    );

    let err = inline("services:\n  a:\n    image: x\n    scale: 2\n    deploy: {replicas: 3}\n")
        .unwrap_err();
    assert!(
        matches!(&err, Error::Invalid { path, .. } if path == "services.a.deploy.replicas"),
        "{err:?}"
    );
    let err = inline("services:\n  a:\n    image: x\n    mem_limit: lots\n").unwrap_err();
    assert!(
        matches!(&err, Error::Invalid { path, .. } if path == "services.a.mem_limit"),
        "{err:?}"
    );
    let err = inline("services:\n  a:\n    image: x\n    deploy: {mode: global}\n").unwrap_err();
    assert_eq!(refused_paths(err), ["services.a.deploy.mode"]);
}

#[test]
fn command_and_entrypoint() {
    let p = inline(
        "services:\n  a:\n    image: x\n    entrypoint: [\"/bin/sh\", \"-c\"]\n    command: ['echo \"$$HOME\" done', 2]\n  b:\n    image: x\n    entrypoint: \"\"\n    command: >\n      --flag='a b' --other\n",
    )
    .unwrap();
    let a = service(&p, "a");
    assert_eq!(a.entrypoint, ["/bin/sh", "-c"]);
    assert_eq!(a.command, ["echo \"$HOME\" done", "2"]);
    let b = service(&p, "b");
    assert!(b.entrypoint.is_empty());
    assert_eq!(b.command, ["--flag=a b", "--other"]);
    assert_eq!(warning_paths(&p), ["services.b.entrypoint"]);
    let err = inline("services:\n  a:\n    image: x\n    command: echo 'oops\n").unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err:?}");
}

#[test]
fn profiles_are_skipped() {
    let p =
        inline("services:\n  app: {image: x}\n  debug: {image: y, profiles: [debug]}\n").unwrap();
    assert_eq!(names(&p), ["app"]);
    assert_eq!(warning_paths(&p), ["services.debug.profiles"]);
    let err = inline("services:\n  app: {image: x, depends_on: [debug]}\n  debug: {image: y, profiles: [debug]}\n").unwrap_err();
    assert!(err.to_string().contains("profile"), "{err}");
}

#[test]
fn malformed_files() {
    assert!(matches!(inline("services: [").unwrap_err(), Error::Yaml(_)));
    assert!(matches!(inline("").unwrap_err(), Error::Invalid { .. }));
    assert!(matches!(
        inline("- a\n").unwrap_err(),
        Error::Invalid { .. }
    ));
    assert!(matches!(
        inline("services: {}\n").unwrap_err(),
        Error::Invalid { .. }
    ));
    assert!(matches!(
        inline("services:\n  a: {image: x, replicas: 2}\n").unwrap_err(),
        Error::Unsupported { .. }
    ));
    assert!(matches!(
        inline("services:\n  a: {image: [x]}\n").unwrap_err(),
        Error::Invalid { .. }
    ));
    assert!(matches!(
        inline("services:\n  a: {image: \"$\"}\n").unwrap_err(),
        Error::Interpolation { .. }
    ));
    assert!(matches!(
        inline("services:\n  a: !reset {image: x}\n").unwrap_err(),
        Error::Invalid { .. }
    ));
}

#[test]
fn project_round_trips_through_json() {
    let p = parse(&fixture("node-redis"), &BTreeMap::new()).unwrap();
    let json = serde_json::to_string(&p).unwrap();
    let back: ComposeProject = serde_json::from_str(&json).unwrap();
    assert_eq!(back, p);
    let err = parse(&fixture("dangerous"), &BTreeMap::new()).unwrap_err();
    let Error::Refused(refusals) = err else {
        panic!()
    };
    let json = serde_json::to_string(&refusals).unwrap();
    assert!(json.contains("\"path\":\"services.agent.privileged\""));
}
