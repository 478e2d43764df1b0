//! A docstore server with one tenant, for trying drivers against it by hand:
//! `cargo run -p docstore --example serve -- 127.0.0.1:27099 <user> <password>`
//! (the user's database has the user's name).

use std::sync::Arc;

use docstore::{Config, Resolver, Server, Tenant};

struct One(Tenant);

impl Resolver for One {
    fn tenant(&self, user: &str) -> Option<Tenant> {
        (user == self.0.user).then(|| self.0.clone())
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, user, password] = &args[..] else {
        eprintln!("usage: serve <addr> <user> <password>");
        std::process::exit(2);
    };
    let path = std::env::temp_dir().join(format!("docstore-{user}.sqlite"));
    let tenant = Tenant { user: user.clone(), db: user.clone(), password: password.clone(), path };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    Server::new(Config::default(), Arc::new(One(tenant))).serve(listener).await
}
