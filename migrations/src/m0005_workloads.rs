//! Workloads: Compose stacks, services (applications and databases) with
//! their ports, build and database settings, volumes, variables and routes.

use crate::schema::{ColumnDefault as D, Format, OnDelete::*, Table, Ty::*};

/// A secret value lives only in `value_encrypted`, a plain one only in `value`.
const SECRET_XOR_PLAIN: &str = "(is_secret AND value IS NULL AND value_encrypted IS NOT NULL) \
     OR (NOT is_secret AND value IS NOT NULL AND value_encrypted IS NULL)";

pub(crate) fn tables() -> Vec<Table> {
    vec![
        Table::new("stacks")
            .fk("project_id", "projects", Cascade)
            .col("name", Text)
            .col("compose_file", Text)
            .def("spec", Json, D::Json("{}"))
            .enum_col(
                "status",
                "StackStatus",
                &["pending", "deploying", "running", "stopped", "failed"],
                Some("pending"),
            )
            .timestamps()
            .format("name", Format::Slug)
            .unique("idx_stacks_project_name", "project_id, name"),
        // Created before `volumes`: PostgreSQL runs a project's cascades in
        // creation order, so mounts are gone before their volumes are checked.
        Table::new("services")
            .fk("project_id", "projects", Cascade)
            .fk_null("stack_id", "stacks", Cascade)
            .col("name", Text)
            .enum_col(
                "kind",
                "ServiceKind",
                &["application", "database"],
                Some("application"),
            )
            .enum_col(
                "source_type",
                "SourceType",
                &["image", "git", "compose"],
                Some("image"),
            )
            .enum_col(
                "status",
                "ServiceStatus",
                &[
                    "pending",
                    "initializing",
                    "starting",
                    "deploying",
                    "running",
                    "scaling",
                    "stopped",
                    "failed",
                ],
                Some("pending"),
            )
            .null("image", Text)
            .def("replicas", Int, D::Int(1))
            .null("cpu_request", Text)
            .null("cpu_limit", Text)
            .null("memory_request", Text)
            .null("memory_limit", Text)
            .null("command", Json)
            .null("args", Json)
            .null("health_check_path", Text)
            .null("health_check_port", Int)
            .def("health_check_interval_seconds", Int, D::Int(30))
            .flag("auto_deploy", true)
            .null("template_slug", Text)
            .fk_null("registry_integration_id", "registry_integrations", SetNull)
            .fk_null("created_by", "users", SetNull)
            .timestamps()
            .format("name", Format::Slug)
            .check_sql("replicas", "replicas >= 0")
            .check_sql("health_check_interval", "health_check_interval_seconds > 0")
            .check_sql("health_check_port", "health_check_port BETWEEN 1 AND 65535")
            .check_sql("image", "source_type <> 'image' OR image IS NOT NULL")
            .unique("idx_services_project_name", "project_id, name")
            .index("idx_services_stack_id", "stack_id")
            .index("idx_services_status", "status"),
        Table::new("service_ports")
            .fk("service_id", "services", Cascade)
            .null("name", Text)
            .col("container_port", Int)
            .enum_col("protocol", "PortProtocol", &["tcp", "udp"], Some("tcp"))
            .created_at()
            .check_sql("container_port", "container_port BETWEEN 1 AND 65535")
            .unique(
                "idx_service_ports_service_port",
                "service_id, container_port, protocol",
            ),
        Table::new("build_configs")
            .fk("service_id", "services", Cascade)
            .fk_null("git_integration_id", "git_integrations", SetNull)
            .col("repository_url", Text)
            .def("branch", Text, D::Text("main"))
            .null("commit_sha", Text)
            .enum_col(
                "builder",
                "BuilderType",
                &["dockerfile", "buildpacks", "nixpacks", "static"],
                Some("dockerfile"),
            )
            .def("dockerfile_path", Text, D::Text("Dockerfile"))
            .def("build_context", Text, D::Text("."))
            .def("build_args", Json, D::Json("{}"))
            .fk_null("registry_integration_id", "registry_integrations", SetNull)
            .null("image_repository", Text)
            .null("webhook_secret", Encrypted)
            .timestamps()
            .format("commit_sha", Format::CommitSha)
            .unique("idx_build_configs_service_id", "service_id"),
        Table::new("database_configs")
            .fk("service_id", "services", Cascade)
            .enum_col(
                "engine",
                "DatabaseEngine",
                &["postgresql", "mysql", "mongodb", "redis"],
                None,
            )
            .col("version", Text)
            .def("storage_size_gb", Int, D::Int(10))
            .null("database_name", Text)
            .null("username", Text)
            .null("password", Encrypted)
            .null("connection_string", Encrypted)
            .def("config", Json, D::Json("{}"))
            .null("external_port", Int)
            .timestamps()
            .check_sql("storage_size_gb", "storage_size_gb > 0")
            .check_sql("external_port", "external_port BETWEEN 1 AND 65535")
            .unique("idx_database_configs_service_id", "service_id")
            .index("idx_database_configs_engine", "engine"),
        Table::new("volumes")
            .fk("project_id", "projects", Cascade)
            .col("name", Text)
            .enum_col(
                "volume_type",
                "VolumeType",
                &["pvc", "nfs", "s3"],
                Some("pvc"),
            )
            .col("size_gb", Int)
            .null("storage_class", Text)
            .enum_col(
                "access_mode",
                "VolumeAccessMode",
                &["read_write_once", "read_write_many", "read_only_many"],
                Some("read_write_once"),
            )
            .timestamps()
            .format("name", Format::Slug)
            .check_sql("size_gb", "size_gb > 0")
            .unique("idx_volumes_project_name", "project_id, name"),
        Table::new("volume_mounts")
            .fk("volume_id", "volumes", Restrict)
            .fk("service_id", "services", Cascade)
            .col("mount_path", Text)
            .null("sub_path", Text)
            .flag("read_only", false)
            .created_at()
            .check_sql("mount_path", "substr(mount_path, 1, 1) = '/'")
            .unique("idx_volume_mounts_service_path", "service_id, mount_path")
            .index("idx_volume_mounts_volume_id", "volume_id"),
        Table::new("variable_groups")
            .fk("project_id", "projects", Cascade)
            .col("name", Text)
            .null("description", Text)
            .timestamps()
            .check_sql("name", "length(name) BETWEEN 1 AND 100")
            .unique("idx_variable_groups_project_name", "project_id, name"),
        Table::new("variable_group_items")
            .fk("variable_group_id", "variable_groups", Cascade)
            .col("key", Text)
            .null("value", Text)
            .null("value_encrypted", Encrypted)
            .flag("is_secret", false)
            .timestamps()
            .format("key", Format::EnvKey)
            .check_sql("value", SECRET_XOR_PLAIN)
            .unique(
                "idx_variable_group_items_group_key",
                "variable_group_id, key",
            ),
        Table::new("service_variable_groups")
            .fk("service_id", "services", Cascade)
            .fk("variable_group_id", "variable_groups", Cascade)
            .created_at()
            .unique(
                "idx_service_variable_groups_pair",
                "service_id, variable_group_id",
            )
            .index("idx_service_variable_groups_group_id", "variable_group_id"),
        Table::new("service_env_vars")
            .fk("service_id", "services", Cascade)
            .col("key", Text)
            .null("value", Text)
            .null("value_encrypted", Encrypted)
            .flag("is_secret", false)
            .timestamps()
            .format("key", Format::EnvKey)
            .check_sql("value", SECRET_XOR_PLAIN)
            .unique("idx_service_env_vars_service_key", "service_id, key"),
        Table::new("routes")
            .fk("project_id", "projects", Cascade)
            .fk_null("domain_id", "domains", Cascade)
            .col("hostname", Text)
            .def("path_prefix", Text, D::Text("/"))
            .flag("tls_enabled", true)
            .flag("https_redirect", true)
            .timestamps()
            .format("hostname", Format::Hostname)
            .check_sql("path_prefix", "substr(path_prefix, 1, 1) = '/'")
            .unique("idx_routes_hostname_path", "hostname, path_prefix")
            .index("idx_routes_project_id", "project_id")
            .index("idx_routes_domain_id", "domain_id"),
        Table::new("route_targets")
            .fk("route_id", "routes", Cascade)
            .fk("service_id", "services", Cascade)
            .col("port", Int)
            .def("weight", Int, D::Int(100))
            .flag("strip_path", false)
            .created_at()
            .check_sql("port", "port BETWEEN 1 AND 65535")
            .check_sql("weight", "weight BETWEEN 0 AND 1000")
            .unique(
                "idx_route_targets_route_service_port",
                "route_id, service_id, port",
            )
            .index("idx_route_targets_service_id", "service_id"),
    ]
}
