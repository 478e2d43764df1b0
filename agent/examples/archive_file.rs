//! Archives a stream file with the archive writer tankd runs (`Archives::archive`: cut,
//! encrypt, hash, store, manifest last), for `scripts/bench/archive`. The node's keys
//! are kept in `<repo>/..` as tankd keeps them in its data dir.
//!
//!   TANKD_ARCHIVE_PASSPHRASE=... archive_file <repo-dir> <stream-file>

use std::time::Instant;

use tankd::archives::{Archives, Keys, NewArchive, Repo, pack};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, repo, file] = args.as_slice() else {
        eprintln!("usage: archive_file <repo-dir> <stream-file>");
        std::process::exit(2);
    };
    let repo = std::path::Path::new(repo);
    let keys = match std::env::var("TANKD_ARCHIVE_PASSPHRASE") {
        Ok(p) => Keys::load_or_create(repo.parent().unwrap_or(repo), &p).expect("archive keys"),
        Err(_) => Keys::none(),
    };
    let archives = Archives::new(Repo::open(repo).expect("repository"), keys, Vec::new(), pack::CHUNK_SIZE);
    let input = std::fs::File::open(file).expect("stream file");
    let started = Instant::now();
    let new = NewArchive { dataset: "bench".into(), snapshot: "bench".into(), guid: "1".into(), ..Default::default() };
    let m = archives.archive(new, input).await.expect("archive");
    println!("{} {} objects {} bytes {:.3} s", m.id, m.objects.len(), m.original_size, started.elapsed().as_secs_f64());
}
