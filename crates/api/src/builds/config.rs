//! A service's build config: which repository and branch to build, how,
//! and which pushes trigger it. Every field is validated here with the
//! rules the builder and the Job renderer apply again.

use std::collections::BTreeMap;

use chrono::Utc;
use ferry_db::entities::build_configs as configs;
use ferry_db::entities::enums::{AuditResourceType, BuildType, GitProvider};
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, EntityTrait as _,
    IntoActiveModel as _, QueryFilter as _,
};
use ferry_proto::ferry::v1 as pb;
use serde_json::json;
use tonic::Request;
use uuid::Uuid;

use super::GitApi;
use crate::audit::Entry;
use crate::authz::{Action, Caller};
use crate::wire::{parse_id, ts};
use crate::{Error, Result};

/// Limits on what one config may ask for.
pub const MAX_BUILD_ARGS: usize = 100;
pub const MAX_WATCH_PATHS: usize = 50;

fn invalid(field: &str, why: &str) -> Error {
    Error::InvalidArgument(format!("{field}: {why}"))
}

fn printable(v: &str) -> bool {
    !v.chars().any(char::is_control)
}

/// A branch name as git accepts it (`git check-ref-format --branch`).
pub fn branch(field: &str, value: &str) -> Result<String> {
    let v = value.trim();
    let ok = !v.is_empty()
        && v.len() <= 255
        && !v.starts_with(['-', '/', '.'])
        && !v.ends_with(['/', '.'])
        && !v.ends_with(".lock")
        && !v.contains("..")
        && !v.contains("@{")
        && !v.contains("//")
        && v != "@"
        && !v.chars().any(|c| {
            c.is_whitespace()
                || c.is_control()
                || matches!(c, '~' | '^' | ':' | '?' | '*' | '[' | '\\')
        });
    if ok {
        Ok(v.to_owned())
    } else {
        Err(invalid(field, "not a valid git branch name"))
    }
}

/// A path inside the repository: relative, no `..`, no leading `-`.
pub fn repo_path(field: &str, value: &str, allow_empty: bool) -> Result<String> {
    let v = value.trim().trim_matches('/');
    if v.is_empty() || v == "." {
        return if allow_empty {
            Ok(String::new())
        } else {
            Err(invalid(field, "required"))
        };
    }
    let ok = v.len() <= 1024
        && printable(v)
        && !v.contains('\\')
        && v.split('/')
            .all(|s| !s.is_empty() && s != ".." && s != "." && !s.starts_with('-'));
    if ok {
        Ok(v.to_owned())
    } else {
        Err(invalid(
            field,
            "a relative path inside the repository (no .., no leading -, at most 1024 characters)",
        ))
    }
}

/// The repository: `owner/name` (GitLab subgroups: more segments) on a
/// hosted provider, a full clone URL on a generic one.
pub fn repository(provider: GitProvider, value: &str) -> Result<String> {
    let v = value.trim();
    let field = "repository";
    if v.is_empty() || v.len() > 2048 || !printable(v) || v.contains(char::is_whitespace) {
        return Err(invalid(field, "1 to 2048 characters without spaces"));
    }
    if v.starts_with('-') {
        return Err(invalid(field, "must not start with -"));
    }
    if provider == GitProvider::Generic {
        let lower = v.to_ascii_lowercase();
        let scp = !lower.contains("://")
            && lower
                .split_once(':')
                .is_some_and(|(host, path)| host.contains('@') && !path.is_empty());
        let url_ok = ["https://", "http://", "ssh://"]
            .iter()
            .any(|p| lower.strip_prefix(p).is_some_and(|rest| rest.contains('/')));
        if !(scp || url_ok) {
            return Err(invalid(
                field,
                "a clone URL: ssh://git@host/owner/repo.git, git@host:owner/repo.git or https://host/owner/repo.git (file:// and local paths are not allowed)",
            ));
        }
        if lower.contains("://")
            && lower.split("://").nth(1).is_some_and(|r| {
                r.split('/').next().is_some_and(|h| {
                    h.contains(':')
                        && h.contains('@')
                        && h.split('@').next().is_some_and(|u| u.contains(':'))
                })
            })
        {
            return Err(invalid(field, "must not carry a password"));
        }
        return Ok(v.to_owned());
    }
    let key = super::push::repo_key(v);
    let segments: Vec<&str> = key.split('/').collect();
    let ok = segments.len() >= 2
        && segments.len() <= 20
        && segments.iter().all(|s| {
            !s.is_empty()
                && !s.starts_with(['.', '-'])
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        });
    if ok {
        Ok(key)
    } else {
        Err(invalid(
            field,
            "owner/name of a repository on the integration's server",
        ))
    }
}

fn build_type(value: i32) -> Result<BuildType> {
    Ok(match pb::BuildType::try_from(value) {
        Ok(pb::BuildType::Unspecified | pb::BuildType::Auto) => BuildType::Auto,
        Ok(pb::BuildType::Dockerfile) => BuildType::Dockerfile,
        Ok(pb::BuildType::Railpack) => BuildType::Railpack,
        Ok(pb::BuildType::Buildpacks) => BuildType::Buildpacks,
        Ok(pb::BuildType::Static) => BuildType::Static,
        Err(_) => return Err(invalid("buildType", "unknown build type")),
    })
}

pub(crate) fn build_type_to_pb(t: BuildType) -> pb::BuildType {
    match t {
        BuildType::Auto => pb::BuildType::Auto,
        BuildType::Dockerfile => pb::BuildType::Dockerfile,
        BuildType::Railpack => pb::BuildType::Railpack,
        BuildType::Buildpacks => pb::BuildType::Buildpacks,
        BuildType::Static => pb::BuildType::Static,
    }
}

/// Build args: plain and secret, by name.
fn build_args(
    args: &[pb::BuildArg],
    stored_secrets: &BTreeMap<String, String>,
) -> Result<(BTreeMap<String, String>, BTreeMap<String, String>)> {
    if args.len() > MAX_BUILD_ARGS {
        return Err(invalid("buildArgs", "at most 100"));
    }
    let (mut plain, mut secret) = (BTreeMap::new(), BTreeMap::new());
    for (i, a) in args.iter().enumerate() {
        let name_ok = a.name.len() <= 128
            && a.name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && a.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !name_ok {
            return Err(invalid(
                &format!("buildArgs[{i}].name"),
                "[A-Za-z_][A-Za-z0-9_]*, at most 128 characters",
            ));
        }
        if a.value.len() > 4096 || a.value.contains('\0') {
            return Err(invalid(
                &format!("buildArgs[{i}].value"),
                "at most 4096 bytes, no NUL",
            ));
        }
        if plain.contains_key(&a.name) || secret.contains_key(&a.name) {
            return Err(invalid(&format!("buildArgs[{i}].name"), "named twice"));
        }
        if a.secret {
            let value = if a.value.is_empty() {
                stored_secrets.get(&a.name).cloned().ok_or_else(|| {
                    invalid(
                        &format!("buildArgs[{i}].value"),
                        "required for a new secret (empty keeps a stored one)",
                    )
                })?
            } else {
                a.value.clone()
            };
            secret.insert(a.name.clone(), value);
        } else {
            plain.insert(a.name.clone(), a.value.clone());
        }
    }
    Ok((plain, secret))
}

/// Watch-path globs: at most 50 of at most 256 bytes; `!` negates.
pub fn watch_paths(values: &[String]) -> Result<Vec<String>> {
    if values.len() > MAX_WATCH_PATHS {
        return Err(invalid("watchPaths", "at most 50 globs"));
    }
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let g = v.trim();
            let body = g.strip_prefix('!').unwrap_or(g);
            let ok = !body.is_empty()
                && g.len() <= 256
                && printable(g)
                && !body.starts_with('/')
                && !body.split('/').any(|s| s == "..")
                && g.matches('[').count() == g.matches(']').count()
                && g.matches('{').count() == g.matches('}').count();
            if ok {
                Ok(g.to_owned())
            } else {
                Err(invalid(
                    &format!("watchPaths[{i}]"),
                    "a relative glob such as apps/web/** or !**/*.md (at most 256 bytes)",
                ))
            }
        })
        .collect()
}

/// Decrypted secret build args of a stored config.
pub(crate) fn stored_secrets(
    keyring: &ferry_db::crypto::Keyring,
    config: &configs::Model,
) -> Result<BTreeMap<String, String>> {
    match &config.secret_build_args {
        None => Ok(BTreeMap::new()),
        Some(enc) => {
            let plain = keyring.decrypt("build_configs", "secret_build_args", config.id, enc)?;
            serde_json::from_str(plain.expose())
                .map_err(|e| Error::Internal(format!("build_configs.secret_build_args: {e}")))
        }
    }
}

pub(crate) fn config_to_pb(c: &configs::Model, secret_names: &[String]) -> pb::BuildConfig {
    let plain: BTreeMap<String, String> =
        serde_json::from_value(c.build_args.clone()).unwrap_or_default();
    let mut args: Vec<pb::BuildArg> = plain
        .into_iter()
        .map(|(name, value)| pb::BuildArg {
            name,
            value,
            secret: false,
        })
        .collect();
    args.extend(secret_names.iter().map(|n| pb::BuildArg {
        name: n.clone(),
        value: String::new(),
        secret: true,
    }));
    pb::BuildConfig {
        service_id: c.service_id.to_string(),
        git_integration_id: c
            .git_integration_id
            .map(|i| i.to_string())
            .unwrap_or_default(),
        repository: c.repository.clone(),
        branch: c.branch.clone(),
        root_dir: c.root_dir.clone(),
        build_type: build_type_to_pb(c.build_type).into(),
        dockerfile_path: c.dockerfile_path.clone(),
        dockerfile_target: c.dockerfile_target.clone().unwrap_or_default(),
        build_args: args,
        watch_paths: serde_json::from_value(c.watch_paths.clone()).unwrap_or_default(),
        auto_deploy: c.auto_deploy,
        updated_at: Some(ts(c.updated_at)),
    }
}

impl GitApi {
    pub(super) async fn set_config(
        &self,
        request: Request<pb::SetBuildConfigRequest>,
    ) -> Result<pb::BuildConfig> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let service_id = parse_id("serviceId", &req.service_id)?;
        let db = &self.0.identity.db;
        let (scope, _service, _) = caller
            .service(db, Action::ServiceManage, service_id)
            .await?;
        let integration_id = parse_id("gitIntegrationId", &req.git_integration_id)?;
        let (_, integration) = self
            .integration(&caller, Action::GitRead, integration_id)
            .await?;
        if integration.organization_id != scope.organization_id() {
            return Err(Error::NotFound("git integration not found".into()));
        }
        let repository = repository(integration.provider, &req.repository)?;
        let over_ssh = !repository.to_ascii_lowercase().starts_with("http");
        if integration.provider == GitProvider::Generic
            && over_ssh
            && integration
                .ssh_known_hosts
                .as_deref()
                .is_none_or(str::is_empty)
        {
            // Builds check the server's host key strictly; without known
            // hosts every build would fail at its first step.
            return Err(Error::FailedPrecondition(format!(
                "git integration {} has no SSH known hosts, so builds cannot verify the server: \
                 connect it again with sshKnownHosts (the output of `ssh-keyscan <host>`)",
                integration.name
            )));
        }
        let branch = branch(
            "branch",
            if req.branch.trim().is_empty() {
                "main"
            } else {
                &req.branch
            },
        )?;
        let root_dir = repo_path("rootDir", &req.root_dir, true)?;
        let build_type = build_type(req.build_type)?;
        let dockerfile_path = repo_path(
            "dockerfilePath",
            if req.dockerfile_path.trim().is_empty() {
                "Dockerfile"
            } else {
                &req.dockerfile_path
            },
            false,
        )?;
        let target = req.dockerfile_target.trim();
        let stage_name = target.len() <= 128
            && target
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if !stage_name {
            return Err(invalid(
                "dockerfileTarget",
                "a stage name: letters, digits, . - _",
            ));
        }
        let watch = watch_paths(&req.watch_paths)?;
        let keyring = self.0.identity.keyring()?;

        let txn = crate::db::begin_write(db).await?;
        let existing = configs::Entity::find()
            .filter(configs::Column::ServiceId.eq(service_id))
            .one(&txn)
            .await?;
        let stored = match &existing {
            Some(c) => stored_secrets(keyring, c)?,
            None => BTreeMap::new(),
        };
        let (plain, secret) = build_args(&req.build_args, &stored)?;
        let id = existing.as_ref().map_or_else(Uuid::now_v7, |c| c.id);
        let secret_json = (!secret.is_empty())
            .then(|| {
                let text = serde_json::to_string(&secret)
                    .map_err(|e| Error::Internal(format!("secret build args: {e}")))?;
                keyring
                    .encrypt("build_configs", "secret_build_args", id, &text)
                    .map_err(Error::from)
            })
            .transpose()?;
        let now = Utc::now();
        let is_new = existing.is_none();
        let mut row = match existing {
            Some(c) => c.into_active_model(),
            None => configs::ActiveModel {
                id: Set(id),
                service_id: Set(service_id),
                created_at: Set(now),
                ..Default::default()
            },
        };
        row.git_integration_id = Set(Some(integration_id));
        row.repository = Set(repository);
        row.branch = Set(branch);
        row.root_dir = Set(root_dir);
        row.build_type = Set(build_type);
        row.dockerfile_path = Set(dockerfile_path);
        row.dockerfile_target = Set((!target.is_empty()).then(|| target.to_owned()));
        row.build_args = Set(json!(plain));
        row.secret_build_args = Set(secret_json);
        row.watch_paths = Set(json!(watch));
        row.auto_deploy = Set(req.auto_deploy);
        row.updated_at = Set(now);
        // `save` would UPDATE a new row whose id is already set.
        let saved = if is_new {
            row.insert(&txn).await?
        } else {
            row.update(&txn).await?
        };
        scope
            .audit(
                &txn,
                Entry::new("build_config.set", AuditResourceType::Service, service_id).details(
                    json!({
                        "repository": saved.repository,
                        "branch": saved.branch,
                        "gitIntegrationId": integration_id,
                        "secretBuildArgs": secret.keys().collect::<Vec<_>>(),
                    }),
                ),
            )
            .await?;
        txn.commit().await?;
        Ok(config_to_pb(
            &saved,
            &secret.into_keys().collect::<Vec<_>>(),
        ))
    }

    pub(super) async fn get_config(
        &self,
        request: Request<pb::GetBuildConfigRequest>,
    ) -> Result<pb::BuildConfig> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let service_id = parse_id("serviceId", &request.get_ref().service_id)?;
        let db = &self.0.identity.db;
        caller.service(db, Action::ServiceRead, service_id).await?;
        let config = configs::Entity::find()
            .filter(configs::Column::ServiceId.eq(service_id))
            .one(db)
            .await?
            .ok_or_else(|| Error::NotFound("the service has no build config".into()))?;
        let keyring = self.0.identity.keyring()?;
        let names: Vec<String> = stored_secrets(keyring, &config)?.into_keys().collect();
        Ok(config_to_pb(&config, &names))
    }

    pub(super) async fn delete_config(
        &self,
        request: Request<pb::DeleteBuildConfigRequest>,
    ) -> Result<()> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let service_id = parse_id("serviceId", &request.get_ref().service_id)?;
        let db = &self.0.identity.db;
        let (scope, _, _) = caller
            .service(db, Action::ServiceManage, service_id)
            .await?;
        scope
            .remove(
                db,
                configs::Entity::delete_many().filter(configs::Column::ServiceId.eq(service_id)),
                "the service has no build config",
                Entry::new(
                    "build_config.delete",
                    AuditResourceType::Service,
                    service_id,
                ),
            )
            .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn branches_follow_gits_rules() {
        for ok in ["main", "release/1.2", "feature_x-y"] {
            assert_eq!(branch("branch", ok).unwrap(), ok);
        }
        for bad in [
            "", "-x", "a..b", "a b", "x.lock", "a~1", "a:b", "/x", "x/", "@", "a@{1}",
        ] {
            assert!(branch("branch", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn repo_paths_stay_inside() {
        assert_eq!(
            repo_path("rootDir", "/apps/web/", true).unwrap(),
            "apps/web"
        );
        assert_eq!(repo_path("rootDir", "", true).unwrap(), "");
        for bad in ["../x", "a/../../b", "-rf", "a\\b", "a/-x"] {
            let err = repo_path("rootDir", bad, true).unwrap_err().to_string();
            assert!(err.starts_with("rootDir: "), "{bad}: {err}");
        }
    }

    #[test]
    fn repositories_per_provider() {
        assert_eq!(
            repository(GitProvider::Github, "https://github.com/Acme/Web.git").unwrap(),
            "acme/web"
        );
        assert_eq!(
            repository(GitProvider::Gitlab, "g/sub/p").unwrap(),
            "g/sub/p"
        );
        assert!(repository(GitProvider::Github, "just-a-name").is_err());
        assert!(repository(GitProvider::Generic, "git@git.example.com:team/app.git").is_ok());
        for bad in [
            "file:///etc",
            "/srv/git/x",
            "ext::sh -c x",
            "https://u:p@h/x/y",
            "-u",
        ] {
            assert!(repository(GitProvider::Generic, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn build_args_are_named_bounded_and_secrets_kept() {
        let arg = |n: &str, v: &str, s: bool| pb::BuildArg {
            name: n.into(),
            value: v.into(),
            secret: s,
        };
        let stored = BTreeMap::from([("TOKEN".to_owned(), "old".to_owned())]);
        let (plain, secret) =
            build_args(&[arg("A", "1", false), arg("TOKEN", "", true)], &stored).unwrap();
        assert_eq!(plain["A"], "1");
        assert_eq!(secret["TOKEN"], "old");
        let err = build_args(&[arg("NEW", "", true)], &stored).unwrap_err();
        assert!(err.to_string().starts_with("buildArgs[0].value"), "{err}");
        let err = build_args(&[arg("1X", "", false)], &stored).unwrap_err();
        assert!(err.to_string().starts_with("buildArgs[0].name"), "{err}");
        let err = build_args(&[arg("A", "", false), arg("A", "", true)], &stored).unwrap_err();
        assert!(err.to_string().starts_with("buildArgs[1].name"), "{err}");
    }

    #[test]
    fn watch_paths_are_bounded_globs() {
        assert_eq!(
            watch_paths(&["apps/web/**".into(), "!**/*.md".into()])
                .unwrap()
                .len(),
            2
        );
        for bad in ["", "/abs", "../up", "a[", "!"] {
            let err = watch_paths(&[bad.into()]).unwrap_err().to_string();
            assert!(err.starts_with("watchPaths[0]"), "{bad}: {err}");
        }
        assert!(watch_paths(&vec!["x".into(); 51]).is_err());
    }
}
