//! Runs the scripts of tests/compat/ that drive real SDKs (centrifuge-js under Node,
//! centrifuge-python from the compatibility venv) against nodes started by a test.

use crate::NodeProcess;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// tests/compat/.
pub fn compat_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("compat")
}

/// A real SDK.
#[derive(Debug, Clone, Copy)]
pub enum Sdk {
    /// centrifuge-js (npm) under Node.
    Js,
    /// centrifuge-python.
    Python,
}

impl Sdk {
    /// The program running this SDK's scripts, after checking that the SDK is installed.
    pub fn program(self) -> String {
        let dir = compat_dir();
        match self {
            Sdk::Js => {
                assert!(
                    dir.join("node_modules/centrifuge").exists(),
                    "centrifuge (npm) is not installed: run tests/compat/setup.sh"
                );
                "node".into()
            }
            Sdk::Python => {
                let python = dir.join(".venv/bin/python");
                assert!(
                    python.exists(),
                    "centrifuge-python is not installed: run tests/compat/setup.sh"
                );
                python.to_string_lossy().into_owned()
            }
        }
    }
}

/// Runs `script` of tests/compat/ with `sdk`'s program and `env`, within 60 s; panics
/// with its output and the logs of `nodes` unless it exits 0 having passed a step.
pub async fn run_script(sdk: Sdk, script: &str, env: &[(&str, String)], nodes: &[&NodeProcess]) {
    let program = sdk.program();
    let dir = compat_dir();
    let mut cmd = tokio::process::Command::new(&program);
    cmd.arg(dir.join(script))
        .current_dir(&dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
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
        "{script} failed ({}):\n{stdout}\n{stderr}\nnode logs:\n{}",
        out.status,
        nodes
            .iter()
            .map(|n| n.log_text())
            .collect::<Vec<_>>()
            .join("\n---\n")
    );
    assert!(
        stdout.contains("PASS"),
        "{script} printed no step: {stdout}"
    );
}
