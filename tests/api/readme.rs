//! The README's quickstart, run exactly as written (so it cannot rot): the
//! first `sh` block under "## Quickstart", in a fresh directory, with
//! `cargo run --release --` standing for the tessera binary this test
//! suite built (a shim named `cargo` on `PATH`; building a release binary
//! inside a test would cost minutes and prove nothing more).

use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn quickstart_block() -> String {
    let readme = include_str!("../../README.md");
    let section = readme
        .split_once("\n## Quickstart\n")
        .expect("README has a Quickstart section")
        .1;
    let block = section
        .split_once("```sh\n")
        .expect("the Quickstart has a sh block")
        .1;
    block
        .split_once("\n```")
        .expect("the block is closed")
        .0
        .to_owned()
}

#[test]
fn the_readme_quickstart_works_as_written() {
    for tool in ["curl", "jq", "bash"] {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .unwrap()
            .status
            .success();
        assert!(
            found,
            "the README quickstart needs {tool}; install it (Debian: apt-get install {tool})"
        );
    }
    assert!(
        std::net::TcpListener::bind("127.0.0.1:8080").is_ok(),
        "the README quickstart uses port 8080, which is taken on this machine"
    );
    let block = quickstart_block();
    assert!(block.contains("cargo run --release -- serve &"), "{block}");

    let dir = tempfile::tempdir().unwrap();
    let shims = dir.path().join("shims");
    std::fs::create_dir(&shims).unwrap();
    let shim = shims.join("cargo");
    std::fs::write(
        &shim,
        "#!/bin/sh\n\
         [ \"$1 $2 $3\" = \"run --release --\" ] || { echo \"README may only use 'cargo run --release --'\" >&2; exit 97; }\n\
         shift 3\n\
         exec \"$QUICKSTART_BINARY\" \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();

    let path = format!(
        "{}:{}",
        shims.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new("bash");
    command
        .arg("-euo")
        .arg("pipefail")
        .arg("-c")
        .arg(&block)
        .current_dir(&work)
        .env("PATH", path)
        .env("QUICKSTART_BINARY", env!("CARGO_BIN_EXE_tessera"))
        .env("TESSERA_LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a failure cannot leave the server behind.
        .process_group(0);
    for (key, _) in std::env::vars() {
        if key.starts_with("TESSERA_") && key != "TESSERA_LOG_LEVEL" {
            command.env_remove(key);
        }
    }
    let child = command.spawn().unwrap();
    let pgid = child.id();
    let started = Instant::now();
    let waiter = std::thread::spawn(move || child.wait_with_output().unwrap());
    while !waiter.is_finished() && started.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("kill")
        .arg("--")
        .arg(format!("-{pgid}"))
        .status();
    let output = waiter.join().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the quickstart failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let active = lines
        .iter()
        .position(|l| {
            l.starts_with("{\"active\":true,\"sub\":\"")
                && l.ends_with(",\"aud\":\"https://api.example\"}")
        })
        .unwrap_or_else(|| panic!("no active introspection in:\n{stdout}"));
    assert_eq!(
        lines.last().copied(),
        Some("{\"active\":false}"),
        "{stdout}"
    );
    assert!(active < lines.len() - 1);
    // The user's id was printed, and no secret reached standard output.
    assert!(
        lines.iter().any(|l| uuid::Uuid::parse_str(l).is_ok()),
        "{stdout}"
    );
    assert!(!stdout.contains("client_secret"), "{stdout}");
}
