//! A minimal HTTP/1.1 file server for image-fetch tests: fixed bodies and headers per
//! path, an optional delay before the body (to hold fetches in flight), a hit counter.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Default)]
pub struct Entry {
    pub body: Arc<Vec<u8>>,
    pub headers: Vec<(String, String)>,
    /// Sleep this long after the headers, before the body.
    pub delay: Duration,
    /// Send only this many body bytes, then close (a cut connection).
    pub cut_at: Option<usize>,
    /// Send this many body bytes, pause this long, then send the rest (a stalled
    /// transfer that is under way).
    pub pause_at: Option<(usize, Duration)>,
}

#[derive(Clone)]
pub struct ImageServer {
    pub addr: String,
    entries: Arc<Mutex<HashMap<String, Entry>>>,
    pub hits: Arc<Mutex<HashMap<String, usize>>>,
    pub connections: Arc<AtomicUsize>,
}

impl ImageServer {
    pub fn start() -> ImageServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = ImageServer { addr, entries: Arc::default(), hits: Arc::default(), connections: Arc::default() };
        let s = server.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || s.serve(conn));
            }
        });
        server
    }

    pub fn put(&self, path: &str, entry: Entry) {
        self.entries.lock().unwrap().insert(path.to_owned(), entry);
    }

    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    fn serve(&self, mut conn: std::net::TcpStream) {
        self.connections.fetch_add(1, Ordering::SeqCst);
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                break;
            }
        }
        *self.hits.lock().unwrap().entry(path.clone()).or_default() += 1;
        let entry = self.entries.lock().unwrap().get(&path).cloned();
        let Some(entry) = entry else {
            let _ = conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            return;
        };
        let mut head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n", entry.body.len());
        for (k, v) in &entry.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        if conn.write_all(head.as_bytes()).is_err() {
            return;
        }
        std::thread::sleep(entry.delay);
        let body = match entry.cut_at {
            Some(n) => &entry.body[..n.min(entry.body.len())],
            None => &entry.body[..],
        };
        let (first, rest) = match entry.pause_at {
            Some((n, _)) => body.split_at(n.min(body.len())),
            None => (body, &[][..]),
        };
        if conn.write_all(first).is_err() {
            return;
        }
        if let Some((_, pause)) = entry.pause_at {
            let _ = conn.flush();
            std::thread::sleep(pause);
        }
        let _ = conn.write_all(rest);
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(bytes))
}
