//! `GET /metrics` in the Prometheus text format (version 0.0.4): requests by listener,
//! route and status with latency histograms, ZFS command counts and durations, pool
//! space, image fetches in flight, active streams, containers by state, Docker volumes.
//!
//! Request counting is a middleware every listener's router carries; the label is the
//! route pattern (`/volumes/snapshot`, `/snapshots/{*rest}`), never the raw path, so
//! the series stay few whatever clients send.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

#[derive(Default)]
struct Series {
    count: u64,
    sum: f64,
    /// Observations at or below each bound (cumulative, as Prometheus wants).
    buckets: [u64; BUCKETS.len()],
}

/// (listener, route, method, status).
type RequestKey = (String, String, String, u16);

#[derive(Clone, Default)]
pub struct HttpMetrics {
    /// (listener, route, method, status) → count.
    requests: Arc<Mutex<BTreeMap<RequestKey, u64>>>,
    /// (listener, route) → latency.
    latency: Arc<Mutex<BTreeMap<(String, String), Series>>>,
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
    let method = method_label(req.method()).to_owned();
    let started = Instant::now();
    let response = next.run(req).await;
    let secs = started.elapsed().as_secs_f64();
    t.metrics.observe(t.listener, &route, &method, response.status().as_u16(), secs);
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
    fn observe(&self, listener: &str, route: &str, method: &str, status: u16, secs: f64) {
        {
            let mut r = self.requests.lock().unwrap_or_else(|p| p.into_inner());
            *r.entry((listener.to_owned(), route.to_owned(), method.to_owned(), status)).or_insert(0) += 1;
        }
        let mut l = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let s = l.entry((listener.to_owned(), route.to_owned())).or_default();
        s.count += 1;
        s.sum += secs;
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                s.buckets[i] += 1;
            }
        }
    }

    fn render(&self, out: &mut String) {
        out.push_str("# HELP tankd_http_requests_total HTTP requests by listener, route, method and status.\n");
        out.push_str("# TYPE tankd_http_requests_total counter\n");
        for ((listener, route, method, status), n) in self.requests.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(
                out,
                "tankd_http_requests_total{{listener=\"{}\",route=\"{}\",method=\"{}\",status=\"{status}\"}} {n}",
                esc(listener),
                esc(route),
                esc(method)
            );
        }
        out.push_str("# HELP tankd_http_request_duration_seconds Time to answer a request (streams: until headers).\n");
        out.push_str("# TYPE tankd_http_request_duration_seconds histogram\n");
        for ((listener, route), s) in self.latency.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let labels = format!("listener=\"{}\",route=\"{}\"", esc(listener), esc(route));
            for (bound, n) in BUCKETS.iter().zip(s.buckets) {
                let _ = writeln!(out, "tankd_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {n}");
            }
            let _ = writeln!(out, "tankd_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}", s.count);
            let _ = writeln!(out, "tankd_http_request_duration_seconds_sum{{{labels}}} {}", s.sum);
            let _ = writeln!(out, "tankd_http_request_duration_seconds_count{{{labels}}} {}", s.count);
        }
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
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

/// The whole exposition.
pub fn render(http: &HttpMetrics, g: &Gauges) -> String {
    let mut out = String::new();
    http.render(&mut out);
    out.push_str("# HELP tankd_zfs_commands_total zfs/zpool commands run, by subcommand and result.\n");
    out.push_str("# TYPE tankd_zfs_commands_total counter\n");
    let stats = zfs_sys_shim::stats::command_stats();
    for s in &stats {
        for (result, n) in [("ok", s.ok), ("failed", s.failed)] {
            let _ = writeln!(
                out,
                "tankd_zfs_commands_total{{program=\"{}\",command=\"{}\",result=\"{result}\"}} {n}",
                esc(&s.program),
                esc(&s.verb)
            );
        }
    }
    out.push_str("# HELP tankd_zfs_command_seconds_total Wall time spent in zfs/zpool commands.\n");
    out.push_str("# TYPE tankd_zfs_command_seconds_total counter\n");
    for s in &stats {
        let _ = writeln!(
            out,
            "tankd_zfs_command_seconds_total{{program=\"{}\",command=\"{}\"}} {}",
            esc(&s.program),
            esc(&s.verb),
            s.seconds
        );
    }
    if let Some((pool, size, allocated, free, healthy)) = &g.pool {
        let p = esc(pool);
        for (name, help, v) in [
            ("tankd_pool_size_bytes", "Pool size.", *size),
            ("tankd_pool_allocated_bytes", "Pool space allocated.", *allocated),
            ("tankd_pool_free_bytes", "Pool space free.", *free),
            ("tankd_pool_healthy", "1 while the pool is ONLINE or DEGRADED.", u64::from(*healthy)),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{pool=\"{p}\"}} {v}");
        }
    }
    let gauge = |out: &mut String, name: &str, help: &str, v: usize| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    };
    gauge(&mut out, "tankd_image_fetches_in_flight", "Image fetches queued or running.", g.fetches_in_flight);
    gauge(&mut out, "tankd_streams_active", "Snapshot streams (downloads and uploads) running.", g.streams_active);
    out.push_str("# HELP tankd_containers Containers by state.\n# TYPE tankd_containers gauge\n");
    for (state, n) in &g.containers_by_state {
        let _ = writeln!(out, "tankd_containers{{state=\"{}\"}} {n}", esc(state));
    }
    if let Some((volumes, mounts)) = g.docker_volumes {
        gauge(&mut out, "tankd_docker_volumes", "Volumes of the Docker volume driver.", volumes);
        gauge(&mut out, "tankd_docker_volume_mounts", "Docker mounts held on those volumes.", mounts);
    }
    let _ = writeln!(
        out,
        "# HELP tankd_uptime_seconds Seconds since tankd started.\n# TYPE tankd_uptime_seconds gauge\ntankd_uptime_seconds {}",
        g.uptime_seconds
    );
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
        m.observe("control", "/volumes", "GET", 200, 0.003);
        m.observe("control", "/volumes", "GET", 200, 2.0);
        m.observe("control", "/volumes", "GET", 401, 0.0001);
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
        assert!(text.contains(
            r#"tankd_http_request_duration_seconds_bucket{listener="control",route="/volumes",le="0.005"} 2"#
        ));
        assert!(text.contains(
            r#"tankd_http_request_duration_seconds_bucket{listener="control",route="/volumes",le="+Inf"} 3"#
        ));
        assert!(text.contains(r#"tankd_pool_free_bytes{pool="tank"} 60"#));
        assert!(text.contains("tankd_image_fetches_in_flight 2"));
        assert!(text.contains(r#"tankd_containers{state="running"} 3"#));
        // Every sample line belongs to a declared family.
        let declared: Vec<&str> =
            text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).map(|l| l.split(' ').next().unwrap()).collect();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(declared.iter().any(|d| name.starts_with(d)), "{name} has no TYPE line");
        }
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
