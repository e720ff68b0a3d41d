//! The client certificate: its CSR template and schedule, the bootstrap credentials (a
//! bootstrap kubeconfig, or one discovered with `--join-token`) it is first asked with, and
//! the loop that keeps it.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use super::client::ApiClient;
use super::csr::{self, Template};
use super::discovery::{self, Token, Trust};
use super::files::{file_err, save_pair, write_file};
use super::kubeconfig::Kubeconfig;
use super::schedule::{wait_until, Backoff};
use super::{same_set, BootstrapMode, CertError, Certs, NoBootstrap, APPROVAL_WAIT, RELOAD_CHECK};
use crate::log_repeats::Repeats;

/// "Requesting a client certificate" is said once per failure back-off cycle at most every
/// 10 minutes: each attempt's failure has its own line.
static REQUESTING: Repeats = Repeats::new(std::time::Duration::from_secs(600));
use crate::upstream::{client_config, read_certs, read_identity, Upstream};

impl Certs {
    pub(super) fn client_template(&self) -> Template {
        let mut orgs: Vec<String> = if self.signer == "kubernetes.io/kube-apiserver-client-kubelet"
        {
            vec!["system:nodes".into()]
        } else {
            vec!["openyurt:yurthub".into(), "system:nodes".into()]
        };
        for o in &self.organizations {
            if !orgs.contains(o) {
                orgs.push(o.clone());
            }
        }
        Template {
            signer: self.signer.clone(),
            common_name: format!("system:node:{}", self.node),
            organizations: orgs,
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            usages: &["digital signature", "key encipherment", "client auth"],
        }
    }

    /// When the client certificate is due for renewal (now when missing, expired or not
    /// what the template asks for).
    pub(super) fn client_due(&self, now: SystemTime) -> SystemTime {
        let t = self.client_template();
        match &*self.client.read().unwrap_or_else(|e| e.into_inner()) {
            Some(h)
                if h.info.common_name == t.common_name
                    && same_set(&h.info.organizations, &t.organizations) =>
            {
                h.rotate_at
            }
            _ => now,
        }
    }

    pub(super) fn client_valid(&self, now: SystemTime) -> bool {
        self.client
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            // Not-after only, as client-go: a node whose clock lags at boot keeps its certificate.
            .is_some_and(|h| now < h.info.not_after)
    }

    /// The CA file's bytes, when it holds a PEM certificate (the file is read once).
    pub(super) fn ca_pem(&self) -> Option<Vec<u8>> {
        use rustls::pki_types::pem::PemObject;
        let bytes = std::fs::read(&self.ca_path).ok()?;
        let has_cert = rustls::pki_types::CertificateDer::pem_slice_iter(&bytes)
            .next()
            .is_some_and(|c| c.is_ok());
        has_cert.then_some(bytes)
    }

    /// A client authenticated by the node certificate.
    pub(super) fn node_client(&self) -> Result<ApiClient, CertError> {
        let ca = read_certs(&self.ca_path).map_err(CertError::Tls)?;
        let identity = read_identity(&self.client_path).map_err(CertError::Tls)?;
        let config = client_config(&ca, Some(identity)).map_err(CertError::Tls)?;
        Ok(ApiClient::new(self.servers.clone(), config, None))
    }

    /// A client authenticated by the bootstrap token; discovers the cluster with
    /// `--join-token` first when there is no bootstrap kubeconfig yet.
    pub(super) async fn bootstrap_client(&self) -> Result<ApiClient, CertError> {
        if !self.bootstrap_file.exists() {
            match &self.join_token {
                Some(t) => self.write_bootstrap(&Token::parse(t)?).await?,
                None => {
                    return Err(CertError::NoBootstrap(NoBootstrap::Nothing(
                        self.bootstrap_file.clone(),
                    )))
                }
            }
        }
        // Read first (a missing file is an I/O error of its own), then as kubectl reads it.
        std::fs::metadata(&self.bootstrap_file).map_err(|e| file_err(&self.bootstrap_file, e))?;
        let file = || self.bootstrap_file.clone();
        let k = Kubeconfig::read(&self.bootstrap_file)
            .map_err(|e| CertError::NoBootstrap(NoBootstrap::Unparsable(file(), e)))?;
        let token = k
            .token
            .clone()
            .ok_or_else(|| CertError::NoBootstrap(NoBootstrap::NoToken(file())))?;
        if self.ca_pem().is_none() {
            let ca = match (&k.ca_data, &k.ca_file) {
                (Some(d), _) => d.clone(),
                (None, Some(f)) => std::fs::read(f).map_err(|e| file_err(Path::new(f), e))?,
                (None, None) => return Err(CertError::NoBootstrap(NoBootstrap::NoCa(file()))),
            };
            write_file(&self.ca_path, &ca, 0o644).await?;
        }
        let ca = read_certs(&self.ca_path).map_err(CertError::Tls)?;
        let config = client_config(&ca, None).map_err(CertError::Tls)?;
        Ok(ApiClient::new(self.servers.clone(), config, Some(token)))
    }

    /// Discovers the cluster with `token` and writes the bootstrap kubeconfig (and the CA
    /// when there is none yet).
    pub(super) async fn write_bootstrap(&self, token: &Token) -> Result<(), CertError> {
        let trust = Trust {
            known_ca: self.ca_pem(),
            pins: &self.pins,
            unsafe_skip: self.unsafe_skip,
        };
        let found = discovery::discover(&self.servers, token, &trust).await?;
        if trust.known_ca.is_none() {
            write_file(&self.ca_path, &found.ca_pem, 0o644).await?;
        }
        let yaml = Kubeconfig::bootstrap_yaml(&found.server, &found.ca_pem, &token.expose());
        write_file(&self.bootstrap_file, yaml.as_bytes(), 0o600).await?;
        log::info!(
            "bootstrap token {:?} verified against cluster-info of {}; wrote {}",
            token,
            found.server,
            self.bootstrap_file.display()
        );
        Ok(())
    }

    /// `POST /v1/token`: discovers with the new token, rewrites the bootstrap kubeconfig, and
    /// makes the next attempt (now) use it. A no-op in `kubeletcertificate` mode.
    pub async fn update_token(&self, token: &str) -> Result<(), CertError> {
        if self.mode == BootstrapMode::KubeletCertificate {
            return Ok(());
        }
        self.write_bootstrap(&Token::parse(token)?).await?;
        self.woken.store(true, Ordering::Relaxed);
        self.wake.notify(usize::MAX);
        Ok(())
    }

    pub(super) async fn renew_client(&self, upstream: &Upstream) -> Result<(), CertError> {
        let now = SystemTime::now();
        let api = if self.client_valid(now) {
            self.node_client()?
        } else {
            if let Some(more) = REQUESTING.allow("bootstrap") {
                log::info!(
                    "no valid node client certificate: requesting one with the bootstrap token{more}"
                );
            }
            self.bootstrap_client().await?
        };
        let issued = csr::obtain(&api, &self.client_template(), APPROVAL_WAIT).await?;
        let csr_name = issued.csr_name.clone();
        let path = save_pair(&self.pki_dir, "yurthub", issued).await?;
        log::info!("CSR {csr_name} signed: stored {}", path.display());
        let conf = self.root_dir.join("yurthub.conf");
        if !conf.exists() {
            if let (Some(ca), Some(server)) = (self.ca_pem(), self.servers.first()) {
                let yaml = Kubeconfig::client_yaml(
                    &format!("https://{}", server.authority()),
                    &ca,
                    &self.client_path.display().to_string(),
                );
                write_file(&conf, yaml.as_bytes(), 0o600).await?;
            }
        }
        self.reload(Some(upstream));
        Ok(())
    }

    pub(super) async fn client_loop(&self, upstream: &Upstream) {
        let mut backoff = Backoff(0);
        loop {
            let wake = self.wake.listen();
            if self.woken.swap(false, Ordering::Relaxed) {
                backoff = Backoff(0);
            }
            self.reload(Some(upstream));
            let now = SystemTime::now();
            let mut next = now + RELOAD_CHECK;
            let due = self.client_due(now);
            if self.mode == BootstrapMode::Token {
                if due <= now {
                    // A new token (`/v1/token`) abandons a CSR still waiting for approval.
                    let cancel = self.wake.listen();
                    let renewed = smol::future::or(self.renew_client(upstream), async {
                        cancel.await;
                        Err(CertError::Superseded)
                    })
                    .await;
                    match renewed {
                        Ok(()) => {
                            backoff = Backoff(0);
                            continue;
                        }
                        Err(CertError::Superseded) => continue,
                        Err(e) => next = backoff.failed("node client certificate", &e, now),
                    }
                } else {
                    next = next.min(due);
                }
            }
            wait_until(next, wake).await;
        }
    }
}
