//! Where RequestImage may fetch from: the configured image server and the operator's
//! `image_sources` URL prefixes, nothing else. Without this, anyone with the API token
//! could make tankd fetch from its own control API, a cloud metadata address or any
//! host on the node's networks (and store the answer as an image); a redirect is held to
//! the same rule.

use reqwest::Url;

/// The URL prefixes fetches may start from and be redirected to.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    prefixes: Vec<Url>,
}

impl Sources {
    /// The image server (`host:port` or a URL) and the extra prefixes; ones that do not
    /// parse are left out (the config has refused them already).
    pub fn new(image_server: Option<&str>, extra: &[String]) -> Sources {
        let server = image_server.map(|s| {
            let s = s.trim_end_matches('/');
            if s.contains("://") { format!("{s}/") } else { format!("http://{s}/") }
        });
        let prefixes = server.iter().chain(extra).filter_map(|p| Url::parse(p).ok()).collect();
        Sources { prefixes }
    }

    /// Whether `url` lies under one of the prefixes: same scheme, host and port, and a
    /// path that continues the prefix's at a `/`.
    pub fn admits(&self, url: &Url) -> bool {
        self.prefixes.iter().any(|p| {
            let (pp, up) = (p.path(), url.path());
            p.scheme() == url.scheme()
                && p.host_str() == url.host_str()
                && p.port_or_known_default() == url.port_or_known_default()
                && up.starts_with(pp)
                && (pp.ends_with('/') || up.len() == pp.len() || up.as_bytes()[pp.len()] == b'/')
        })
    }

    /// What the refusal says the allowed prefixes are.
    pub fn describe(&self) -> String {
        if self.prefixes.is_empty() {
            return "none are configured (image_server, image_sources)".into();
        }
        self.prefixes.iter().map(Url::as_str).collect::<Vec<_>>().join(", ")
    }

    /// reqwest's redirect rule: at most 5, each to an admitted URL.
    pub fn redirect_policy(&self) -> reqwest::redirect::Policy {
        let sources = self.clone();
        reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 5 {
                attempt.error("more than 5 redirects")
            } else if sources.admits(attempt.url()) {
                attempt.follow()
            } else {
                let to = format!(
                    "{}://{}{}",
                    attempt.url().scheme(),
                    attempt.url().host_str().unwrap_or(""),
                    attempt.url().path()
                );
                attempt.error(format!("a redirect to {to} leaves the allowed image sources"))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn only_the_server_and_listed_prefixes_are_admitted() {
        let s = Sources::new(Some("127.0.0.1:17172"), &["https://images.example/pub".into()]);
        assert!(s.admits(&url("http://127.0.0.1:17172/images/a/download")));
        assert!(s.admits(&url("https://images.example/pub/a.img")));
        assert!(s.admits(&url("https://images.example/pub")));
        for refused in [
            "http://127.0.0.1:3000/metrics",
            "http://127.0.0.1:7070/snapshots/download?id=x",
            "http://169.254.169.254/latest/meta-data/",
            "http://localhost:17172/images/a/download",
            "https://images.example/public/a.img",
            "https://images.example/other",
            "http://images.example/pub/a.img",
            "https://images.example:8443/pub/a.img",
            "http://127.0.0.1:17172@evil.example/images/a",
        ] {
            assert!(!s.admits(&url(refused)), "{refused}");
        }
        assert!(!Sources::new(None, &[]).admits(&url("http://127.0.0.1:17172/x")), "nothing configured: nothing");
        assert!(Sources::new(None, &[]).describe().contains("none"));
    }

    /// A server on loopback that redirects every request to `to`.
    async fn redirector(to: &'static str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf).await;
                let answer = format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\n\r\n");
                let _ = conn.write_all(answer.as_bytes()).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_redirect_out_of_the_sources_is_not_followed() {
        let addr = redirector("http://127.0.0.1:3000/metrics").await;
        let s = Sources::new(Some(&addr), &[]);
        let client = reqwest::Client::builder().redirect(s.redirect_policy()).build().unwrap();
        let err = client.get(format!("http://{addr}/images/x/download")).send().await.unwrap_err();
        assert!(err.is_redirect(), "{err}");
        assert!(format!("{err:?}").contains("leaves the allowed image sources"), "{err:?}");
    }
}
