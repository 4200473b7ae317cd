//! Registered instances in etcd: each is one key,
//! `{prefix}/config/instances/{service}/{id}`, attached to a lease of its own (the
//! registration's `ttl`), so etcd deletes it when heartbeats stop. Registrations are
//! written by the same fenced transaction as `apply` (meta key guarded and rewritten);
//! a lease expiry deletes without touching the meta key, so the watch follows it with
//! [`Store::fence_expiry`], which rewrites the meta key once (whichever replica gets
//! there first) so the configuration version stays the largest `mod_revision` under
//! `config/` — the same number on every replica, and after a reload.

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};

use super::{Store, StoreError};

/// One key to write, optionally attached to a lease.
#[derive(Debug, Clone)]
pub struct Put {
    pub key: String,
    pub value: String,
    pub lease: Option<i64>,
}

impl Store {
    pub fn instance_key(&self, service: &str, id: &str) -> String {
        format!("{}/config/instances/{service}/{id}", self.prefix)
    }

    /// A new lease of `ttl_secs`; its id.
    pub async fn grant_lease(&self, ttl_secs: i64) -> Result<i64, StoreError> {
        let resp = self
            .call("lease_grant", |mut c| async move {
                c.lease_grant(ttl_secs, None).await
            })
            .await?;
        Ok(resp.id())
    }

    /// Renews `lease` once; the seconds it now has left, or `None` if it no longer
    /// exists (expired or revoked).
    pub async fn keep_alive(&self, lease: i64) -> Result<Option<i64>, StoreError> {
        let resp = self
            .call("lease_keep_alive", |mut c| async move {
                let (mut keeper, mut stream) = c.lease_keep_alive(lease).await?;
                keeper.keep_alive().await?;
                stream.message().await
            })
            .await?;
        Ok(resp.map(|r| r.ttl()).filter(|&ttl| ttl > 0))
    }

    /// Seconds `lease` has left, or `None` if it no longer exists.
    pub async fn lease_remaining(&self, lease: i64) -> Result<Option<i64>, StoreError> {
        let resp = self
            .call("lease_time_to_live", |mut c| async move {
                c.lease_time_to_live(lease, None).await
            })
            .await?;
        Ok(Some(resp.ttl()).filter(|&ttl| ttl > 0))
    }

    /// Revokes `lease` (deleting the keys attached to it); a lease already gone is fine.
    pub async fn revoke_lease(&self, lease: i64) -> Result<(), StoreError> {
        match self
            .call("lease_revoke", |mut c| async move {
                c.lease_revoke(lease).await
            })
            .await
        {
            Ok(_) | Err(StoreError::Rejected(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// [`Store::commit`] with leased puts: one transaction fenced on the meta key.
    pub async fn commit_leased(
        &self,
        meta_revision: i64,
        puts: Vec<Put>,
        deletes: Vec<String>,
    ) -> Result<Option<i64>, StoreError> {
        let ops = puts
            .into_iter()
            .map(|p| {
                let options = p.lease.map(|l| PutOptions::new().with_lease(l));
                TxnOp::put(p.key, p.value, options)
            })
            .collect();
        self.commit_ops(meta_revision, ops, deletes).await
    }

    /// After a lease expiry deleted an instance at `revision` without a write of ours:
    /// rewrites the meta key unless something already did since, so the version that
    /// includes the deletion is the meta key's and reads the same after any reload.
    /// Whether this call wrote it.
    pub async fn fence_expiry(&self, revision: i64) -> Result<bool, StoreError> {
        let meta = self.meta_key();
        let txn = Txn::new()
            .when([Compare::mod_revision(
                meta.clone(),
                CompareOp::Less,
                revision,
            )])
            .and_then([TxnOp::put(meta, "{}", None)]);
        let resp = self
            .call("txn", |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        Ok(resp.succeeded())
    }
}
