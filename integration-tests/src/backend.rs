//! An echo backend: answers every request with JSON describing what it received
//! (`backend`, `method`, `version`, `uri`, `headers`, `body_len`), after `?sleep_ms=N`
//! if asked; over plain TCP (HTTP/1.1 and h2c) or TLS.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

#[derive(Debug)]
pub struct EchoBackend {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
}

impl EchoBackend {
    /// Binds 127.0.0.1:0 and serves in a background task until dropped.
    pub async fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(serve(listener, name.to_owned(), Arc::clone(&hits), async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            hits,
            stop: Some(stop),
        }
    }

    /// Like [`EchoBackend::start`], over TLS with `config` (its ALPN decides HTTP/2 or
    /// HTTP/1.1; the server reads either).
    pub async fn start_tls(name: &str, config: Arc<rustls::ServerConfig>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = oneshot::channel();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        tokio::spawn(serve_with(
            listener,
            name.to_owned(),
            Arc::clone(&hits),
            Some(acceptor),
            async {
                let _ = stopped.await;
            },
        ));
        Self {
            addr,
            hits,
            stop: Some(stop),
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub async fn serve(
    listener: TcpListener,
    name: String,
    hits: Arc<AtomicUsize>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    serve_with(listener, name, hits, None, shutdown).await;
}

/// [`serve`], over TLS when `tls` is given (a failed handshake drops the connection).
pub async fn serve_with(
    listener: TcpListener,
    name: String,
    hits: Arc<AtomicUsize>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let name: Arc<str> = name.into();
    // Connections die with the backend (dropping the set aborts them), as they do when
    // a real backend process dies: a pooled keep-alive connection must not outlive it.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
            () = &mut shutdown => return,
        };
        while connections.try_join_next().is_some() {}
        let name = Arc::clone(&name);
        let hits = Arc::clone(&hits);
        let tls = tls.clone();
        connections.spawn(async move {
            let svc = service_fn(move |req| {
                hits.fetch_add(1, Ordering::Relaxed);
                echo(Arc::clone(&name), req)
            });
            let auto = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            match tls {
                None => {
                    let _ = auto.serve_connection(TokioIo::new(stream), svc).await;
                }
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        let _ = auto.serve_connection(TokioIo::new(stream), svc).await;
                    }
                }
            }
        });
    }
}

async fn echo(name: Arc<str>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Some(ms) = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("sleep_ms=")))
        .and_then(|v| v.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in req.headers() {
        headers
            .entry(k.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let method = req.method().to_string();
    let version = format!("{:?}", req.version());
    let uri = req.uri().to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let json = serde_json::json!({
        "backend": &*name,
        "method": method,
        "version": version,
        "uri": uri,
        "headers": headers,
        "body_len": body.len(),
    });
    let mut resp = Response::new(Full::new(Bytes::from(json.to_string())));
    resp.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        "x-backend",
        http::HeaderValue::from_str(&name).unwrap_or(http::HeaderValue::from_static("?")),
    );
    Ok(resp)
}
