//! The certificate manager's own requests to the apiserver, outside the proxy's pools: each
//! on a fresh connection with the credential of the moment (bootstrap token, node
//! certificate, or none for discovery).

use rustls::ClientConfig;
use std::sync::Arc;
use std::time::Duration;

use super::CertError;
use crate::http::RequestHead;
use crate::upstream::ServerUrl;
use crate::upstream::{dial, round_trip};

/// The most bytes of an answer the manager reads (a CSR with its certificate is a few KiB).
const MAX_BODY: usize = 1024 * 1024;

/// One credential against the configured servers.
pub struct ApiClient {
    servers: Vec<ServerUrl>,
    config: Arc<ClientConfig>,
    token: Option<String>,
}

impl ApiClient {
    /// Requests go to `servers` in order (the first that answers), with `config`, and with
    /// `token` as a bearer token when given.
    pub fn new(servers: Vec<ServerUrl>, config: ClientConfig, token: Option<String>) -> Self {
        Self {
            servers,
            config: Arc::new(config),
            token,
        }
    }

    /// Sends `method path` with an optional JSON body; reads the whole answer. Within
    /// `timeout`, a streaming answer (a watch) is read until `done` says it has seen enough
    /// of the bytes so far, or until the server ends it.
    pub async fn stream(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        timeout: Duration,
        mut done: impl FnMut(&[u8]) -> bool,
    ) -> Result<(u16, Vec<u8>), CertError> {
        let mut last = CertError::NoServer;
        for url in &self.servers {
            let mut head = RequestHead::new(method, path);
            head.headers.set("Host", url.authority());
            head.headers.push("User-Agent", crate::kube::HUB_USER_AGENT);
            head.headers.push("Accept", "application/json");
            if let Some(t) = &self.token {
                head.headers.push("Authorization", format!("Bearer {t}"));
            }
            if let Some(b) = body {
                head.headers.push("Content-Type", "application/json");
                head.headers.push("Content-Length", b.len().to_string());
            }
            if !url.path_prefix.is_empty() {
                head.target = format!("{}{}", url.path_prefix, head.target);
            }
            let work = async {
                let mut conn = crate::http::Reader::new(dial(url, self.config.clone()).await?);
                let (resp, mut reader) = round_trip(&mut conn, &head, body.unwrap_or(&[])).await?;
                let mut out = Vec::new();
                while reader
                    .read(&mut conn, &mut out)
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))?
                    > 0
                {
                    if out.len() > MAX_BODY {
                        return Err(std::io::Error::other("answer too large"));
                    }
                    if done(&out) {
                        break;
                    }
                }
                Ok((resp.status, out))
            };
            let answer = smol::future::or(work, async {
                async_io::Timer::after(timeout).await;
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {timeout:?}"),
                ))
            })
            .await;
            match answer {
                Ok(a) => return Ok(a),
                Err(error) => {
                    last = CertError::Unreachable {
                        server: url.authority(),
                        error,
                    }
                }
            }
        }
        Err(last)
    }

    /// Sends `method path` with an optional JSON body and reads the whole answer.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<(u16, Vec<u8>), CertError> {
        self.stream(method, path, body, Duration::from_secs(30), |_| false)
            .await
    }
}
