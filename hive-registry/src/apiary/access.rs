//! [`ApiaryAccess`]: the registry token policy, the same decisions as
//! [`Apiary`](super::Apiary)'s own operations.

use async_trait::async_trait;
use hive_core::Hive;
use hive_core::auth::{Action, Resource};
use hive_core::principal::{Principal, PrincipalKind, TenantId};
use hive_iam::registry_token::{RegistryAccess, RegistryScope};

use super::is_worker;
use crate::catalog::Channel;
use crate::config::RegistryConfig;
use crate::index;

/// The registry token policy of APIary: which registry actions a principal
/// gets on which repository. The same decisions as [`Apiary`](crate::Apiary)'s own
/// operations:
///
/// - `pull` on an agent repository: the principal passes the engine's
///   `registry.read` check and may see the agent ([`crate::Visibility::allows`]);
/// - `push` on a sandbox repository of the principal's own tenant: the agent
///   is new or visible to it, and the engine allows `registry.publish`
///   (audited); production repositories are written only by promotion (Hive
///   itself), so `push` there is refused (audited);
/// - `registry:catalog:*`: `system:admin` and Hive itself;
/// - nothing else (`delete`, other repositories).
#[derive(Debug)]
pub struct ApiaryAccess {
    pub(super) hive: Hive,
    pub(super) config: RegistryConfig,
}

impl ApiaryAccess {
    async fn visible(
        &self,
        p: &Principal,
        key: &str,
        tenant: &TenantId,
    ) -> hive_core::Result<Option<bool>> {
        let record = index::agent(&**self.hive.store(), key)
            .await
            .map_err(hive_core::Error::from)?;
        Ok(record.map(|a| a.visibility.allows(p, tenant)))
    }
}

#[async_trait]
impl RegistryAccess for ApiaryAccess {
    async fn grant(
        &self,
        p: &Principal,
        requested: &RegistryScope,
    ) -> hive_core::Result<Vec<String>> {
        let system = matches!(p.kind, PrincipalKind::System);
        if requested.resource_type == "registry" && requested.name == "catalog" {
            let allowed = (system || p.is_cross_tenant()) && !is_worker(p);
            return Ok(if allowed {
                requested.actions.clone()
            } else {
                Vec::new()
            });
        }
        if requested.resource_type != "repository" {
            return Ok(Vec::new());
        }
        let Some((tenant, channel, name)) = self.config.parse_repository(&requested.name) else {
            return Ok(Vec::new());
        };
        let key = format!("{tenant}/{channel}/{name}");
        let resource = Resource::Named {
            kind: "agent",
            id: key.clone(),
            tenant: tenant.clone(),
        };
        let mut granted = Vec::new();
        if requested.actions.iter().any(|a| a == "pull") {
            let readable = self
                .hive
                .authorize(p, Action::ReadRegistry, &resource)
                .await
                .is_ok();
            if readable && self.visible(p, &key, &tenant).await? == Some(true) {
                granted.push("pull".to_owned());
            }
        }
        if requested.actions.iter().any(|a| a == "push") {
            let visible = self.visible(p, &key, &tenant).await?;
            if visible == Some(false) {
                // Hidden from the caller: no grant, nothing revealed.
            } else if channel == Channel::Production && !system {
                let _ = self
                    .hive
                    .deny(
                        p,
                        Action::PublishAgent,
                        &resource,
                        "production repositories are written only by promotion",
                    )
                    .await;
            } else if p.tenant != tenant && !p.is_cross_tenant() && !system {
                let _ = self
                    .hive
                    .deny(
                        p,
                        Action::PublishAgent,
                        &resource,
                        "the repository belongs to another tenant",
                    )
                    .await;
            } else if self
                .hive
                .authorize(p, Action::PublishAgent, &resource)
                .await
                .is_ok()
            {
                granted.push("push".to_owned());
                // Pushing reads the repository too (blob checks, mounts).
                if !granted.iter().any(|a| a == "pull")
                    && requested.actions.iter().any(|a| a == "pull")
                {
                    granted.push("pull".to_owned());
                }
            }
        }
        Ok(granted)
    }
}
