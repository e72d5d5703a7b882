//! The timeline page (`--html FILE`): one self-contained HTML file that
//! draws a run's [`Timeline`] with inline CSS, SVG and JavaScript, and
//! loads nothing else.
//!
//! The page carries the model as JSON and the text of every history event;
//! its script draws the lanes, bands and marks, and, for a run of ten
//! thousand events, aggregates the marks of each lane into one tick per
//! few pixels at the current zoom (hover or click a tick for its events).
//! Once it has drawn everything without an exception, it sets the body's
//! `data-ready` to `yes` and `data-bands`/`data-violations` to what it
//! drew; an exception goes into the body's `data-error` and onto the page.
//! The browser test (`sim/tests/html.rs`) reads them back.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::SimError;
use crate::replay::format_hash;
use crate::timeline::Timeline;
use crate::world::RunReport;

const STYLE: &str = include_str!("html/page.css");
const SCRIPT: &str = include_str!("html/page.js");

/// What the page's script reads.
#[derive(Serialize)]
struct PageData<'a> {
    timeline: &'a Timeline,
    /// Every history event as the trace shows it (`[1.234s] …`), by index.
    texts: Vec<String>,
}

/// Writes the timeline page of `report` to `path`.
///
/// # Errors
///
/// [`SimError::HtmlIo`] if the file cannot be written.
pub fn write_html(report: &RunReport, path: &Path) -> Result<(), SimError> {
    // Output of the CLI, written after the simulation ended.
    #[allow(clippy::disallowed_methods)]
    std::fs::write(path, render(report)).map_err(|source| SimError::HtmlIo {
        path: path.to_owned(),
        source,
    })
}

/// The timeline page of `report`.
pub fn render(report: &RunReport) -> String {
    let timeline = Timeline::of(report);
    let data = PageData {
        timeline: &timeline,
        texts: report
            .history
            .events()
            .iter()
            .map(ToString::to_string)
            .collect(),
    };
    let json = serde_json::to_string(&data)
        .expect("plain structs of numbers and strings always serialise");
    let title = format!(
        "sluice-sim seed {:#x}: {}",
        report.options.seed,
        verdict(report)
    );
    let mut page = String::with_capacity(json.len() + SCRIPT.len() + 16 * 1024);
    page.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    let _ = writeln!(page, "<title>{}</title>", escape(&title));
    let _ = writeln!(page, "<style>\n{STYLE}</style>\n</head>\n<body>");
    // First, so that it sees the errors of everything after it.
    page.push_str(
        "<script>window.onerror = function (message, source, line) {\
         var text = String(message) + ' (line ' + line + ')';\
         document.body.setAttribute('data-error', text);\
         var box = document.getElementById('errors');\
         if (box) { box.hidden = false; box.textContent += text + '\\n'; }\
         };</script>\n",
    );
    page.push_str(&header(report, &title));
    page.push_str(BODY);
    let _ = writeln!(
        page,
        "<script type=\"application/json\" id=\"timeline-data\">{}</script>",
        script_safe(&json)
    );
    let _ = writeln!(page, "<script>\n{SCRIPT}</script>\n</body>\n</html>");
    page
}

/// The page's fixed parts between the header and the data.
const BODY: &str = r#"<pre id="errors" hidden></pre>
<div id="controls">
  <button id="zoom-out" title="zoom out (-)">&minus;</button>
  <button id="zoom-in" title="zoom in (+)">+</button>
  <button id="zoom-fit" title="fit the run (0)">fit</button>
  <span id="zoom-level"></span>
  <span id="legend"></span>
</div>
<div id="chart">
  <svg id="labels" xmlns="http://www.w3.org/2000/svg"></svg>
  <div id="scroller"><svg id="lanes" xmlns="http://www.w3.org/2000/svg"></svg></div>
</div>
<div id="tip" hidden></div>
<section id="detail"><p class="hint">Click a violation, a fault band or a tick for its events.</p></section>
"#;

/// "PASS", or "FAIL" with the count of violations.
fn verdict(report: &RunReport) -> String {
    if report.passed() {
        "PASS".to_owned()
    } else {
        format!(
            "FAIL ({} violation(s){})",
            report.check.stats.violations_total,
            report.check.rules_broken()
        )
    }
}

/// The page's header: the options, the verdict and how to run it again.
fn header(report: &RunReport, title: &str) -> String {
    let options = &report.options;
    let stats = &report.check.stats;
    let checked: Vec<&str> = stats.checked.iter().map(|rule| rule.name()).collect();
    let rows = [
        ("seed", format!("{:#x}", options.seed)),
        ("profile", options.profile.clone()),
        ("nodes", options.nodes.to_string()),
        ("fault phase", format!("{:?}", options.duration)),
        ("faults", options.faults.to_string()),
        (
            "planted bug",
            options.plant.clone().unwrap_or_else(|| "none".to_owned()),
        ),
        (
            "simulated",
            format!("{:.3}s", report.simulated.as_secs_f64()),
        ),
        ("history events", report.history.events().len().to_string()),
        (
            "messages",
            format!(
                "{} sent, {} accepted, {} consumed, {} redeliveries, {} duplicates",
                stats.messages_sent,
                stats.messages_accepted,
                stats.messages_consumed,
                stats.redeliveries,
                stats.duplicates
            ),
        ),
        ("rules checked", checked.join(", ")),
        (
            "violations marked",
            // The checker keeps only the first of many.
            format!(
                "{} of {}",
                report.check.violations.len(),
                stats.violations_total
            ),
        ),
        ("trace hash", format_hash(report.trace.hash())),
    ];
    let class = if report.passed() { "pass" } else { "fail" };
    let mut html = String::new();
    let _ = writeln!(
        html,
        "<header>\n<h1 class=\"{class}\">{}</h1>",
        escape(title)
    );
    html.push_str("<table id=\"options\">\n");
    for (name, value) in rows {
        let _ = writeln!(
            html,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(name),
            escape(&value)
        );
    }
    let _ = writeln!(
        html,
        "</table>\n<p>Run it again: <code id=\"command\">{}</code></p>\n</header>",
        escape(&options.command())
    );
    html
}

/// `text` made safe as HTML text or an attribute's value.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// JSON made safe inside a `<script>` element: no `</script>` or `<!--`
/// can appear in it. `<`, `>` and `&` only occur inside JSON strings,
/// where their `\u` escapes mean the same.
fn script_safe(json: &str) -> String {
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(
            script_safe(r#"{"t":"</script><!--&"}"#),
            r#"{"t":"\u003c/script\u003e\u003c!--\u0026"}"#
        );
    }
}
