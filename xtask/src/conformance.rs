//! `cargo xtask test`'s API conformance step: the sensor's API (its router and listener
//! over a real store, `sensor/examples/api_fixture.rs`) against its own `OpenAPI` document,
//! with schemathesis (PyPI): generated and mutated requests with the admin token, and the
//! same without any token. No 5xx, every answer as documented, bad input refused.
use std::{
    io::{BufRead, BufReader},
    process::{Child, Stdio},
};

use anyhow::{bail, Context, Result};

use crate::util::{self, BuildEnv};

const READ_TOKEN: &str = "conformance-read";
const ADMIN_TOKEN: &str = "conformance-admin";

/// The fixture process and its store, ended and removed on drop.
struct Fixture {
    child: Child,
    dir: std::path::PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Only the process this task started, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn run(env: &BuildEnv) -> Result<()> {
    util::run_status(
        util::cargo(env).args(["build", "-p", "podcap-sensor", "--example", "api_fixture"]),
        "cargo build --example api_fixture",
    )?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let dir = std::env::temp_dir().join(format!("podcap-api-fixture-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let child = util::command(util::target_dir().join("debug/examples/api_fixture"))
        .arg(&dir)
        .arg(port.to_string())
        .args([READ_TOKEN, ADMIN_TOKEN])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the API fixture")?;
    let mut fixture = Fixture { child, dir };
    let mut line = String::new();
    if let Some(stdout) = fixture.child.stdout.take() {
        BufReader::new(stdout).read_line(&mut line)?;
    }
    if line.trim() != "listening" {
        bail!("the API fixture did not start");
    }
    let schema = format!("http://127.0.0.1:{port}/api/v1/openapi.json");
    let schemathesis = |extra: &[&str], checks: &str, what: &str| {
        util::run_status(
            util::command("python3")
                .args(["-m", "schemathesis.cli", "run", &schema, "--checks", checks])
                // A never-ending stream is no request-response pair to check; /readyz answers
                // 503 by design once a generated PATCH disabled recording (its rules are
                // tested in sensor/tests/api.rs).
                .args(["--exclude-path", "/api/v1/live", "--exclude-path", "/readyz"])
                .args(["--max-examples", "25", "--seed", "42", "--workers", "1"])
                .args([
                    "--request-timeout",
                    "15",
                    "--no-color",
                    "--generation-database",
                    "none",
                ])
                .args(extra),
            what,
        )
    };
    // Without a token first: it can change nothing the second run then meets.
    schemathesis(
        &[],
        "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        "schemathesis (no token)",
    )?;
    let admin = format!("Authorization: Bearer {ADMIN_TOKEN}");
    schemathesis(
        &["-H", &admin],
        "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,negative_data_rejection,ignored_auth",
        "schemathesis (admin token)",
    )?;
    drop(fixture);
    Ok(())
}
