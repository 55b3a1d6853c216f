//! Compatibility with client libraries nobody here wrote: centrifuge-js (npm, under Node
//! with `ws`) and centrifuge-python, plus the `cent` HTTP API client. The scripts in
//! tests/compat/ connect with a token, subscribe, receive a publication sent through the
//! server API, query presence and history, go offline and recover what they missed, and see
//! join/leave pushes and server pings. Install their dependencies with tests/compat/setup.sh
//! (scripts/test.sh does it).

use ferrocast_tests::NodeProcess;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

fn compat_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("compat")
}

async fn run_script(program: &str, script: &str, node: &NodeProcess) {
    let dir = compat_dir();
    let mut cmd = tokio::process::Command::new(program);
    cmd.arg(dir.join(script))
        .current_dir(&dir)
        .env("COMPAT_WS_URL", node.ws_url())
        .env("COMPAT_API_URL", format!("http://{}/api", node.addr))
        .env("COMPAT_API_KEY", "compat-api-key")
        .env("COMPAT_HMAC_SECRET", "compat-secret")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within 60 s"))
        .unwrap_or_else(|e| {
            panic!("cannot run {program} {script}: {e} (run tests/compat/setup.sh)")
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{script} failed ({}):\n{stdout}\n{stderr}\nnode log:\n{}",
        out.status,
        node.log_text()
    );
    assert!(
        stdout.contains("PASS"),
        "{script} printed no step: {stdout}"
    );
}

#[tokio::test]
async fn centrifuge_js_sdk() {
    let dir = compat_dir();
    assert!(
        dir.join("node_modules/centrifuge").exists(),
        "centrifuge (npm) is not installed: run tests/compat/setup.sh"
    );
    let node = NodeProcess::start_file(&dir.join("ferrocast.toml")).await;
    run_script("node", "js_client.mjs", &node).await;
}

#[tokio::test]
async fn centrifuge_python_sdk_and_cent() {
    let dir = compat_dir();
    let python = dir.join(".venv/bin/python");
    assert!(
        python.exists(),
        "centrifuge-python is not installed: run tests/compat/setup.sh"
    );
    let node = NodeProcess::start_file(&dir.join("ferrocast.toml")).await;
    run_script(python.to_str().unwrap(), "python_client.py", &node).await;
}
