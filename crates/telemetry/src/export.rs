//! The OTLP exporter's HTTP client: the workspace's `reqwest` on a runtime
//! of its own (one thread, started only when traces are exported), so the
//! SDK's batch thread never depends on the service's event loop, and a
//! service on one event-loop thread is never blocked by an export.

use bytes::Bytes;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};

pub(crate) struct ExportClient {
    client: reqwest::Client,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for ExportClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportClient").finish_non_exhaustive()
    }
}

impl ExportClient {
    pub(crate) fn new(timeout: std::time::Duration) -> Result<Self, crate::TelemetryError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otlp-export")
            .enable_all()
            .build()
            .map_err(|e| crate::TelemetryError(format!("cannot start the export thread: {e}")))?;
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| crate::TelemetryError(format!("cannot build the OTLP client: {e}")))?;
        Ok(Self {
            client,
            runtime: Some(runtime),
        })
    }
}

impl Drop for ExportClient {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[async_trait::async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let Some(runtime) = &self.runtime else {
            return Err("the export thread has stopped".into());
        };
        let client = self.client.clone();
        let task = runtime.spawn(async move {
            let (parts, body) = request.into_parts();
            let answer = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await?;
            let status = answer.status();
            let headers = answer.headers().clone();
            let body = answer.bytes().await?;
            let mut response = Response::new(body);
            *response.status_mut() = status;
            *response.headers_mut() = headers;
            Ok::<_, HttpError>(response)
        });
        task.await?
    }
}
