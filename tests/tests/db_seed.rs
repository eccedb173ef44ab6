//! The seed (RBAC catalogue and official templates) on PostgreSQL and
//! SQLite: complete, consistent and idempotent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use ferry_db::entities::enums::OrgRole;
use ferry_db::entities::{organizations, permissions, role_permissions, roles, templates};
use ferry_db::seed::{self, PERMISSIONS, ROLES};
use ferry_tests::TestDb;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, ModelTrait, PaginatorTrait, QueryFilter, Set,
};
use uuid::Uuid;

async fn counts(db: &TestDb) -> [u64; 4] {
    [
        roles::Entity::find().count(&db.conn).await.unwrap(),
        permissions::Entity::find().count(&db.conn).await.unwrap(),
        role_permissions::Entity::find()
            .count(&db.conn)
            .await
            .unwrap(),
        templates::Entity::find().count(&db.conn).await.unwrap(),
    ]
}

async fn permissions_of(db: &TestDb, role: OrgRole) -> BTreeSet<String> {
    let role = roles::Entity::find()
        .filter(roles::Column::Name.eq(role))
        .one(&db.conn)
        .await
        .unwrap()
        .unwrap();
    role.find_related(permissions::Entity)
        .all(&db.conn)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|p| p.name)
        .collect()
}

/// Permission names via the join table (roles → role_permissions → permissions).
async fn granted(db: &TestDb, role: OrgRole) -> BTreeSet<String> {
    let role = roles::Entity::find()
        .filter(roles::Column::Name.eq(role))
        .one(&db.conn)
        .await
        .unwrap()
        .unwrap();
    let links = role_permissions::Entity::find()
        .filter(role_permissions::Column::RoleId.eq(role.id))
        .all(&db.conn)
        .await
        .unwrap();
    let mut names = BTreeSet::new();
    for link in links {
        let p = permissions::Entity::find_by_id(link.permission_id)
            .one(&db.conn)
            .await
            .unwrap()
            .unwrap();
        names.insert(p.name);
    }
    names
}

#[tokio::test]
async fn seeding_twice_changes_nothing() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        assert_eq!(counts(&db).await, [0, 0, 0, 0], "{b}");
        let first = seed::run(&db.conn).await.unwrap();
        assert_eq!(first.roles_created, 4, "{b}");
        assert_eq!(first.permissions_created as usize, PERMISSIONS.len(), "{b}");
        assert!(first.templates_created >= 7, "{b}: {first:?}");
        let after_first = counts(&db).await;
        assert_eq!(after_first[2], first.role_permissions_created, "{b}");

        let second = seed::run(&db.conn).await.unwrap();
        assert!(
            second.is_noop(),
            "{b}: second run changed something: {second:?}"
        );
        assert_eq!(counts(&db).await, after_first, "{b}");
    }
}

#[tokio::test]
async fn roles_map_onto_a_ranked_permission_catalogue() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        seed::run(&db.conn).await.unwrap();
        let names: BTreeSet<OrgRole> = roles::Entity::find()
            .all(&db.conn)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(
            names,
            BTreeSet::from([
                OrgRole::Owner,
                OrgRole::Admin,
                OrgRole::Member,
                OrgRole::Viewer
            ]),
            "{b}"
        );
        assert_eq!(ROLES.len(), 4);

        let owner = granted(&db, OrgRole::Owner).await;
        let admin = granted(&db, OrgRole::Admin).await;
        let member = granted(&db, OrgRole::Member).await;
        let viewer = granted(&db, OrgRole::Viewer).await;
        assert_eq!(
            owner.len(),
            PERMISSIONS.len(),
            "{b}: owner holds everything"
        );
        assert!(viewer.is_subset(&member) && member.is_subset(&admin) && admin.is_subset(&owner));
        assert!(
            viewer.contains("service.view") && !viewer.contains("service.deploy"),
            "{b}"
        );
        assert!(
            member.contains("service.deploy") && !member.contains("member.invite"),
            "{b}"
        );
        assert!(
            admin.contains("member.invite") && !admin.contains("org.delete"),
            "{b}"
        );
        assert!(
            owner.contains("org.delete") && owner.contains("org.transfer"),
            "{b}"
        );
        // The entity relation (roles ↔ permissions via role_permissions) agrees.
        assert_eq!(permissions_of(&db, OrgRole::Member).await, member, "{b}");
    }
}

#[tokio::test]
async fn official_templates_are_present_and_drift_is_repaired() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        seed::run(&db.conn).await.unwrap();
        let all = templates::Entity::find().all(&db.conn).await.unwrap();
        for slug in [
            "postgres",
            "mysql",
            "mongodb",
            "redis",
            "nginx",
            "uptime-kuma",
            "gitea",
            "n8n",
        ] {
            let t = all
                .iter()
                .find(|t| t.slug == slug)
                .unwrap_or_else(|| panic!("{b}: template {slug} missing"));
            assert!(t.is_official && t.organization_id.is_none(), "{b}: {slug}");
            assert!(
                t.spec["image"].as_str().is_some_and(|i| i.contains(':')),
                "{b}: {slug} image"
            );
            assert!(
                t.spec["ports"].as_array().is_some_and(|p| !p.is_empty()),
                "{b}: {slug} ports"
            );
            assert!(
                t.spec["volumes"].as_array().is_some(),
                "{b}: {slug} volumes"
            );
        }
        let apps = all
            .iter()
            .filter(|t| t.spec["kind"] == "application")
            .count();
        assert!(apps >= 3, "{b}: {apps} application templates");

        // Drift: an edited official template and a removed permission link are restored.
        let pg = all.iter().find(|t| t.slug == "postgres").unwrap().clone();
        let mut am: templates::ActiveModel = pg.into();
        am.spec = Set(serde_json_value());
        am.update(&db.conn).await.unwrap();
        let link = role_permissions::Entity::find()
            .one(&db.conn)
            .await
            .unwrap()
            .unwrap();
        link.delete(&db.conn).await.unwrap();
        let repair = seed::run(&db.conn).await.unwrap();
        assert_eq!(repair.templates_updated, 1, "{b}: {repair:?}");
        assert_eq!(repair.role_permissions_created, 1, "{b}: {repair:?}");
        assert!(seed::run(&db.conn).await.unwrap().is_noop(), "{b}");

        // An organisation may reuse an official slug; a second official one may not exist.
        let org = organizations::ActiveModel {
            id: Set(Uuid::now_v7()),
            name: Set("Acme".into()),
            slug: Set("acme".into()),
            ..Default::default()
        }
        .insert(&db.conn)
        .await
        .unwrap();
        let template = |org: Option<Uuid>| templates::ActiveModel {
            id: Set(Uuid::now_v7()),
            organization_id: Set(org),
            slug: Set("postgres".into()),
            name: Set("My Postgres".into()),
            description: Set("custom".into()),
            category: Set("database".into()),
            is_official: Set(org.is_none()),
            spec: Set(serde_json_value()),
            ..Default::default()
        };
        template(Some(org.id)).insert(&db.conn).await.unwrap();
        assert!(
            template(None).insert(&db.conn).await.is_err(),
            "{b}: duplicate official slug"
        );
    }
}

fn serde_json_value() -> sea_orm::sea_query::prelude::Json {
    sea_orm::sea_query::prelude::serde_json::json!({ "kind": "database", "image": "postgres:9" })
}
