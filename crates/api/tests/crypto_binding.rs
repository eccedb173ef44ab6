//! A stored secret is bound to its row: a ciphertext copied (with SQL) from
//! one tenant's row into another tenant's row of the same column does not
//! decrypt there. Over real gRPC, on PostgreSQL and SQLite: the attacker's
//! plan, deploy and rollback answer DATA_LOSS naming the column, never the
//! victim's value.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use base64::Engine as _;
use ferry_db::entities::{deployments, service_env_vars, variable_group_items};
use ferry_db::sea_orm::prelude::Uuid;
use ferry_db::sea_orm::sea_query::{Alias, Expr, ExprTrait as _, Query};
use ferry_db::sea_orm::{
    ColumnTrait as _, ConnectionTrait as _, DatabaseConnection, EntityTrait as _, QueryFilter as _,
};
use ferry_proto::ferry::v1 as pb;
use pb::deployment_service_client::DeploymentServiceClient;
use pb::project_service_client::ProjectServiceClient;
use pb::service_service_client::ServiceServiceClient;
use pb::variable_group_service_client::VariableGroupServiceClient;
use support::*;
use tonic::transport::Channel;
use tonic::{Code, Status};

const VICTIM_ENV: &str = "victim-Env-secret-7f3a";
const VICTIM_GROUP: &str = "victim-Group-secret-91c2";

/// A tenant with one service `web` that has a secret variable `API_KEY`, an
/// attached variable group with a secret `DB_PASSWORD`, and one (planned)
/// deployment.
struct Tenant {
    token: String,
    services: ServiceServiceClient<Channel>,
    deploys: DeploymentServiceClient<Channel>,
    service: String,
    group: String,
    deployment: String,
}

async fn tenant(api: &Api, name: &str, env: &str, group_value: &str) -> Tenant {
    let mut c = clients(api.addr).await;
    register(&mut c, name).await;
    let token = login(&mut c, name).await;
    let org = create_org(&mut c, &token, &format!("{name} org")).await.id;
    let mut projects = ProjectServiceClient::new(c.channel.clone());
    let mut services = ServiceServiceClient::new(c.channel.clone());
    let mut groups = VariableGroupServiceClient::new(c.channel.clone());
    let mut deploys = DeploymentServiceClient::new(c.channel.clone());
    let project = projects
        .create_project(authed(
            pb::CreateProjectRequest {
                organization_id: org,
                name: format!("{name} shop"),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    let service = services
        .create_service(authed(
            pb::CreateServiceRequest {
                project_id: project.id.clone(),
                name: "web".into(),
                spec: Some(pb::create_service_request::Spec::Application(
                    pb::ApplicationSpec {
                        image: "ghcr.io/acme/web:1.0".into(),
                        ..Default::default()
                    },
                )),
                ports: vec![],
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .id;
    services
        .set_env_var(authed(
            pb::SetEnvVarRequest {
                service_id: service.clone(),
                key: "API_KEY".into(),
                value: env.into(),
                secret: true,
            },
            &token,
        ))
        .await
        .unwrap();
    let group = groups
        .create_variable_group(authed(
            pb::CreateVariableGroupRequest {
                project_id: project.id,
                name: "shared".into(),
                description: String::new(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .id;
    groups
        .set_variable(authed(
            pb::SetVariableRequest {
                variable_group_id: group.clone(),
                key: "DB_PASSWORD".into(),
                value: group_value.into(),
                secret: true,
            },
            &token,
        ))
        .await
        .unwrap();
    services
        .attach_variable_group(authed(
            pb::AttachVariableGroupRequest {
                service_id: service.clone(),
                variable_group_id: group.clone(),
            },
            &token,
        ))
        .await
        .unwrap();
    let deployment = deploys
        .deploy(authed(
            pb::DeployRequest {
                service_id: service.clone(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .id;
    Tenant {
        token,
        services,
        deploys,
        service,
        group,
        deployment,
    }
}

impl Tenant {
    async fn plan(&mut self) -> Result<pb::PlanDeploymentResponse, Status> {
        self.deploys
            .plan_deployment(authed(
                pb::PlanDeploymentRequest {
                    service_id: self.service.clone(),
                },
                &self.token,
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    async fn deploy(&mut self) -> Result<pb::Deployment, Status> {
        self.deploys
            .deploy(authed(
                pb::DeployRequest {
                    service_id: self.service.clone(),
                },
                &self.token,
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    async fn rollback(&mut self) -> Result<pb::Deployment, Status> {
        self.deploys
            .rollback(authed(
                pb::RollbackRequest {
                    deployment_id: self.deployment.clone(),
                },
                &self.token,
            ))
            .await
            .map(tonic::Response::into_inner)
    }
}

/// Whether `text` shows `secret`, as is or base64 (Secret data).
fn shows(text: &str, secret: &str) -> bool {
    text.contains(secret)
        || text.contains(&base64::engine::general_purpose::STANDARD.encode(secret))
}

/// The attacker's request failed with DATA_LOSS naming `column`, and
/// nothing in the answer carries the victim's values.
fn assert_data_loss<T: std::fmt::Debug>(
    b: &str,
    what: &str,
    result: Result<T, Status>,
    column: &str,
) {
    let status = result.expect_err(&format!("{b}: {what} must fail"));
    assert_eq!(status.code(), Code::DataLoss, "{b}: {what}: {status:?}");
    assert!(status.message().contains(column), "{b}: {what}: {status:?}");
    for secret in [VICTIM_ENV, VICTIM_GROUP] {
        assert!(!shows(&format!("{status:?}"), secret), "{b}: {what} leaks");
    }
}

/// Reads `table.column` of row `id` (as stored) and writes `value` into it, with SQL.
async fn read_cell(db: &DatabaseConnection, table: &str, column: &str, id: Uuid) -> String {
    let select = Query::select()
        .column(Alias::new(column))
        .from(Alias::new(table))
        .and_where(Expr::col(Alias::new("id")).eq(id))
        .to_owned();
    db.query_one(&select)
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index(0)
        .unwrap()
}

async fn write_cell(db: &DatabaseConnection, table: &str, column: &str, id: Uuid, value: &str) {
    let update = Query::update()
        .table(Alias::new(table))
        .value(Alias::new(column), value)
        .and_where(Expr::col(Alias::new("id")).eq(id))
        .to_owned();
    assert_eq!(db.execute(&update).await.unwrap().rows_affected(), 1);
}

/// The row ids holding each tenant's encrypted values.
struct Rows {
    env: Uuid,
    item: Uuid,
    deployment: Uuid,
}

async fn rows(db: &DatabaseConnection, t: &Tenant) -> Rows {
    let env = service_env_vars::Entity::find()
        .filter(service_env_vars::Column::ServiceId.eq(t.service.parse::<Uuid>().unwrap()))
        .filter(service_env_vars::Column::Key.eq("API_KEY"))
        .one(db)
        .await
        .unwrap()
        .unwrap();
    let item = variable_group_items::Entity::find()
        .filter(variable_group_items::Column::VariableGroupId.eq(t.group.parse::<Uuid>().unwrap()))
        .one(db)
        .await
        .unwrap()
        .unwrap();
    let deployment = deployments::Entity::find_by_id(t.deployment.parse::<Uuid>().unwrap())
        .one(db)
        .await
        .unwrap()
        .unwrap();
    assert!(deployment.env_snapshot.is_some());
    Rows {
        env: env.id,
        item: item.id,
        deployment: deployment.id,
    }
}

#[tokio::test]
async fn a_ciphertext_copied_into_another_tenants_row_does_not_decrypt() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend.to_string();
        let b = b.as_str();
        let conn = &db.conn;
        let api = start(conn, relaxed()).await;
        let mut victim = tenant(&api, "victim", VICTIM_ENV, VICTIM_GROUP).await;
        let mut attacker = tenant(&api, "mallory", "mallory-own-env", "mallory-own-group").await;
        let (v, a) = (rows(conn, &victim).await, rows(conn, &attacker).await);

        // The owner's plan reveals secrets: the checks below can see a leak.
        let plan = attacker.plan().await.unwrap();
        assert!(
            plan.secrets_revealed && shows(&plan.yaml, "mallory-own-env"),
            "{b}"
        );
        assert!(shows(&victim.plan().await.unwrap().yaml, VICTIM_ENV), "{b}");

        let cases = [
            ("service_env_vars", "value_encrypted", v.env, a.env),
            ("variable_group_items", "value_encrypted", v.item, a.item),
            ("deployments", "env_snapshot", v.deployment, a.deployment),
        ];
        for (table, column, from, into) in cases {
            let own = read_cell(conn, table, column, into).await;
            let stolen = read_cell(conn, table, column, from).await;
            write_cell(conn, table, column, into, &stolen).await;
            let named = format!("{table}.{column}");
            if table == "deployments" {
                assert_data_loss(b, "rollback", attacker.rollback().await, &named);
            } else {
                assert_data_loss(b, "plan", attacker.plan().await, &named);
                assert_data_loss(b, "deploy", attacker.deploy().await, &named);
            }
            // The victim is unaffected; the attacker's own value reads again once restored.
            assert!(shows(&victim.plan().await.unwrap().yaml, VICTIM_ENV), "{b}");
            write_cell(conn, table, column, into, &own).await;
            let plan = attacker.plan().await.unwrap();
            assert!(shows(&plan.yaml, "mallory-own-env"), "{b}: {named}");
            assert!(
                !shows(&plan.yaml, VICTIM_ENV) && !shows(&plan.yaml, VICTIM_GROUP),
                "{b}"
            );
        }
        // The listing never decrypts: it masks, whatever is stored.
        let listed = attacker
            .services
            .list_env_vars(authed(
                pb::ListEnvVarsRequest {
                    service_id: attacker.service.clone(),
                    ..Default::default()
                },
                &attacker.token,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(listed.env_vars.iter().all(|e| e.value == "***"), "{b}");
        api.stop().await;
    }
}

const BIN: &str = env!("CARGO_BIN_EXE_ferry-api");

/// A registry whose password is a legacy v1 value (as written before row binding).
async fn legacy_registry(db: &DatabaseConnection, org: Uuid, name: &str, password: &str) -> Uuid {
    use ferry_db::entities::enums::RegistryProvider;
    use ferry_db::entities::registry_integrations;
    use ferry_db::sea_orm::{ActiveModelTrait as _, ActiveValue::Set};
    let value = ferry_tests::legacy_v1(
        ferry_tests::test_key(),
        "registry_integrations",
        "password",
        password,
    );
    registry_integrations::ActiveModel {
        id: Set(Uuid::now_v7()),
        organization_id: Set(org),
        name: Set(name.into()),
        provider: Set(RegistryProvider::Generic),
        url: Set("https://registry.example.com".into()),
        username: Set(Some("robot".into())),
        password: Set(Some(value)),
        ..Default::default()
    }
    .insert(db)
    .await
    .unwrap()
    .id
}

async fn assert_bound(db: &DatabaseConnection, row: Uuid, password: &str, b: &str) {
    assert_eq!(ferry_db::rotate::unbound_count(db).await.unwrap(), 0, "{b}");
    let stored =
        ferry_db::crypto::Encrypted(read_cell(db, "registry_integrations", "password", row).await);
    let keys = ferry_tests::test_keyring();
    assert_eq!(
        keys.decrypt("registry_integrations", "password", row, &stored)
            .unwrap()
            .expose(),
        password,
        "{b}"
    );
}

#[tokio::test]
async fn the_api_binds_legacy_values_to_their_rows_on_start_and_on_migrate_up() {
    use ferry_common::testing::{ServiceProcess, boot, free_addr, stop_cleanly};
    for db in ferry_tests::test_dbs().await {
        let b = db.backend.to_string();
        let b = b.as_str();
        db.migrate().await;
        let conn = &db.conn;
        let org = ferry_tests::fixtures::organization(conn, "Old", "old").await;
        let env = [
            ("DATABASE_URL", db.url.as_str()),
            ("ENCRYPTION_KEY", ferry_tests::test_key()),
        ];

        let first = legacy_registry(conn, org, "first", "pw-first").await;
        assert_eq!(
            ferry_db::rotate::unbound_count(conn).await.unwrap(),
            1,
            "{b}"
        );
        let mut migrate = ServiceProcess::spawn(BIN, &["migrate", "up"], &env);
        let status = migrate
            .wait_exit(std::time::Duration::from_secs(60))
            .await
            .unwrap();
        assert!(status.success(), "{b}: {}", migrate.output());
        assert_bound(conn, first, "pw-first", b).await;

        let second = legacy_registry(conn, org, "second", "pw-second").await;
        let addr = free_addr();
        let listen = addr.to_string();
        let mut serve_env = env.to_vec();
        serve_env.push(("FERRY_API_LISTEN", listen.as_str()));
        // Parallel tests must not share the default webhook port.
        serve_env.push(("FERRY_API_HTTP_LISTEN", "127.0.0.1:0"));
        let (process, _) = boot(BIN, &[], &serve_env, addr, "ferry-api").await;
        assert_bound(conn, second, "pw-second", b).await;
        let output = stop_cleanly(process, std::time::Duration::from_secs(8)).await;
        assert!(!output.contains("pw-second"), "{b}: a secret in the log");
    }
}
