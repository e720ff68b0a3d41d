//! The serving certificate of the TLS proxy: the key rustls serves with, its `kubelet-serving`
//! CSR (names and addresses pods reach the hub by) and the loop that keeps it.

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use super::csr::{self, Template};
use super::files::save_pair;
use super::schedule::{wait_until, Backoff};
use super::store::{self, Loaded};
use super::{CertError, Certs, APPROVAL_WAIT, CLUSTER_IP_RETRY, RELOAD_CHECK};
use crate::upstream::Upstream;

/// The serving certificate of the TLS proxy, swapped in place when it is renewed.
#[derive(Debug, Default)]
pub struct ServingKey(RwLock<Option<Arc<CertifiedKey>>>);

impl ServingKey {
    pub(super) fn set(&self, loaded: &Loaded) -> Result<(), store::LoadError> {
        let key = rustls::crypto::ring::sign::any_supported_type(&loaded.key)
            .map_err(store::LoadError::ServingKey)?;
        let ck = CertifiedKey::new(loaded.certs.clone(), key);
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(ck));
        Ok(())
    }

    /// Whether a certificate is loaded.
    pub fn is_set(&self) -> bool {
        self.0.read().unwrap_or_else(|e| e.into_inner()).is_some()
    }
}

impl ResolvesServerCert for ServingKey {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Certs {
    pub(super) fn serving_path(&self) -> PathBuf {
        self.pki_dir.join("yurthub-server-current.pem")
    }

    pub(super) fn serving_template(&self) -> Template {
        let mut ips: Vec<IpAddr> = Vec::new();
        if let Some(ip) = *self.cluster_ip.lock().unwrap_or_else(|e| e.into_inner()) {
            ips.push(ip);
        }
        for ip in &self.serving_ips {
            if !ips.contains(ip) {
                ips.push(*ip);
            }
        }
        Template {
            signer: "kubernetes.io/kubelet-serving".into(),
            common_name: format!("system:node:{}", self.node),
            organizations: vec!["system:nodes".into()],
            dns_names: [
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ]
            .map(String::from)
            .to_vec(),
            ip_addresses: ips,
            usages: &["digital signature", "key encipherment", "server auth"],
        }
    }

    pub(super) fn serving_due(&self, now: SystemTime) -> SystemTime {
        let t = self.serving_template();
        match &*self.serving.read().unwrap_or_else(|e| e.into_inner()) {
            Some(h)
                if h.info.common_name == t.common_name
                    && t.ip_addresses
                        .iter()
                        .all(|ip| h.info.ip_addresses.contains(ip)) =>
            {
                h.rotate_at
            }
            _ => now,
        }
    }

    /// The ClusterIP of default/kubernetes, what pods resolve "kubernetes" to, for the
    /// serving certificate; tried until known.
    pub(super) async fn learn_cluster_ip(&self) {
        let Ok(api) = self.node_client() else { return };
        match api
            .request(
                "GET",
                "/api/v1/namespaces/default/services/kubernetes",
                None,
            )
            .await
        {
            Ok((200, body)) => {
                let ip = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["spec"]["clusterIP"].as_str()?.parse().ok());
                *self.cluster_ip.lock().unwrap_or_else(|e| e.into_inner()) = ip;
            }
            Ok((status, _)) => log::debug!("default/kubernetes service: {status}"),
            Err(e) => log::debug!("default/kubernetes service: {e}"),
        }
    }

    pub(super) async fn renew_serving(&self, upstream: &Upstream) -> Result<(), CertError> {
        let api = self.node_client()?;
        let issued = csr::obtain(&api, &self.serving_template(), APPROVAL_WAIT).await?;
        let csr_name = issued.csr_name.clone();
        let path = save_pair(&self.pki_dir, "yurthub-server", issued).await?;
        log::info!("CSR {csr_name} signed: stored {}", path.display());
        self.reload(Some(upstream));
        Ok(())
    }

    pub(super) async fn serving_loop(&self, upstream: &Upstream) {
        let mut backoff = Backoff(0);
        let mut cluster_ip_tried: Option<std::time::Instant> = None;
        loop {
            // A new client certificate may let a waiting serving certificate go ahead.
            let wake = self.loaded.listen();
            self.reload(Some(upstream));
            let now = SystemTime::now();
            let mut next = now + RELOAD_CHECK;
            if self.client_valid(now) {
                let unknown = self
                    .cluster_ip
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_none();
                if unknown && cluster_ip_tried.is_none_or(|t| t.elapsed() >= CLUSTER_IP_RETRY) {
                    cluster_ip_tried = Some(std::time::Instant::now());
                    self.learn_cluster_ip().await;
                }
                let due = self.serving_due(now);
                if due <= now {
                    match self.renew_serving(upstream).await {
                        Ok(()) => {
                            backoff = Backoff(0);
                            continue;
                        }
                        Err(e) => next = backoff.failed("serving certificate", &e, now),
                    }
                } else {
                    next = next.min(due);
                }
            }
            wait_until(next, wake).await;
        }
    }
}
