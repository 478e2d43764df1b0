//! `POST /resources/provision` and `/resources/deprovision`: a service's dataset
//! (`<root>/services/<serviceId>`, optionally with a quota) and the environment its
//! containers get. Both are idempotent: provisioning again returns the same values (the
//! credentials are derived, not stored), deprovisioning what is gone succeeds.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use rpc_schema::control::{Capability, DeprovisionRequest, DeprovisionResponse, ProvisionRequest, ProvisionResponse};

use super::Control;
use crate::error::{Error, Result};
use crate::wire::ApiError;
use crate::wire::json;

fn check_request(req: &ProvisionRequest) -> Result<Option<u64>> {
    crate::docker::store::check_name("serviceId", &req.service_id)?;
    if req.service_name.len() > 256 || req.service_name.chars().any(char::is_control) {
        return Err(Error::invalid("serviceName", "at most 256 characters, no control characters"));
    }
    req.quota
        .as_deref()
        .map(|q| {
            crate::config::parse_size(q)
                .filter(|b| *b >= 1 << 20)
                .ok_or_else(|| Error::invalid("quota", format!("{q:?} is not a size of at least 1M")))
        })
        .transpose()
}

pub async fn provision(
    State(c): State<Control>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<ProvisionResponse>, ApiError> {
    c.require_admin(&c.caller(&headers))?;
    let req: ProvisionRequest = json(&bytes)?;
    let quota = check_request(&req)?;
    c.service_dataset(&req.service_id)?;
    let storage = c.backing.ensure_service(&req.service_id, &req.service_name, quota).await?;
    if storage.created {
        tracing::info!(service = %req.service_id, path = %storage.path.display(), "service provisioned");
    }
    let mountpoint = storage.path.display().to_string();
    let mut env = BTreeMap::new();
    env.insert("TANKD_SERVICE_ID".to_owned(), req.service_id.clone());
    if let Some(ds) = &storage.dataset {
        env.insert("TANKD_SERVICE_DATASET".to_owned(), ds.clone());
        env.insert("TANKD_VOLUME_DRIVER".to_owned(), "tankd".to_owned());
    }
    env.insert("TANKD_SERVICE_DATA".to_owned(), mountpoint.clone());
    env.insert("TANKD_CONTROL_URL".to_owned(), c.public_url.clone());
    env.insert("TANKD_SERVICE_TOKEN".to_owned(), c.service_token(&req.service_id));
    if req.capabilities.contains(&Capability::Objectstorage) {
        env.extend(c.s3.provision(&req.service_id).await.map_err(|e| e.with_field("capabilities"))?);
    }
    if req.capabilities.contains(&Capability::Database) {
        env.extend(c.db.provision(&req.service_id).await.map_err(|e| e.with_field("capabilities"))?);
    }
    let created = storage.created;
    let ds = storage.dataset.unwrap_or_default();
    Ok(Json(ProvisionResponse {
        service_id: req.service_id,
        service_name: req.service_name,
        created,
        dataset: ds.to_string(),
        mountpoint,
        env,
    }))
}

pub async fn deprovision(
    State(c): State<Control>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<DeprovisionResponse>, ApiError> {
    c.require_admin(&c.caller(&headers))?;
    let req: DeprovisionRequest = json(&bytes)?;
    let ds = c.service_dataset(&req.service_id)?;
    let mut removed = Vec::new();
    if c.zfs_on {
        removed = c.volumes.remove_owned(&req.service_id, req.force).await?;
        if c.zfs.exists(&ds).await? && crate::docker::restore::pending(&c.zfs, &c.root, &ds).await?.is_some() {
            crate::docker::restore::confirm(&c.zfs, &c.root, &ds).await?;
        }
    }
    // The keys stop working and the buckets become unreachable before their storage goes.
    let buckets = c.s3.forget_service(&req.service_id);
    c.db.forget_service(&req.service_id).await;
    if let Some(gone) = c.backing.remove_service(&req.service_id).await? {
        removed.push(gone);
        tracing::info!(service = %req.service_id, ?buckets, "service deprovisioned");
    }
    Ok(Json(DeprovisionResponse { service_id: req.service_id, removed }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: &str) -> ProvisionRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn bad_fields_are_named() {
        assert!(
            check_request(&req(r#"{"serviceId":"svc-1","capabilities":["filesystem","objectstorage","database"]}"#))
                .is_ok()
        );
        let e = check_request(&req(r#"{"serviceId":"../x"}"#)).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("serviceId"));
        let e = check_request(&req(r#"{"serviceId":"svc-1","quota":"1K"}"#)).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("quota"));
        assert_eq!(check_request(&req(r#"{"serviceId":"svc-1","quota":"2G"}"#)).unwrap(), Some(2 << 30));
    }
}
