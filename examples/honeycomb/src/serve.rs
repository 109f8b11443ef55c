//! Starting and stopping the service.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::path::PathBuf;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;

use tokio_util::sync::CancellationToken;

use crate::api::{ApiLimits, ApiState};
use crate::config::{Config, Origin, mask_url};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Another process listens on the address.
    #[error(
        "cannot listen on {addr}: the address is in use (chosen by {origin}; set listen, HONEYCOMB_LISTEN or --listen to another)"
    )]
    AddrInUse {
        /// The address.
        addr: SocketAddr,
        /// The setting that chose it.
        origin: Origin,
    },
    /// Listening failed otherwise.
    #[error("cannot listen on {addr} (chosen by {origin}): {error}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The setting that chose it.
        origin: Origin,
        /// Why.
        error: std::io::Error,
    },
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}: {error}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The store could not be opened.
    #[error("cannot open the store {url}: {error}")]
    Store {
        /// The store URL, secrets masked.
        url: String,
        /// Why.
        error: hive::Error,
    },
    /// The APIary registry could not be set up.
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    /// Serving failed.
    #[error("serving failed: {0}")]
    Io(#[from] std::io::Error),
    /// The Telegram route could not start.
    #[error(transparent)]
    Telegram(crate::telegram::TelegramError),
}

/// Listens on the configured address; a taken port is [`ServeError::AddrInUse`]
/// naming the address and the setting that chose it.
pub async fn bind(config: &Config) -> Result<TcpListener, ServeError> {
    let addr = config.listen;
    TcpListener::bind(addr).await.map_err(|error| {
        let origin = config.origin("listen");
        if error.kind() == std::io::ErrorKind::AddrInUse {
            ServeError::AddrInUse { addr, origin }
        } else {
            ServeError::Bind {
                addr,
                origin,
                error,
            }
        }
    })
}

/// Opens the configured store (creating the data directory for the default
/// SQLite file).
pub async fn open_store(config: &Config) -> Result<hive::Hive, ServeError> {
    open_store_with(config, config.engine()).await
}

/// [`open_store`] with the engine's settings (an admin command turns the
/// background work off).
pub async fn open_store_with(
    config: &Config,
    engine: hive::HiveConfig,
) -> Result<hive::Hive, ServeError> {
    if config.backend.is_none() {
        std::fs::create_dir_all(&config.data_dir).map_err(|error| ServeError::DataDir {
            path: config.data_dir.clone(),
            error,
        })?;
    }
    let url = config.backend_url();
    hive::open_with(&url, engine)
        .await
        .map_err(|error| ServeError::Store {
            url: mask_url(&url),
            error,
        })
}

/// `/readyz`: 200 when the store answers (one read of a task that does not
/// exist), 503 with the reason when it does not.
async fn ready(State(state): State<ApiState>) -> (StatusCode, String) {
    match state.hive().store().get_task(hive::TaskId::new()).await {
        Ok(_) => (StatusCode::OK, "ready\n".into()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store unavailable: {e}\n"),
        ),
    }
}

/// The routes served without a token: health, readiness, version.
fn open_routes() -> Router<ApiState> {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route(
            "/api/version",
            get(|| async {
                Json(json!({
                    "name": "honeycomb",
                    "version": env!("CARGO_PKG_VERSION"),
                    "commit": option_env!("HONEYCOMB_GIT_COMMIT").unwrap_or("unknown"),
                }))
            }),
        )
}

/// The whole service's router over `state`.
pub fn router(state: ApiState) -> Router {
    crate::api::router(state, open_routes())
}

/// Runs the service until `stop` completes: binds first (so a taken port
/// fails before anything else is touched), opens the store, serves, then
/// stops: no new connections, open event streams end (clients resume with
/// `Last-Event-ID`), requests in flight get up to `shutdown_grace` to
/// finish, then the engine stops. `ready` gets the bound address once it
/// listens.
pub async fn serve(
    config: Config,
    stop: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let limits = config.api_limits();
    serve_with(config, limits, stop, ready).await
}

/// [`serve`] with the API's limits.
pub async fn serve_with(
    config: Config,
    limits: ApiLimits,
    stop: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let listener = bind(&config).await?;
    let hive = open_store(&config).await?;
    let addr = listener.local_addr()?;
    let stopping = CancellationToken::new();
    let registry = match crate::registry::open_registry(&config, &hive) {
        Ok(r) => r,
        Err(e) => {
            hive.shutdown();
            return Err(e.into());
        }
    };
    let state = ApiState::with_registry(hive.clone(), limits, stopping.clone(), registry);
    if let Some(settings) = config.telegram.clone() {
        match crate::telegram::Telegram::new(settings) {
            Ok(tg) => {
                if let Err(e) = crate::telegram::start(&state, std::sync::Arc::new(tg)).await {
                    // The route still answers; Telegram can be pointed at it later.
                    tracing::warn!(error = %e, "telegram: the webhook is not registered");
                }
                tracing::info!("telegram: the route /telegram/webhook is on");
            }
            Err(e) => {
                hive.shutdown();
                return Err(ServeError::Telegram(e));
            }
        }
    }
    tracing::info!(%addr, backend = %mask_url(&config.backend_url()), "honeycomb listening");
    ready(addr);
    let signal = stopping.clone();
    let server = axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        stop.await;
        signal.cancel();
    })
    .into_future();
    tokio::pin!(server);
    let served = tokio::select! {
        r = &mut server => r,
        () = async {
            stopping.cancelled().await;
            tokio::time::sleep(config.shutdown_grace).await;
        } => {
            tracing::warn!(grace = ?config.shutdown_grace, "requests still in flight after the grace period; stopping anyway");
            Ok(())
        }
    };
    hive.shutdown();
    served?;
    tracing::info!("honeycomb stopped");
    Ok(())
}

/// `honeycomb healthcheck`: asks the service at `addr` for `/healthz` (what
/// a container's `HEALTHCHECK` runs: the image has no shell or curl). `Ok`
/// when it answered 200 within `timeout`.
pub async fn healthcheck(addr: SocketAddr, timeout: std::time::Duration) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let req = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("cannot ask {addr}: {e}"))?;
        let mut head = vec![0; 12];
        s.read_exact(&mut head)
            .await
            .map_err(|e| format!("no answer from {addr}: {e}"))?;
        if head.starts_with(b"HTTP/1.1 200") {
            Ok(())
        } else {
            Err(format!(
                "{addr} answered {}",
                String::from_utf8_lossy(&head).trim()
            ))
        }
    };
    tokio::time::timeout(timeout, probe)
        .await
        .map_err(|_| format!("{addr} did not answer within {timeout:?}"))?
}
