//! `gateway run`: wire the store, the dispatch worker, the HTTP API and SIP calls, and shut down
//! cleanly.
//!
//! Shutdown on SIGTERM or SIGINT: stop accepting connections, let requests in flight finish (each
//! is answered only after its commit), stop taking new deliveries and give those in flight a few
//! seconds. Nothing acknowledged is at risk at any point, since acknowledgement follows commit.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;

use crate::api::auth::{ApiClient, ApiKeys};
use crate::api::{self, AppState};
use crate::config::{self, Config};
use crate::dispatch::Dispatcher;
use crate::intake::Intake;
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{Backend, Numbering, RelatedOrders, Store, StoreKind};
use crate::telemetry;

pub fn run(config_file: Option<&Path>) -> anyhow::Result<()> {
    let config = Config::load(config_file)?;
    telemetry::init_logging(&config.log)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("gateway")
        .build()?;
    runtime.block_on(serve(config))
}

fn api_keys(config: &Config) -> anyhow::Result<ApiKeys> {
    let mut keys = ApiKeys::default();
    for k in &config.api.keys {
        let value = config::secret(&k.key, &k.key_file)?
            .with_context(|| format!("api key {:?} has no value", k.name))?;
        keys.insert(
            &value,
            ApiClient {
                name: k.name.clone(),
                admin: k.admin,
            },
        );
    }
    if keys.is_empty() {
        let (value, path) = config::generated_secret(&config.node.data_dir, "api-key")?;
        keys.insert(
            &value,
            ApiClient {
                name: "default".into(),
                admin: true,
            },
        );
        tracing::info!(path = %path.display(), "no API keys configured: using the admin key in this file");
    }
    Ok(keys)
}

async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let numbering = Numbering::new(config.node.id, config.node.utc_offset);
    Ok(match config.store.kind {
        StoreKind::Sqlite => {
            let path = config.sqlite_path();
            let store = SqliteStore::open(
                &path,
                numbering,
                config.store.max_batch,
                config.store.read_pool,
            )
            .with_context(|| format!("cannot open the SQLite store at {}", path.display()))?;
            tracing::info!(path = %path.display(), "store: sqlite");
            Store::new(Backend::Sqlite(store))
        }
        StoreKind::Postgres => {
            let url = config::secret(&config.store.postgres_url, &config.store.postgres_url_file)?
                .context("store.postgres_url is not set")?;
            let store = PgStore::open(
                &url,
                numbering,
                config.store.max_batch,
                config.store.read_pool,
            )
            .await
            .context("cannot open the PostgreSQL store")?;
            tracing::info!("store: postgres");
            Store::new(Backend::Postgres(store))
        }
    })
}

/// The related-order index, refilled from the store's recent orders when configured, before the
/// first request so that the first order after a restart is compared like any other.
async fn related_orders(config: &Config, store: Store) -> anyhow::Result<Store> {
    let r = &config.related;
    if !r.enabled {
        tracing::info!("related-order detection is off (related.enabled = false)");
        return Ok(store);
    }
    let related = RelatedOrders::new(r.index_config());
    if r.rebuild_on_start {
        let started = std::time::Instant::now();
        let read = related
            .rebuild(&store, chrono::Utc::now())
            .await
            .context("cannot read recent orders to rebuild the related-order index")?;
        tracing::info!(
            read,
            held = related.len(),
            ms = started.elapsed().as_millis() as u64,
            "related-order index rebuilt from the store"
        );
    }
    Ok(store.with_related(related))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // reqwest is built without a bundled crypto provider; ring is small and builds anywhere.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics = telemetry::init_metrics()?;
    std::fs::create_dir_all(&config.node.data_dir)
        .with_context(|| format!("cannot create data_dir {}", config.node.data_dir.display()))?;

    let keys = api_keys(&config)?;
    let dispatch_secret = match config::secret(
        &config.dispatch.secret,
        &config.dispatch.secret_file,
    )? {
        Some(s) => s,
        None => {
            let (s, path) = config::generated_secret(&config.node.data_dir, "dispatch-secret")?;
            tracing::info!(path = %path.display(), "no dispatch secret configured: using the one in this file");
            s
        }
    };
    let dispatch_secret = Arc::new(dispatch_secret.into_bytes());
    let store = related_orders(&config, open_store(&config).await?).await?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let dispatcher = match config.dispatch.settings(dispatch_secret.clone()) {
        Some(settings) => {
            let dispatcher = Dispatcher::new(store.clone(), settings)?;
            Some(tokio::spawn(dispatcher.run(stop_rx.clone())))
        }
        None => {
            tracing::warn!("dispatch.url is not set: orders wait in the outbox");
            None
        }
    };

    let flows = if config.ivr.flows_dir.is_dir() {
        let flows = crate::ivr::LiveFlows::load(&config.ivr.flows_dir)?;
        let status = flows.status();
        tracing::info!(dir = %status.dir.display(), version = status.version, flows = ?status.flows, "IVR flows loaded");
        Some(flows)
    } else {
        tracing::warn!(dir = %config.ivr.flows_dir.display(), "IVR flows directory not found: calls cannot be answered (set ivr.flows_dir)");
        None
    };
    let _watcher = match (&flows, config.ivr.reload) {
        (Some(f), true) => Some(f.watch()?),
        _ => None,
    };

    let calls = match (&flows, config.sip.enabled) {
        (Some(flows), true) => {
            Some(crate::call::CallService::start(&config, Arc::clone(flows), store.clone()).await?)
        }
        (None, true) => {
            tracing::warn!("SIP calls are not answered: no IVR flows");
            None
        }
        (_, false) => None,
    };

    let channels = api::channels::Channels::start(&config.channels, &store)?;
    let request_timeout = config.http.request_timeout_ms;
    let state = AppState {
        intake: Intake::new(store.clone()).with_timeout(request_timeout),
        store,
        keys: Arc::new(keys),
        dispatch_secret,
        dispatch_configured: config.dispatch.url.is_some(),
        event_max_skew_s: i64::try_from(config.dispatch.event_max_skew_s.as_secs())
            .unwrap_or(i64::MAX),
        request_timeout,
        metrics,
        flows,
        channels,
        web: Arc::new(api::WebState::from_config(&config)?),
        queues: calls.as_ref().map(|c| c.queues.clone()),
        outbound: calls.as_ref().map(|c| c.outbound.clone()),
        webrtc: calls.as_ref().and_then(|c| c.webrtc.clone()),
    };
    let app = api::router(state, config.http.max_body_bytes);
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.http.listen))?;
    tracing::info!(addr = %listener.local_addr()?, node = config.node.id, "http listening");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await?;
    tracing::info!("http stopped");
    if let Some(calls) = calls {
        calls.shutdown().await;
        tracing::info!("calls stopped");
    }
    let _ = stop_tx.send(true);
    if let Some(handle) = dispatcher {
        let _ = handle.await;
    }
    tracing::info!("gateway stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}
