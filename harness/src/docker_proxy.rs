//! A fault-injecting proxy in front of the Docker engine. A daemon pointed at it
//! (`DOCKER_HOST=tcp://…`) talks to the real engine, except where a scenario planted a
//! fault: the next container starts are refused as Docker refuses them, or held so the
//! daemon can be killed between creating a container and starting it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use hyperlocal::UnixConnector;
use tokio::sync::watch;

/// What the proxy does to the container starts it sees.
#[derive(Debug, Default)]
struct Faults {
    /// Starts still to refuse, each with this status and message.
    refusals: Vec<(StatusCode, String)>,
    /// Hold every start until released; a held start is never forwarded.
    hold_starts: bool,
    /// `POST …/containers/create` requests forwarded, by container name.
    created: Vec<String>,
    /// Starts refused or held so far.
    intercepted: usize,
}

#[derive(Clone)]
struct Shared {
    socket: PathBuf,
    client: Client<UnixConnector, Body>,
    faults: Arc<Mutex<Faults>>,
    /// Turns true when held starts are let go.
    released: watch::Sender<bool>,
}

/// A running proxy; dropping it stops serving.
#[derive(Debug)]
pub struct DockerProxy {
    addr: SocketAddr,
    faults: Arc<Mutex<Faults>>,
    released: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

impl DockerProxy {
    /// Listens on a free loopback port and forwards to the engine at `crate::docker::address()`,
    /// which must be a unix socket (the default, and what CI uses).
    pub async fn start() -> anyhow::Result<Self> {
        let address = crate::docker::address();
        let socket = address
            .strip_prefix("unix://")
            .map(PathBuf::from)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "the Docker fault proxy forwards to a unix socket, and DOCKER_HOST is {address}; unset it or point it at unix:///var/run/docker.sock"
                )
            })?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let faults = Arc::new(Mutex::new(Faults::default()));
        let (released, _) = watch::channel(false);
        let shared = Shared {
            socket,
            client: Client::builder(TokioExecutor::new()).build(UnixConnector),
            faults: Arc::clone(&faults),
            released: released.clone(),
        };
        let app = axum::Router::new().fallback(forward).with_state(shared);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            addr,
            faults,
            released,
            server,
        })
    }

    /// `DOCKER_HOST` for a daemon that should go through this proxy.
    pub fn docker_host(&self) -> String {
        format!("tcp://{}", self.addr)
    }

    /// Refuses the next `count` container starts with `status` and Docker's error shape.
    pub fn refuse_starts(&self, count: usize, status: StatusCode, message: &str) {
        let mut faults = self.faults.lock().expect("lock");
        faults
            .refusals
            .extend(std::iter::repeat_n((status, message.to_owned()), count));
    }

    /// Holds every container start from now on, without forwarding it.
    pub fn hold_starts(&self) {
        self.faults.lock().expect("lock").hold_starts = true;
        self.released.send_replace(false);
    }

    /// Lets held starts go: each is answered 500 and never reaches Docker.
    pub fn release_starts(&self) {
        self.faults.lock().expect("lock").hold_starts = false;
        self.released.send_replace(true);
    }

    /// Names of the containers created through the proxy, in order.
    pub fn created(&self) -> Vec<String> {
        self.faults.lock().expect("lock").created.clone()
    }

    /// Starts refused or held so far.
    pub fn intercepted(&self) -> usize {
        self.faults.lock().expect("lock").intercepted
    }
}

impl Drop for DockerProxy {
    fn drop(&mut self) {
        self.release_starts();
        self.server.abort();
    }
}

/// Docker's own error body.
fn docker_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "message": message })),
    )
        .into_response()
}

async fn forward(State(shared): State<Shared>, mut request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let is_start = request.method() == Method::POST
        && path.contains("/containers/")
        && path.ends_with("/start");
    if is_start && let Some(answer) = intercept(&shared).await {
        return answer;
    }
    if request.method() == Method::POST && path.ends_with("/containers/create") {
        let name = request
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("name=")))
            .unwrap_or_default()
            .to_owned();
        shared.faults.lock().expect("lock").created.push(name);
    }
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    *request.uri_mut() = hyperlocal::Uri::new(&shared.socket, &path_and_query).into();
    match shared.client.request(request).await {
        Ok(response) => response.map(Body::new),
        Err(e) => docker_error(
            StatusCode::BAD_GATEWAY,
            &format!("the harness's Docker proxy cannot reach the engine: {e}"),
        ),
    }
}

/// A refusal or a hold for a container start, or `None` to forward it.
async fn intercept(shared: &Shared) -> Option<Response> {
    let (refusal, hold) = {
        let mut faults = shared.faults.lock().expect("lock");
        let refusal = (!faults.refusals.is_empty()).then(|| faults.refusals.remove(0));
        let hold = refusal.is_none() && faults.hold_starts;
        if refusal.is_some() || hold {
            faults.intercepted += 1;
        }
        (refusal, hold)
    };
    if let Some((status, message)) = refusal {
        return Some(docker_error(status, &message));
    }
    if hold {
        let mut released = shared.released.subscribe();
        let _ = released.wait_for(|released| *released).await;
        return Some(docker_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "held by the harness and never started",
        ));
    }
    None
}
