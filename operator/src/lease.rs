//! Leader election with a `coordination.k8s.io` Lease, so that two operator replicas never both
//! reconcile. The holder renews the Lease every few seconds; another replica takes it over only
//! once it has not been renewed for its whole duration. If the holder fails to renew in time, the
//! process exits: a replica that may have lost the lease must not keep writing.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::PostParams;
use kube::{Api, Client};

/// How long a lease stays valid without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews; a third of the duration, so two renewals may fail in a row.
pub const RENEW_INTERVAL: Duration = Duration::from_secs(5);

/// Failures of leader election.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read the lease {0}")]
    Get(String, #[source] kube::Error),
    #[error("failed to write the lease {0}")]
    Write(String, #[source] kube::Error),
    #[error("lost the lease {0}: not renewed within {1:?}")]
    Lost(String, Duration),
}

/// One replica's view of a Lease.
#[derive(Debug, Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
}

impl LeaderElector {
    /// An elector for the Lease `name` in `namespace`, as `identity` (the pod name).
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
        }
    }

    /// Waits until this replica holds the lease.
    pub async fn acquire(&self) -> Result<(), Error> {
        loop {
            if self.try_acquire().await? {
                tracing::info!(lease = %self.name, identity = %self.identity, "acquired the lease: leading");
                return Ok(());
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// Renews the lease until an error or a missed deadline; only returns with an error.
    pub async fn keep(&self) -> Error {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(RENEW_INTERVAL).await;
            match self.try_acquire().await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => return Error::Lost(self.name.clone(), LEASE_DURATION),
                Err(e) => tracing::warn!(error = %e, "failed to renew the lease; retrying"),
            }
            if last_renewal.elapsed() >= LEASE_DURATION {
                return Error::Lost(self.name.clone(), LEASE_DURATION);
            }
        }
    }

    /// Takes or renews the lease if it is free, expired or ours. Optimistic concurrency
    /// (`resourceVersion`) makes two replicas racing for it safe: one write fails.
    async fn try_acquire(&self) -> Result<bool, Error> {
        let now = Timestamp::now();
        let existing = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| Error::Get(self.name.clone(), e))?;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(now, now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(Error::Write(self.name.clone(), e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref();
        let ours = holder == Some(self.identity.as_str());
        let duration =
            SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
        let expired = spec
            .renew_time
            .as_ref()
            .is_none_or(|t| t.0 + duration < now);
        if !ours && !expired && holder.is_some() {
            return Ok(false);
        }
        let acquired = if ours {
            spec.acquire_time.map_or(now, |t| t.0)
        } else {
            now
        };
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        lease.spec = Some(self.spec(acquired, now, transitions));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(Error::Write(self.name.clone(), e)),
        }
    }

    fn spec(&self, acquired: Timestamp, renewed: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }
}
