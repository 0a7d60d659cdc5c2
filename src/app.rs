//! Wiring: builds the shared parts from a `Config`, binds both listeners (so tests can use
//! port 0 and read the real addresses), and runs until a shutdown future resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::admin::Admin;
use crate::config::Config;
use crate::control::latch_file::{self, StateError};
use crate::control::persist::restore_rollout;
use crate::control::routing::{Router, RoutingTable};
use crate::control::{Control, Start};
use crate::fleet::Fleet;
use crate::judge::recorder::Recorder;
use crate::metrics::Metrics;
use crate::proxy::access_log::AccessLog;
use crate::proxy::Proxy;
use crate::server::{serve, ServeOptions};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error("tls: {0}")]
    Tls(String),
    #[error("proxy.access_log: cannot open it: {0}")]
    AccessLog(String),
    #[error("{0}")]
    Fleet(String),
}

pub struct App {
    config: Arc<Config>,
    proxy: Arc<Proxy>,
    admin: Arc<Admin>,
    control: Arc<Control>,
    metrics: Arc<Metrics>,
    proxy_listener: TcpListener,
    admin_listener: TcpListener,
    /// Workers beyond the first: each its own proxy (own upstream connections) and listener.
    workers: Vec<(Arc<Proxy>, std::net::TcpListener)>,
}

async fn bind(key: &'static str, addr: SocketAddr) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind { key, addr, source })
}

/// `n` listeners on one address with SO_REUSEPORT, so the kernel spreads connections over the
/// workers. The first may take port 0; the rest bind the port it got.
fn bind_shared(
    addr: SocketAddr,
    n: usize,
) -> Result<(TcpListener, Vec<std::net::TcpListener>), AppError> {
    let err = |source| AppError::Bind {
        key: "proxy.listen",
        addr,
        source,
    };
    let one = |at: SocketAddr| -> std::io::Result<std::net::TcpListener> {
        let socket = match at {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        if n > 1 {
            socket.set_reuseport(true)?;
        }
        socket.bind(at)?;
        socket.listen(4096)?.into_std()
    };
    // SO_REUSEPORT would also let a second canary-proxy share a busy port by mistake: take the
    // address plainly first, so a taken one is still an error.
    let at = std::net::TcpListener::bind(addr)
        .and_then(|probe| probe.local_addr())
        .map_err(err)?;
    let first = one(at).map_err(err)?;
    let rest = (1..n).map(|_| one(at)).collect::<Result<Vec<_>, _>>();
    let rest = rest.map_err(err)?;
    Ok((TcpListener::from_std(first).map_err(err)?, rest))
}

impl App {
    /// Builds everything from `config` (read from `config_path`, which reloads re-read) and
    /// binds both listeners. A latch in the state file for this canary version keeps it rolled
    /// back; a state file that cannot be read stops start-up.
    pub async fn bind(config: Config, config_path: Option<PathBuf>) -> Result<App, AppError> {
        let config = Arc::new(config);
        let latch = latch_file::load(&config.state.path)?;
        // The events span canary versions: kept whatever version the latch is for.
        let events = latch.as_ref().map(|l| l.events.clone()).unwrap_or_default();
        let (latched, last_rollback, generation, rollout) = match latch {
            Some(l) if l.canary_version == config.canary.version => {
                let rollout = restore_rollout(&config, l.rollout.as_ref());
                (l.rolled_back, l.last_rollback, l.generation, rollout)
            }
            Some(l) => {
                tracing::info!(old = %l.canary_version, new = %config.canary.version, "a new canary version: the old latch does not apply");
                (false, None, 0, restore_rollout(&config, None))
            }
            None => (false, None, 0, restore_rollout(&config, None)),
        };
        let percent = match (&config.rollout, &rollout) {
            (Some(r), Some(ro)) => r.steps[ro.step],
            _ => config.canary.traffic_percent,
        };
        if latched {
            tracing::warn!(canary_version = %config.canary.version, "the state file says this canary was rolled back: all traffic goes to stable until resumed");
        }
        let metrics = Arc::new(Metrics::new());
        let tls = match &config.proxy.tls {
            Some(files) => Some(crate::server::tls::server_config(files).map_err(AppError::Tls)?),
            None => None,
        };
        let table = RoutingTable::build(config.clone(), percent, latched, None, &metrics, tls);
        let router = Arc::new(Router::new(table));
        let recorder = Arc::new(Recorder::default());
        let fleet = match &config.fleet {
            Some(f) => Some(Arc::new(
                Fleet::new(f.clone(), metrics.register_fleet()).map_err(AppError::Fleet)?,
            )),
            None => None,
        };
        let control = Arc::new(Control::new(
            router.clone(),
            recorder.clone(),
            metrics.clone(),
            Start {
                config_path,
                last_rollback,
                generation,
                fleet: fleet.clone(),
                rollout,
                events,
                notifier: Some(Arc::new(crate::notify::Notifier::new(
                    metrics.clone(),
                    crate::server::tls::client_config(config.proxy.upstream_ca_file.as_deref())
                        .map_err(AppError::Tls)?,
                ))),
                history: Some(crate::control::history::History::load(
                    &crate::control::history::path_for(&config.state.path),
                )),
            },
        ));
        if let Some(f) = &fleet {
            // Read the fleet's latch before serving a single request.
            f.first_read(&*control).await;
        }
        let access_log =
            AccessLog::start(&config.proxy.access_log, metrics.access_log_dropped.clone())
                .map_err(|e| AppError::AccessLog(e.to_string()))?;
        let make_proxy = || -> Result<Arc<Proxy>, AppError> {
            let mut p = Proxy::new(router.clone(), recorder.clone(), metrics.clone(), &config)
                .map_err(AppError::Tls)?;
            p.access_log = access_log.clone();
            Ok(Arc::new(p))
        };
        let proxy = make_proxy()?;
        let admin = Arc::new(Admin {
            control: control.clone(),
            ready: Default::default(),
        });
        let (proxy_listener, more) = bind_shared(config.proxy.listen, config.proxy.workers)?;
        let workers = more
            .into_iter()
            .map(|l| Ok((make_proxy()?, l)))
            .collect::<Result<Vec<_>, AppError>>()?;
        let admin_listener = bind("admin.listen", config.admin.listen).await?;
        admin.ready.store(true, Ordering::Release);
        Ok(App {
            config,
            proxy,
            admin,
            control,
            metrics,
            proxy_listener,
            admin_listener,
            workers,
        })
    }

    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy_listener.local_addr().expect("bound listener")
    }

    /// The access log, to reopen on SIGUSR1.
    pub fn access_log(&self) -> Option<Arc<AccessLog>> {
        self.proxy.access_log.clone()
    }

    pub fn control(&self) -> Arc<Control> {
        self.control.clone()
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_listener.local_addr().expect("bound listener")
    }

    /// Serves until `shutdown` resolves, then drains both ports within `timeouts.drain`.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let c = &self.config;
        let (proxy_addr, admin_addr) = (self.proxy_addr(), self.admin_addr());
        let proxy_slots = Arc::new(Semaphore::new(c.limits.max_connections));
        let admin_slots = Arc::new(Semaphore::new(c.limits.max_connections));
        let opts = |slots: &Arc<Semaphore>| ServeOptions {
            slots: slots.clone(),
            header_read: c.timeouts.header_read,
            idle: c.timeouts.idle,
            drain: c.timeouts.drain,
            max_head_bytes: c.limits.max_header_bytes + c.limits.max_uri_bytes + 16 * 1024,
            write_stall: c.timeouts.body_read,
        };
        let router = self.proxy.router.clone();
        let tls: crate::server::TlsSource = Arc::new(move || router.load().tls.clone());
        // Workers beyond the first run on threads of their own, each a single-threaded event
        // loop: a connection, its upstream connections and their wakeups stay on one core.
        let mut threads = Vec::new();
        for (i, (proxy, listener)) in self.workers.into_iter().enumerate() {
            let (opts, metrics, tls, stop) = (
                opts(&proxy_slots),
                self.metrics.clone(),
                tls.clone(),
                stopped(stop_rx.clone()),
            );
            let spawned = std::thread::Builder::new()
                .name(format!("canary-worker-{}", i + 1))
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build();
                    let runtime = match runtime {
                        Ok(r) => r,
                        Err(e) => return tracing::error!(error = %e, "a worker could not start"),
                    };
                    runtime.block_on(async move {
                        match TcpListener::from_std(listener) {
                            Ok(l) => serve(l, proxy, opts, metrics, Some(tls), stop).await,
                            Err(e) => tracing::error!(error = %e, "a worker could not listen"),
                        }
                    });
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => tracing::error!(error = %e, "a worker thread could not start"),
            }
        }
        let proxy = tokio::spawn(serve(
            self.proxy_listener,
            self.proxy.clone(),
            opts(&proxy_slots),
            self.metrics.clone(),
            Some(tls),
            stopped(stop_rx.clone()),
        ));
        let admin = tokio::spawn(serve(
            self.admin_listener,
            self.admin.clone(),
            opts(&admin_slots),
            self.metrics.clone(),
            None,
            stopped(stop_rx.clone()),
        ));
        let memory = tokio::spawn(crate::server::memory::return_after_bursts(
            proxy_slots.clone(),
            c.limits.max_connections,
            stopped(stop_rx.clone()),
        ));
        let evaluator = tokio::spawn(self.control.clone().run_evaluator(stopped(stop_rx.clone())));
        let watcher = tokio::spawn(self.control.clone().run_watcher(stopped(stop_rx.clone())));
        let fleet = self
            .control
            .fleet()
            .cloned()
            .map(|f| tokio::spawn(f.run(self.control.clone(), stopped(stop_rx))));
        tracing::info!(
            proxy = %proxy_addr, admin = %admin_addr,
            stable = %c.stable.version, canary = %c.canary.version,
            percent = c.canary.traffic_percent, workers = c.proxy.workers, "canary-proxy serving"
        );
        shutdown.await;
        tracing::info!("shutting down: no new connections, draining in-flight requests");
        self.admin.ready.store(false, Ordering::Release);
        let _ = stop_tx.send(true);
        let _ = proxy.await;
        for t in threads {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        let _ = admin.await;
        let _ = memory.await;
        let _ = evaluator.await;
        let _ = watcher.await;
        if let Some(f) = fleet {
            let _ = f.await;
        }
        if let Some(f) = self.control.fleet() {
            f.leave().await;
        }
        // A failed flush says so itself.
        self.control.flush().await;
        self.control.save_history().await;
        tracing::info!("stopped");
    }
}
