//! `mmtrace serve`: counts the selected calls in the kernel (the metrics-only path: no
//! records) and serves the counts to Prometheus at /metrics, and /healthz, until SIGTERM,
//! SIGINT or SIGHUP.

mod cgroups;
mod metrics;

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use mmtrace_bpf::features::{Feature, FEATURES_OFF_VAR};
use mmtrace_bpf::{Options, Tracer};
use mmtrace_events::catalog::Role;
use tiny_http::{Header, Request, Response, Server};

use crate::cli::ServeArgs;
use crate::containers;
use crate::privilege;
use crate::signals::Signals;
use crate::teardown;
use crate::trace::parse_who_and_what;

/// How long the server waits for a request before looking for a signal, or a new cgroup,
/// again: a look at the ring is a read of its memory, no syscall.
const TICK: Duration = Duration::from_millis(10);

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9477";

fn listen_address(text: &str) -> anyhow::Result<SocketAddr> {
    text.parse().map_err(|_| {
        anyhow::anyhow!(
            "--listen {text:?} is not an address to listen on: give IP:PORT, as {DEFAULT_LISTEN} or 0.0.0.0:9477"
        )
    })
}

pub fn run(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let addr = listen_address(&args.listen)?;
    let (selection, scope, sockets) = parse_who_and_what(&args.who)?;
    let features_off = match std::env::var(FEATURES_OFF_VAR) {
        Ok(list) => Feature::parse_list(&list)?,
        Err(_) => Vec::new(),
    };
    // mem_prot_alert is a record mmtrace makes of others, not a call to count.
    let events = selection
        .events
        .into_iter()
        .filter(|e| e.role != Role::Alerts)
        .collect();
    let mut options = Options::new(events);
    options.filters = selection.filters;
    options.scope = scope;
    options.features_off = features_off;
    options.metrics = true;
    options.durations = !args.no_durations;
    // Bound before anything is attached: a taken port costs nothing to find out.
    let listener = std::net::TcpListener::bind(addr).map_err(|e| {
        anyhow::anyhow!("cannot listen on {addr}: {e}; choose another address with --listen")
    })?;
    // Port 0 asks the kernel for a free one; the line below names the one it gave.
    let addr = listener.local_addr().unwrap_or(addr);
    let signals = Signals::install()?;
    let mut tracer = Tracer::start(&options)?;
    // Before the server's threads start: capabilities are dropped per thread.
    privilege::drop_after_attach(&tracer, false, false)?;
    let server = Server::from_listener(listener, None)
        .map_err(|e| anyhow::anyhow!("serving on {addr}: {e}"))?;
    let mut stderr = std::io::stderr();
    for u in tracer.unavailable() {
        let _ = writeln!(
            stderr,
            "mmtrace: {} unavailable: {}",
            u.event.name, u.reason
        );
    }
    if let Some(off) = tracer.features().summary(tracer.attached()) {
        let _ = writeln!(stderr, "mmtrace: {off}");
    }
    for line in containers::start(&sockets) {
        let _ = writeln!(stderr, "{line}");
    }
    let _ = writeln!(
        stderr,
        "mmtrace: counting {} events in the kernel{}; serving http://{addr}/metrics; SIGTERM or Ctrl-C to stop",
        tracer.attached().len(),
        if args.no_durations { ", without durations" } else { "" }
    );
    let mut cgroups = cgroups::Cgroups::new(Duration::from_secs(args.forget_after));
    while signals.take().is_empty() {
        cgroups.tick(&mut tracer)?;
        match server.recv_timeout(TICK) {
            Ok(Some(request)) => respond(&tracer, request),
            Ok(None) => {}
            Err(e) => return Err(e).context("accepting a connection"),
        }
    }
    // As trace does: the hooks come off in a child once we have exited (teardown.rs).
    drop(server);
    teardown::detach_after_exit(tracer);
    Ok(ExitCode::SUCCESS)
}

fn respond(tracer: &Tracer, request: Request) {
    let text = |body: String, status: u16, kind: &str| {
        Response::from_string(body)
            .with_status_code(status)
            .with_header(Header::from_bytes("Content-Type", kind).expect("a valid header"))
    };
    let plain = "text/plain; charset=utf-8";
    let response = match (request.method(), request.url()) {
        (tiny_http::Method::Get, "/metrics") => match tracer.metrics() {
            Ok(snap) => text(
                metrics::render(&snap, &tracer.lost()),
                200,
                "text/plain; version=0.0.4; charset=utf-8",
            ),
            Err(e) => text(format!("{e}\n"), 500, plain),
        },
        (tiny_http::Method::Get, "/healthz") => text("ok\n".into(), 200, plain),
        (tiny_http::Method::Get, _) => text("not found: try /metrics\n".into(), 404, plain),
        _ => text("only GET\n".into(), 405, plain),
    };
    // A scraper that went away is its own business.
    let _ = request.respond(response);
}
