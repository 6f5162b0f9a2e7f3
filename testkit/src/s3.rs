//! A real S3-compatible server for tests: the `s3s-fs` binary on a free loopback port, with its
//! data in a temporary directory and one bucket, killed (SIGKILL) when dropped.
//!
//! The binary is found through `BITRIVER_S3S_FS`, then `/var/cache/bitriver-s3s/bin/s3s-fs`
//! (where `objects/install-s3s-fs.sh` puts it), then `PATH`. Without it a test fails naming it,
//! unless `BITRIVER_ALLOW_SKIP=1` (then [`S3Server::start`] prints a skip line and gives `None`).

use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub const ACCESS_KEY: &str = "bitriver-test-access";
pub const SECRET_KEY: &str = "bitriver-test-secret";
pub const BUCKET: &str = "recordings";
const DEFAULT_BINARY: &str = "/var/cache/bitriver-s3s/bin/s3s-fs";

pub struct S3Server {
    binary: PathBuf,
    dir: TempDir,
    port: u16,
    child: Option<Child>,
}

fn find_binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("BITRIVER_S3S_FS") {
        let path = PathBuf::from(path);
        return match path.is_file() {
            true => Ok(path),
            false => Err(format!("BITRIVER_S3S_FS={} is not a file", path.display())),
        };
    }
    let default = PathBuf::from(DEFAULT_BINARY);
    if default.is_file() {
        return Ok(default);
    }
    let paths = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&paths)
        .map(|dir| dir.join("s3s-fs"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| format!("s3s-fs not found (BITRIVER_S3S_FS, {DEFAULT_BINARY}, PATH)"))
}

impl S3Server {
    /// Starts a server with an empty bucket [`BUCKET`]. `None` only when the binary is missing
    /// and skipping is allowed.
    pub fn start() -> Option<S3Server> {
        let binary = match find_binary() {
            Ok(binary) => binary,
            Err(missing) => {
                let message = format!("{missing}: run objects/install-s3s-fs.sh");
                if std::env::var(crate::tools::ALLOW_SKIP).as_deref() == Ok("1") {
                    eprintln!("SKIPPED: {message}");
                    return None;
                }
                panic!("{message} (or set BITRIVER_ALLOW_SKIP=1 to skip)");
            }
        };
        let dir = tempfile::tempdir().expect("temp dir");
        // s3s-fs serves each directory under its root as a bucket.
        std::fs::create_dir_all(dir.path().join("data").join(BUCKET)).expect("bucket dir");
        let port = crate::process::free_port(false).expect("a free port");
        let mut server = S3Server { binary, dir, port, child: None };
        server.spawn();
        Some(server)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where the server keeps `full_key` (prefix included) on disk.
    pub fn object_path(&self, full_key: &str) -> PathBuf {
        self.bucket_dir().join(full_key)
    }

    /// The bucket's directory on the server's disk.
    pub fn bucket_dir(&self) -> PathBuf {
        self.dir.path().join("data").join(BUCKET)
    }

    /// kill -9: no chance to finish anything in flight.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port and data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("s3s-fs.log")
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).expect("server log");
        let child = Command::new(&self.binary)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(self.dir.path().join("data"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.binary.display()));
        self.child = Some(child);
        self.wait_until_listening();
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port);
        loop {
            if TcpStream::connect_timeout(&addr.into(), Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("s3s-fs exited with {status}: {}", std::fs::read_to_string(self.log_path()).unwrap_or_default());
            }
            assert!(Instant::now() < deadline, "s3s-fs did not listen on {addr} within 15 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every object under `dir` of the bucket, as (key relative to the bucket, bytes).
    pub fn objects_under(&self, dir: &Path) -> Vec<(String, Vec<u8>)> {
        let root = self.bucket_dir();
        let mut out = Vec::new();
        let mut stack = vec![root.join(dir)];
        while let Some(at) = stack.pop() {
            let Ok(listing) = std::fs::read_dir(&at) else { continue };
            for item in listing.flatten() {
                let path = item.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Ok(bytes) = std::fs::read(&path) {
                    let key = path.strip_prefix(&root).unwrap_or(&path).to_string_lossy().into_owned();
                    out.push((key, bytes));
                }
            }
        }
        out.sort();
        out
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}
