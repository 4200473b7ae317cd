//! Headless Chromium for tests of pages: the DOM after the page's scripts ran, or a
//! screenshot, and a way to pick table rows out of the dumped DOM.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// Runs headless Chromium with `args` against `url`; returns stdout.
pub async fn chromium(profile: &Path, args: &[&str], url: &str) -> String {
    let mut cmd = Command::new("chromium");
    cmd.args([
        "--headless",
        "--disable-gpu",
        "--no-first-run",
        "--disable-dev-shm-usage",
    ])
    .args(["--disable-extensions", "--hide-scrollbars", "--mute-audio"])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .arg(url)
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .kill_on_drop(true);
    // Chromium's sandbox refuses to run as root.
    if is_root() {
        cmd.arg("--no-sandbox");
    }
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("chromium did not finish in 30s")
        .expect("chromium could not start: is it installed? (scripts/test.sh installs it)");
    assert!(out.status.success(), "chromium failed: {:?}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The `<tr …>…</tr>` elements of `dom` whose opening tag has `class="{class}"`.
pub fn rows<'a>(dom: &'a str, class: &str) -> Vec<&'a str> {
    let open = format!("<tr class=\"{class}");
    dom.match_indices(&open)
        .map(|(i, _)| {
            let rest = &dom[i..];
            &rest[..rest.find("</tr>").map_or(rest.len(), |e| e + 5)]
        })
        .collect()
}
