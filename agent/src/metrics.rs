//! `GET /metrics` in the OpenMetrics text format, encoded by `prometheus-client`:
//! requests by listener, route and status with latency histograms, ZFS command counts
//! and durations, pool space, image fetches in flight, active streams, containers by
//! state, Docker volumes.
//!
//! Request counting is a middleware every listener's router carries; the label is the
//! route pattern (`/volumes/snapshot`, `/snapshots/{*rest}`), never the raw path, and
//! the method is one of the standard ones or `other`, so the series stay few whatever
//! clients send.
//!
//! The request families live as long as the agent. Everything else is read when
//! scraped and goes, with clones of those families, into a registry made for that one
//! scrape: a series that no longer exists (a container state no container is in) is
//! gone from the next scrape instead of staying at its last value.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

/// Labels of `tankd_http_requests_total`, encoded in this order.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    listener: &'static str,
    route: String,
    method: &'static str,
    status: u16,
}

/// Labels of `tankd_http_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    listener: &'static str,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandResultLabels {
    program: String,
    command: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabels {
    program: String,
    command: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

/// A gauge set once, per scrape.
type ValueGauge = Gauge<u64, AtomicU64>;

/// Request counts and latencies; clones share them.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics { requests: Family::default(), latency: Family::new_with_constructor(|| Histogram::new(BUCKETS)) }
    }
}

/// Which listener a router serves, carried as the middleware's state.
#[derive(Clone)]
pub struct Tracked {
    pub metrics: HttpMetrics,
    pub listener: &'static str,
}

/// Middleware: count the request and time it.
pub async fn track(State(t): State<Tracked>, req: Request, next: Next) -> Response {
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".into());
    let method = method_label(req.method());
    let started = Instant::now();
    let response = next.run(req).await;
    let secs = started.elapsed().as_secs_f64();
    t.metrics.observe(t.listener, route, method, response.status().as_u16(), secs);
    response
}

/// The method as a label: the standard ones by name, anything a client made up as
/// `other`, so that made-up methods cannot add series without end.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method as M;
    const KNOWN: [(M, &str); 9] = [
        (M::GET, "GET"),
        (M::HEAD, "HEAD"),
        (M::POST, "POST"),
        (M::PUT, "PUT"),
        (M::DELETE, "DELETE"),
        (M::PATCH, "PATCH"),
        (M::OPTIONS, "OPTIONS"),
        (M::CONNECT, "CONNECT"),
        (M::TRACE, "TRACE"),
    ];
    KNOWN.iter().find(|(m, _)| m == method).map_or("other", |(_, name)| name)
}

impl HttpMetrics {
    fn observe(&self, listener: &'static str, route: String, method: &'static str, status: u16, secs: f64) {
        self.requests.get_or_create(&RequestLabels { listener, route: route.clone(), method, status }).inc();
        self.latency.get_or_create(&RouteLabels { listener, route }).observe(secs);
    }
}

/// Node-wide values read when scraped.
#[derive(Default)]
pub struct Gauges {
    pub pool: Option<(String, u64, u64, u64, bool)>,
    pub fetches_in_flight: usize,
    pub streams_active: usize,
    pub containers_by_state: BTreeMap<String, usize>,
    pub docker_volumes: Option<(usize, usize)>,
    pub uptime_seconds: u64,
}

/// The whole exposition, ending in `# EOF`.
pub fn render(http: &HttpMetrics, g: &Gauges) -> String {
    exposition(http, g, zfs_sys_shim::stats::command_stats())
}

/// [`render`] with the shim's command counts given.
fn exposition(http: &HttpMetrics, g: &Gauges, zfs_commands: Vec<zfs_sys_shim::stats::CommandStat>) -> String {
    // The registry appends a full stop to every help text.
    let mut r = Registry::default();
    r.register("tankd_http_requests", "HTTP requests by listener, route, method and status", http.requests.clone());
    r.register_with_unit(
        "tankd_http_request_duration",
        "Time to answer a request (streams: until headers)",
        Unit::Seconds,
        http.latency.clone(),
    );

    // The shim's totals so far: it counts every command it runs.
    let commands = Family::<CommandResultLabels, Counter>::default();
    let command_seconds = Family::<CommandLabels, Counter<f64, AtomicU64>>::default();
    for s in zfs_commands {
        for (result, n) in [("ok", s.ok), ("failed", s.failed)] {
            let labels = CommandResultLabels { program: s.program.clone(), command: s.verb.clone(), result };
            commands.get_or_create(&labels).inc_by(n);
        }
        command_seconds.get_or_create(&CommandLabels { program: s.program, command: s.verb }).inc_by(s.seconds);
    }
    r.register("tankd_zfs_commands", "zfs/zpool commands run, by subcommand and result", commands);
    r.register_with_unit("tankd_zfs_command", "Wall time spent in zfs/zpool commands", Unit::Seconds, command_seconds);

    if let Some((pool, size, allocated, free, healthy)) = &g.pool {
        let labels = PoolLabels { pool: pool.clone() };
        let bytes = [
            ("tankd_pool_size", "Pool size", *size),
            ("tankd_pool_allocated", "Pool space allocated", *allocated),
            ("tankd_pool_free", "Pool space free", *free),
        ];
        for (name, help, v) in bytes {
            let f = Family::<PoolLabels, ValueGauge>::default();
            f.get_or_create(&labels).set(v);
            r.register_with_unit(name, help, Unit::Bytes, f);
        }
        let f = Family::<PoolLabels, ValueGauge>::default();
        f.get_or_create(&labels).set(u64::from(*healthy));
        r.register("tankd_pool_healthy", "1 while the pool is ONLINE or DEGRADED", f);
    }
    r.register(
        "tankd_image_fetches_in_flight",
        "Image fetches queued or running",
        ConstGauge::new(g.fetches_in_flight),
    );
    r.register(
        "tankd_streams_active",
        "Snapshot streams (downloads and uploads) running",
        ConstGauge::new(g.streams_active),
    );
    let containers = Family::<StateLabels, ValueGauge>::default();
    for (state, n) in &g.containers_by_state {
        containers.get_or_create(&StateLabels { state: state.clone() }).set(*n as u64);
    }
    r.register("tankd_containers", "Containers by state", containers);
    if let Some((volumes, mounts)) = g.docker_volumes {
        r.register("tankd_docker_volumes", "Volumes of the Docker volume driver", ConstGauge::new(volumes));
        r.register("tankd_docker_volume_mounts", "Docker mounts held on those volumes", ConstGauge::new(mounts));
    }
    r.register_with_unit(
        "tankd_uptime",
        "Seconds since tankd started",
        Unit::Seconds,
        ConstGauge::new(g.uptime_seconds),
    );

    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &r) {
        tracing::error!(error = %e, "encoding the metrics failed");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_methods_share_one_label() {
        let m = |s: &str| method_label(&axum::http::Method::from_bytes(s.as_bytes()).unwrap());
        assert_eq!((m("GET"), m("DELETE"), m("PATCH")), ("GET", "DELETE", "PATCH"));
        assert_eq!((m("FOO01"), m("FOO02"), m("get")), ("other", "other", "other"));
    }

    #[test]
    fn exposition_has_counters_histograms_and_gauges() {
        let m = HttpMetrics::default();
        m.observe("control", "/volumes".into(), "GET", 200, 0.003);
        m.observe("control", "/volumes".into(), "GET", 200, 2.0);
        m.observe("control", "/volumes".into(), "GET", 401, 0.0001);
        let mut g = Gauges { fetches_in_flight: 2, ..Default::default() };
        g.pool = Some(("tank".into(), 100, 40, 60, true));
        g.containers_by_state.insert("running".into(), 3);
        let text = render(&m, &g);
        assert!(
            text.contains(
                r#"tankd_http_requests_total{listener="control",route="/volumes",method="GET",status="200"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"tankd_http_requests_total{listener="control",route="/volumes",method="GET",status="401"} 1"#
            )
        );
        // The encoder puts `le` first.
        assert!(text.contains(
            r#"tankd_http_request_duration_seconds_bucket{le="0.005",listener="control",route="/volumes"} 2"#
        ));
        assert!(text.contains(
            r#"tankd_http_request_duration_seconds_bucket{le="+Inf",listener="control",route="/volumes"} 3"#
        ));
        assert!(text.contains(r#"tankd_http_request_duration_seconds_count{listener="control",route="/volumes"} 3"#));
        assert!(text.contains(r#"tankd_pool_free_bytes{pool="tank"} 60"#));
        assert!(text.contains(r#"tankd_pool_healthy{pool="tank"} 1"#));
        assert!(text.contains("tankd_image_fetches_in_flight 2\n"));
        assert!(text.contains("tankd_uptime_seconds 0\n"));
        assert!(text.contains(r#"tankd_containers{state="running"} 3"#));
        assert!(!text.contains("tankd_docker_volumes"), "no Docker plugin, no Docker gauges");
        assert!(text.ends_with("# EOF\n"), "{text}");
        // Every sample line belongs to a declared family.
        let declared: Vec<&str> =
            text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).map(|l| l.split(' ').next().unwrap()).collect();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(declared.iter().any(|d| name.starts_with(d)), "{name} has no TYPE line");
        }
    }

    #[test]
    fn zfs_command_counts_are_counters() {
        use zfs_sys_shim::stats::CommandStat;
        let stat = |verb: &str, ok, failed, seconds| CommandStat {
            program: "zfs".into(),
            verb: verb.into(),
            ok,
            failed,
            seconds,
        };
        let text = exposition(
            &HttpMetrics::default(),
            &Gauges::default(),
            vec![stat("clone", 3, 1, 0.5), stat("list", 7, 0, 1.25)],
        );
        for line in [
            r#"tankd_zfs_commands_total{program="zfs",command="clone",result="ok"} 3"#,
            r#"tankd_zfs_commands_total{program="zfs",command="clone",result="failed"} 1"#,
            r#"tankd_zfs_commands_total{program="zfs",command="list",result="failed"} 0"#,
            r#"tankd_zfs_command_seconds_total{program="zfs",command="list"} 1.25"#,
            "# TYPE tankd_zfs_commands counter",
            "# TYPE tankd_zfs_command_seconds counter",
        ] {
            assert!(text.contains(&format!("{line}\n")), "{line} in {text}");
        }
    }

    #[tokio::test]
    async fn the_middleware_labels_by_route_pattern() {
        use axum::body::Body;
        use axum::routing::get;
        use tower::ServiceExt;
        let metrics = HttpMetrics::default();
        let tracked = Tracked { metrics: metrics.clone(), listener: "control" };
        let app = axum::Router::new()
            .route("/volumes/{id}", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(tracked, track));
        for (method, path) in [("GET", "/volumes/a"), ("GET", "/volumes/b"), ("FOO01", "/volumes/c"), ("GET", "/nope")]
        {
            let req = Request::builder().method(method).uri(path).body(Body::empty()).unwrap();
            app.clone().oneshot(req).await.unwrap();
        }
        let text = render(&metrics, &Gauges::default());
        for line in [
            r#"tankd_http_requests_total{listener="control",route="/volumes/{id}",method="GET",status="200"} 2"#,
            r#"tankd_http_requests_total{listener="control",route="/volumes/{id}",method="other",status="405"} 1"#,
            r#"tankd_http_requests_total{listener="control",route="unmatched",method="GET",status="404"} 1"#,
            r#"tankd_http_request_duration_seconds_count{listener="control",route="/volumes/{id}"} 3"#,
        ] {
            assert!(text.contains(&format!("{line}\n")), "{line} in {text}");
        }
    }

    #[test]
    fn labels_are_escaped() {
        let m = HttpMetrics::default();
        m.observe("unix", "/a\"b\\c\nd".into(), "GET", 200, 0.1);
        let text = render(&m, &Gauges::default());
        assert!(
            text.contains(
                r#"tankd_http_requests_total{listener="unix",route="/a\"b\\c\nd",method="GET",status="200"} 1"#
            ),
            "{text}"
        );
    }
}
