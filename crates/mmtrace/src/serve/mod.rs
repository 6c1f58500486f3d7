//! `mmtrace serve`: counts the selected calls in the kernel (the metrics-only path: no
//! records) and serves the counts to Prometheus at /metrics, and /healthz, until SIGTERM,
//! SIGINT or SIGHUP.

mod cgroups;
mod metrics;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd as _, BorrowedFd, RawFd};
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use mmtrace_bpf::Tracer;
use rustix::net::RecvFlags;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpSocket};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;

use crate::cli::{ServeArgs, DEFAULT_LISTEN};
use crate::privilege::Keep;
use crate::session::{self, Session, Started};
use crate::teardown;

/// Connections served at once, fewer if the fd limit leaves less room (`connection_slots`).
/// Prometheus keeps one per target, an HA pair two: the rest wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 64;

/// Connections the kernel completes and queues while every slot is taken.
const BACKLOG: u32 = 1024;

/// Fds kept free of connections, for what a scrape or a tick opens (a container runtime's
/// socket, cgroup directories).
const FD_RESERVE: u64 = 16;

/// A request's head must arrive whole within this, or its connection is closed: a peer that
/// trickles it (slowloris) holds a slot no longer.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The whole life of a connection, its reply included: a peer that never reads the reply
/// holds a slot no longer. Past Prometheus's default scrape timeout (10 s), which gives up first.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(30);

/// The most a request's head may take (hyper's buffer; it answers 431 past it). A scrape's
/// head is a few hundred bytes.
const MAX_HEAD: usize = 16 * 1024;

/// How long accepting pauses after an error: at the fd limit (EMFILE) with no connection to
/// close, every retry would fail at once until one ends, so a busy loop would only burn the CPU.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

fn listen_address(text: &str) -> anyhow::Result<SocketAddr> {
    text.parse().map_err(|_| {
        anyhow::anyhow!(
            "--listen {text:?} is not an address to listen on: give IP:PORT, as {DEFAULT_LISTEN} or 0.0.0.0:9477"
        )
    })
}

pub fn run(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let addr = listen_address(&args.listen)?;
    let session = Session::metrics(args, session::features_off().as_deref())?;
    // hyper on tokio's current-thread runtime, as the Rust Prometheus exporters serve: a
    // connection is a task, not a thread, and hyper bounds what a peer sends. This runtime
    // starts no thread, so capabilities can still be dropped below; it is built first because
    // the listener registers with it.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("starting the server's runtime")?;
    let _in_runtime = runtime.enter();
    // Bound before anything is attached: a taken port costs nothing to find out.
    let listener = bind(addr).map_err(|e| {
        anyhow::anyhow!("cannot listen on {addr}: {e}; choose another address with --listen")
    })?;
    // Port 0 asks the kernel for a free one; the line below names the one it gave.
    let addr = listener.local_addr().unwrap_or(addr);
    // As trace's: SIGTERM, SIGINT and SIGHUP stop it, each waking the runtime when it comes.
    let ending = [
        SignalKind::terminate(),
        SignalKind::interrupt(),
        SignalKind::hangup(),
    ]
    .map(|kind| signal(kind).context("installing the signal handlers"));
    let [term, int, hup] = ending;
    let ending = [term?, int?, hup?];
    // Before any thread starts: capabilities are dropped per thread.
    let Started { tracer, notes, .. } = session::start(&session, false, Keep::default())?;
    let slots = connection_slots();
    let mut stderr = std::io::stderr();
    for note in notes {
        let _ = writeln!(stderr, "{note}");
    }
    let _ = writeln!(
        stderr,
        "mmtrace: counting {} events in the kernel{}; serving http://{addr}/metrics; SIGTERM or Ctrl-C to stop",
        tracer.attached().len(),
        if args.no_durations { ", without durations" } else { "" }
    );
    let cgroups = cgroups::Cgroups::new(Duration::from_secs(args.forget_after));
    let tracer = Rc::new(RefCell::new(tracer));
    let local = tokio::task::LocalSet::new();
    let served = local.block_on(
        &runtime,
        serve(listener, slots, Rc::clone(&tracer), ending, cgroups),
    );
    // The connections' tasks go with their shares of the tracer.
    drop(local);
    served?;
    let tracer = Rc::into_inner(tracer)
        .context("a connection outlived the server")?
        .into_inner();
    // As trace does: the hooks come off in a child once we have exited (teardown.rs).
    teardown::detach_after_exit(tracer);
    Ok(ExitCode::SUCCESS)
}

/// A listener on `addr` with a backlog deep enough for a burst of scrapers (std's is 128).
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // As std does, so a restart finds its port free though the last one's connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// How many connections fit under the fd limit beside the tracer's own fds, up to
/// MAX_CONNECTIONS; at least one, so a scrape still gets through under a tiny limit (whose
/// accept errors are then survived like any other).
fn connection_slots() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    let open = std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count) as u64;
    let free = limit.saturating_sub(open).saturating_sub(FD_RESERVE);
    (free as usize).clamp(1, MAX_CONNECTIONS)
}

/// Serves until a signal: the cgroups' news and looks on this task, when the ring holds news
/// or a look is due (no timer runs between), the connections on tasks of their own.
async fn serve(
    listener: TcpListener,
    slots: usize,
    tracer: Rc<RefCell<Tracer>>,
    [mut term, mut int, mut hup]: [Signal; 3],
    mut cgroups: cgroups::Cgroups,
) -> anyhow::Result<()> {
    let accepting = tokio::task::spawn_local(accept(listener, slots, Rc::clone(&tracer)));
    // A copy of the ring's fd, to wait on while the connections borrow the tracer.
    let ring = tracer.borrow().ring_fd().try_clone_to_owned()?;
    // SAFETY: the AsyncFd owns `ring`, an OwnedFd, which stays open and the same until it is
    // dropped with it.
    let news = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(std::io::Error::from)?;
    loop {
        // No borrow is held across an await: the connections borrow the tracer meanwhile.
        let look = cgroups.tick(&mut tracer.borrow_mut())?;
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => break,
            // Cleared before the ring is read (next round): news sent after that wakes it again.
            ready = news.readable() => ready?.clear_ready(),
            () = tokio::time::sleep_until(look.into()) => {}
        }
    }
    // The port is free again once the listener goes, before the hooks come off.
    accepting.abort();
    let _ = accepting.await;
    Ok(())
}

/// Accepts connections, each served by hyper within its bounds; no error of a peer or of
/// accept stops it. When a new peer finds every slot taken, or no fd is left to accept it, the
/// oldest connection whose request has not arrived whole is closed to make room: peers that
/// trickle their heads (slowloris) cannot keep a scraper out, whose head comes at once.
/// A head that waits whole in its socket, not yet read in a burst, is never taken for one.
async fn accept(listener: TcpListener, slots: usize, tracer: Rc<RefCell<Tracer>>) {
    let free = Arc::new(Semaphore::new(slots));
    let mut unheard: VecDeque<Unheard> = VecDeque::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        // One request a connection: a scraper's next comes seconds later, and a connection
        // kept open between would hold a slot (and an fd) for nothing.
        .keep_alive(false);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                if !evict(&mut unheard).await {
                    // Every fd is a connection being answered: one ends soon.
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
                continue;
            }
            Err(_) => {
                // ENOBUFS and ENOMEM pass with time; an aborted connection is retried the
                // same way, at no cost.
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let slot = match Arc::clone(&free).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                evict(&mut unheard).await;
                // The semaphore is never closed.
                let Ok(slot) = Arc::clone(&free).acquire_owned().await else {
                    return;
                };
                slot
            }
        };
        let heard = Rc::new(Cell::new(false));
        let fd = stream.as_raw_fd();
        let tracer = Rc::clone(&tracer);
        let connection = http.serve_connection(
            TokioIo::new(stream),
            service_fn({
                let heard = Rc::clone(&heard);
                move |request| {
                    heard.set(true);
                    let response = respond(&tracer.borrow(), &request);
                    async move { Ok::<_, Infallible>(response) }
                }
            }),
        );
        let task = tokio::task::spawn_local(async move {
            // A peer's errors, and its time running out, end its connection alone.
            let _ = tokio::time::timeout(CONNECTION_DEADLINE, connection).await;
            drop(slot);
        });
        // Those heard or ended since are forgotten, so the list stays as short as the slots.
        if unheard.len() >= 2 * slots {
            unheard.retain(|c| !c.heard.get() && !c.task.is_finished());
        }
        unheard.push_back(Unheard {
            heard,
            task: task.abort_handle(),
            fd,
        });
    }
}

/// A connection whose request's head had not come when it was accepted.
struct Unheard {
    /// Whether the head has come since.
    heard: Rc<Cell<bool>>,
    task: AbortHandle,
    /// Its socket, open while its task runs.
    fd: RawFd,
}

impl Unheard {
    /// Whether the peer is still sending its head: not served, not ended, and no whole head
    /// waiting in its socket for hyper's next turn.
    fn trickling(&self) -> bool {
        if self.heard.get() || self.task.is_finished() {
            return false;
        }
        let mut head = [0u8; MAX_HEAD];
        // SAFETY: the task, which owns the socket, has not ended, and none runs until this
        // returns (the runtime has one thread), so `fd` is still that socket.
        let socket = unsafe { BorrowedFd::borrow_raw(self.fd) };
        match rustix::net::recv(socket, &mut head, RecvFlags::PEEK | RecvFlags::DONTWAIT) {
            Ok((n, _)) => !head[..n].windows(4).any(|w| w == b"\r\n\r\n"),
            Err(_) => true,
        }
    }
}

/// Closes the oldest connection still trickling its head, if there is one, and lets its task
/// end, which frees its slot and its fd.
async fn evict(unheard: &mut VecDeque<Unheard>) -> bool {
    while let Some(connection) = unheard.pop_front() {
        if connection.trickling() {
            connection.task.abort();
            tokio::task::yield_now().await;
            return true;
        }
    }
    false
}

/// The answer to `request`, whose body is never read: no request here has one to give.
fn respond(tracer: &Tracer, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let plain = "text/plain; charset=utf-8";
    let (status, kind, body) = match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => match tracer.metrics() {
            Ok(snap) => (
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                metrics::render(&snap, &tracer.lost()),
            ),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, plain, format!("{e}\n")),
        },
        (&Method::GET | &Method::HEAD, "/healthz") => (StatusCode::OK, plain, "ok\n".into()),
        (&Method::GET | &Method::HEAD, _) => (
            StatusCode::NOT_FOUND,
            plain,
            "not found: try /metrics\n".into(),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            plain,
            "only GET and HEAD\n".into(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    if status == StatusCode::METHOD_NOT_ALLOWED {
        headers.insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    response
}
