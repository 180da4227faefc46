//! PostgreSQL: a throwaway server on loopback, stopped on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::free_port;

fn find_pg_bin() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                // Debian links initdb into /usr/local/bin or /usr/bin; the `postgres` server it
                // needs lives beside the real file.
                let real = std::fs::canonicalize(dir.join("initdb")).ok()?;
                return real.parent().map(Path::to_path_buf);
            }
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").is_file() && b.join("pg_ctl").is_file())
        .collect();
    found.sort();
    found.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[derive(Debug)]
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    as_postgres: bool,
    pub port: u16,
}

impl PgServer {
    fn cmd(&self, program: &str) -> Command {
        pg_cmd(&self.bin, self.as_postgres, program)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// initdb, start on 127.0.0.1 with the socket in the temp dir. Panics (test failure) when the
    /// PostgreSQL binaries are missing.
    pub fn start() -> PgServer {
        let bin = find_pg_bin().unwrap_or_else(|| {
            panic!(
                "PostgreSQL server binaries (initdb, pg_ctl) were not found on PATH or in \
                 /usr/lib/postgresql/*/bin: run `scripts/setup.sh --test` to install them"
            )
        });
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("gateway-pg-")
            .tempdir()
            .expect("temp dir for PostgreSQL");
        if as_postgres {
            let ok = Command::new("chown")
                .arg("postgres:")
                .arg(dir.path())
                .status()
                .expect("run chown");
            assert!(
                ok.success(),
                "cannot chown the PostgreSQL dir to user postgres"
            );
        }
        let port = free_port();
        let mut pg = PgServer {
            dir,
            bin,
            as_postgres,
            port,
        };
        run_ok(
            "initdb",
            pg.cmd("initdb").arg("-D").arg(pg.data()).args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ]),
        );
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100",
            pg.dir.path().display()
        );
        let out = pg
            .cmd("pg_ctl")
            .arg("-D")
            .arg(pg.data())
            .arg("-o")
            .arg(opts)
            .arg("-l")
            .arg(pg.dir.path().join("postgres.log"))
            .args(["-w", "-t", "60", "start"])
            .output()
            .expect("run pg_ctl start");
        if !out.status.success() {
            let log =
                std::fs::read_to_string(pg.dir.path().join("postgres.log")).unwrap_or_default();
            pg.port = 0;
            panic!(
                "pg_ctl start failed: {}{}\n{log}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        pg
    }

    /// Restart the server (fast shutdown: open connections are cut, as in a failover). The new
    /// server logs to the same file as the first: without `-l` it would keep pg_ctl's stdout open
    /// and reading pg_ctl's output would wait for the server to exit.
    pub fn restart(&self) {
        run_ok(
            "pg_ctl restart",
            self.cmd("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .arg("-l")
                .arg(self.dir.path().join("postgres.log"))
                .args(["-m", "fast", "-w", "-t", "60", "restart"]),
        );
    }

    /// Create a database and return its URL.
    pub async fn create_db(&self, name: &str) -> String {
        let admin = format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        );
        let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .expect("connect to the test PostgreSQL server");
        let conn = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name} failed: {e}"));
        drop(client);
        let _ = conn.await;
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

fn pg_cmd(bin: &Path, as_postgres: bool, program: &str) -> Command {
    let exe = bin.join(program);
    if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(exe);
        c.current_dir("/");
        c
    } else {
        Command::new(exe)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.port == 0 {
            return;
        }
        let _ = self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// Runs `cmd` (`what` in messages) to its end; panics with its output unless it succeeded.
fn run_ok(what: &str, cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
