//! The timeline page (`--html`) in a real headless browser, Debian's
//! `chromium` (or the one `SLUICE_CHROMIUM` names): the page of a failing
//! planted-bug run and of a cluster run must render (a screenshot of some
//! size), run its script without an error, and draw as many fault bands and
//! violation marks as the history holds.
//!
//! `scripts/test.sh` installs chromium. Without it the test prints why it
//! did nothing and passes, unless `CI=true`, where a missing browser fails
//! it: CI must not pass by skipping.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use sluice_sim::history::Op;
use sluice_sim::html;
use sluice_sim::nemesis::FaultEvent;
use sluice_sim::timeline::Timeline;
use sluice_sim::world::{self, RunOptions, RunReport};

/// The bound on each browser run (coreutils' `timeout`): a browser that
/// hangs fails the test instead of holding it.
const BROWSER_TIMEOUT_S: &str = "120";

/// The browser's command, or `None` (with the reason printed) if there is
/// none and this is not CI.
fn browser() -> Option<String> {
    let command = std::env::var("SLUICE_CHROMIUM").unwrap_or_else(|_| "chromium".to_owned());
    match Command::new(&command).arg("--version").output() {
        Ok(output) if output.status.success() => Some(command),
        outcome => {
            let why = format!(
                "{command} --version did not run ({:?}): install chromium \
                 (scripts/test.sh does) or name it in SLUICE_CHROMIUM",
                outcome.map(|o| o.status)
            );
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true and no browser: {why}"
            );
            eprintln!("SKIPPED the timeline page's browser test: {why}");
            None
        }
    }
}

/// Runs the headless browser on `page` with `args`, each run with a
/// profile directory of its own (two tests' browsers must not share one).
fn run_browser(browser: &str, page: &Path, profile: &Path, args: &[String]) -> Output {
    let output = Command::new("timeout")
        .args(["--kill-after=10", BROWSER_TIMEOUT_S, browser])
        // Root in a container has no sandbox to drop into.
        .args(["--headless", "--no-sandbox", "--disable-gpu"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("timeout (coreutils) runs");
    assert!(
        output.status.success(),
        "{browser} {args:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// How many times `needle` occurs in `haystack`.
fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// Writes `report`'s page as `name`.html, renders it, and checks what the
/// browser drew against the history.
fn check_page(browser: &str, report: &RunReport, name: &str) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("timeline-pages");
    // Test output, outside any simulation.
    #[allow(clippy::disallowed_methods)]
    std::fs::create_dir_all(&dir).expect("the test output directory can be made");
    let page = dir.join(format!("{name}.html"));
    html::write_html(report, &page).expect("the page can be written");

    let shot = dir.join(format!("{name}.png"));
    run_browser(
        browser,
        &page,
        &dir.join(format!("{name}-profile-shot")),
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1600,1000".to_owned(),
        ],
    );
    // Test output, outside any simulation.
    #[allow(clippy::disallowed_methods)]
    let png_bytes = std::fs::metadata(&shot)
        .expect("the browser wrote the screenshot")
        .len();
    // A blank 1600×1000 page compresses to a few kilobytes; lanes, bands
    // and ticks take tens.
    assert!(png_bytes > 20_000, "{}: {png_bytes} bytes", shot.display());

    let dom = run_browser(
        browser,
        &page,
        &dir.join(format!("{name}-profile-dom")),
        // Virtual time: the page has no timers, and this bounds nothing on
        // the wall clock; it only lets the load finish before the dump.
        &[
            "--dump-dom".to_owned(),
            "--virtual-time-budget=5000".to_owned(),
        ],
    );
    let dom = String::from_utf8_lossy(&dom.stdout);
    let body = dom
        .split("<body")
        .nth(1)
        .and_then(|rest| rest.split('>').next())
        .unwrap_or_default();
    assert!(!body.contains("data-error"), "{name}: script error: {body}");
    assert!(
        body.contains(r#"data-ready="yes""#),
        "{name}: not drawn: {body}"
    );

    let injected = report
        .history
        .events()
        .iter()
        .filter(|event| matches!(event.op, Op::Fault(FaultEvent::Injected { .. })))
        .count();
    let timeline = Timeline::of(report);
    assert_eq!(timeline.bands.len(), injected, "{name}: a band per fault");
    assert_eq!(count(&dom, r#"class="fault-band "#), injected, "{name}");
    assert!(
        body.contains(&format!(r#"data-bands="{injected}""#)),
        "{body}"
    );
    let violations = report.check.violations.len();
    assert_eq!(count(&dom, r#"class="violation""#), violations, "{name}");
    assert!(body.contains(&format!(r#"data-violations="{violations}""#)));
    assert!(body.contains(&format!(r#"data-lanes="{}""#, timeline.lanes.len())));
}

#[test]
fn the_timeline_page_renders_in_a_browser_with_every_fault_and_violation() {
    let Some(browser) = browser() else {
        return;
    };
    // Short fault phases: the test runs in the debug profile.
    let planted = RunOptions {
        duration: Duration::from_secs(3),
        plant: Some("double-deliver".to_owned()),
        ..RunOptions::new(1)
    };
    let report = world::run(&planted).unwrap();
    assert!(!report.passed(), "the planted bug is caught on this seed");
    check_page(&browser, &report, "double-deliver-0x1");

    let cluster = RunOptions {
        duration: Duration::from_secs(3),
        nodes: 3,
        ..RunOptions::new(1)
    };
    let report = world::run(&cluster).unwrap();
    assert!(
        report
            .history
            .events()
            .iter()
            .any(|event| matches!(event.op, Op::LeaderObserved { .. })),
        "a cluster's history has its leaders"
    );
    check_page(&browser, &report, "cluster-3nodes-0x1");
}
