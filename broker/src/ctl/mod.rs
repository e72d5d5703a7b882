//! `sluice ctl`: a command-line client of the management API
//! (`docs/management.md`). It prints tables with aligned columns, or with
//! `--json` the API's JSON as it is, and ends with an exit code scripts
//! can use ([`Exit`]).
//!
//! The URL and credentials come from flags, else the environment
//! (`SLUICE_URL`, `SLUICE_USER`, `SLUICE_PASSWORD`), else a TOML file
//! (`--ctl-config FILE`, or `~/.config/sluice/ctl.toml` if it exists).

mod table;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use base64ct::{Base64, Encoding};
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo as HyperIo;
use serde::Deserialize;
use serde_json::Value as Json;

use crate::io::{Io, TokioIo};

/// The URL used when no flag, variable or file names one.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// How long a request may take, connecting included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// The most bytes of an answer read.
const ANSWER_BYTES_MAX: usize = 64 << 20;

/// How `sluice ctl` ends. Usage errors end with clap's 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: done.
    Ok = 0,
    /// 1: the broker answered with an error of its own (5xx), refused the
    /// request as malformed or conflicting (400, 409, 413), or answered
    /// what is not understood.
    Failed = 1,
    /// 2: bad flags, configuration or URL (as clap's usage errors).
    Usage = 2,
    /// 3: the broker cannot be reached (no connection, no answer in time).
    Unreachable = 3,
    /// 4: refused: no or wrong credentials (401), or not permitted (403).
    Refused = 4,
    /// 5: no such queue or connection (404).
    NotFound = 5,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// `sluice ctl`'s flags and command.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The broker's HTTP listener [env: SLUICE_URL] [default: http://127.0.0.1:8080]
    #[arg(long, global = true, value_name = "URL")]
    url: Option<String>,

    /// The `[[users]]` account to ask as [env: SLUICE_USER]
    #[arg(long, global = true, value_name = "USER")]
    user: Option<String>,

    /// Its password (visible to other local users in the process list:
    /// prefer --password-file or SLUICE_PASSWORD) [env: SLUICE_PASSWORD]
    #[arg(long, global = true, value_name = "PASSWORD")]
    password: Option<String>,

    /// A file whose first line is the password
    #[arg(long, global = true, value_name = "FILE")]
    password_file: Option<PathBuf>,

    /// A TOML file with `url`, `user`, `password` or `password_file`
    /// [default: ~/.config/sluice/ctl.toml, if it exists]
    #[arg(long, global = true, value_name = "FILE")]
    ctl_config: Option<PathBuf>,

    /// Print the API's JSON as it is, for scripts
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Debug, Subcommand)]
enum CtlCommand {
    /// List the queues (those the user may monitor)
    Queues,
    /// One queue
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// Drop a queue's ready messages
    Purge {
        /// The queue
        name: String,
    },
    /// Delete a queue, its messages, and detach its consumers
    Delete {
        /// The queue
        name: String,
        /// Do not ask for confirmation (required when not on a terminal)
        #[arg(long)]
        yes: bool,
    },
    /// Move ready messages, oldest first, to another queue of the same group
    Move {
        /// The queue they leave
        name: String,
        /// The queue they join
        #[arg(long, value_name = "QUEUE")]
        to: String,
        /// At most this many [default: all]
        #[arg(long, value_name = "N")]
        max: Option<u64>,
    },
    /// List the AMQP connections of the node asked
    Connections,
    /// Close an AMQP connection of the node asked
    Close {
        /// The connection's id, as `connections` lists it
        id: u64,
    },
    /// The cluster
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Whether the broker answers (`/health`)
    Health,
}

#[derive(Debug, Subcommand)]
enum QueueCommand {
    /// A queue's counters, group and leader
    Show {
        /// The queue
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// This node, the members and each group's leader
    Status,
}

/// The file of `--ctl-config`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CtlFile {
    url: Option<String>,
    user: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
}

/// Where to ask, and as whom.
#[derive(Debug)]
struct Target {
    /// `host:port`.
    authority: String,
    /// The URL's path, without its trailing slash.
    prefix: String,
    /// Basic credentials.
    login: Option<(String, String)>,
}

/// What went wrong, and how to end.
#[derive(Debug)]
struct Failure {
    exit: Exit,
    message: String,
}

impl Failure {
    fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self {
            exit,
            message: message.into(),
        }
    }
}

/// Runs `sluice ctl` on tokio, printing to standard output (errors to
/// standard error), and says how to exit.
pub fn main(args: CtlArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("sluice ctl: cannot start the tokio runtime: {error}");
            return Exit::Failed.into();
        }
    };
    match runtime.block_on(run(args)) {
        Ok(text) => {
            print!("{text}");
            Exit::Ok.into()
        }
        Err(failure) => {
            eprintln!("sluice ctl: {}", failure.message);
            failure.exit.into()
        }
    }
}

/// The text to print.
async fn run(args: CtlArgs) -> Result<String, Failure> {
    let io = TokioIo;
    let target = target(&io, &args).await?;
    let json = args.json;
    let queue_path = |name: &str| format!("/api/queues/{}", percent_encode(name));
    let (method, path, body) = match &args.command {
        CtlCommand::Queues => (Method::GET, "/api/queues".to_owned(), None),
        CtlCommand::Queue {
            command: QueueCommand::Show { name },
        } => (Method::GET, queue_path(name), None),
        CtlCommand::Purge { name } => (Method::POST, queue_path(name) + "/purge", None),
        CtlCommand::Delete { name, yes } => {
            confirm_deletion(name, *yes)?;
            (Method::DELETE, queue_path(name), None)
        }
        CtlCommand::Move { name, to, max } => {
            let body = serde_json::json!({ "to": to, "max": max });
            (Method::POST, queue_path(name) + "/move", Some(body))
        }
        CtlCommand::Connections => (Method::GET, "/api/connections".to_owned(), None),
        CtlCommand::Close { id } => (Method::DELETE, format!("/api/connections/{id}"), None),
        CtlCommand::Cluster {
            command: ClusterCommand::Status,
        } => (Method::GET, "/api/cluster".to_owned(), None),
        CtlCommand::Health => (Method::GET, "/health".to_owned(), None),
    };
    let (answer, raw) = ask(&io, &target, method, &path, body).await?;
    if json {
        let mut text = String::from_utf8_lossy(&raw).into_owned();
        text.push('\n');
        return Ok(text);
    }
    table::render(&args.command, &answer)
        .ok_or_else(|| Failure::new(Exit::Failed, format!("unexpected answer: {answer}")))
}

/// A deletion needs `--yes`, or a "y" typed on a terminal.
fn confirm_deletion(name: &str, yes: bool) -> Result<(), Failure> {
    if yes {
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(Failure::new(
            Exit::Usage,
            "deleting a queue needs --yes when not on a terminal",
        ));
    }
    eprint!("Delete queue {name:?}, its messages, and detach its consumers? [y/N] ");
    let mut line = String::new();
    let read = stdin.read_line(&mut line);
    if read.is_ok() && line.trim().eq_ignore_ascii_case("y") {
        return Ok(());
    }
    Err(Failure::new(Exit::Usage, "not deleted"))
}

/// The URL and credentials: each from the flag, else the environment, else
/// the file.
async fn target(io: &TokioIo, args: &CtlArgs) -> Result<Target, Failure> {
    let file = ctl_file(io, args.ctl_config.as_ref()).await?;
    let env = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
    let url = (args.url.clone())
        .or_else(|| env("SLUICE_URL"))
        .or(file.url)
        .unwrap_or_else(|| DEFAULT_URL.to_owned());
    let user = (args.user.clone())
        .or_else(|| env("SLUICE_USER"))
        .or(file.user);
    let password = match (&args.password, &args.password_file) {
        (Some(password), _) => Some(password.clone()),
        (None, Some(path)) => Some(read_password(io, path).await?),
        (None, None) => match (env("SLUICE_PASSWORD"), file.password, file.password_file) {
            (Some(password), _, _) | (None, Some(password), _) => Some(password),
            (None, None, Some(path)) => Some(read_password(io, &path).await?),
            (None, None, None) => None,
        },
    };
    let (authority, prefix) = parse_url(&url)?;
    let login = match (user, password) {
        (Some(user), password) => Some((user, password.unwrap_or_default())),
        (None, Some(_)) => return Err(Failure::new(Exit::Usage, "a password without a user")),
        (None, None) => None,
    };
    Ok(Target {
        authority,
        prefix,
        login,
    })
}

/// The config file named, or the default one if it exists.
async fn ctl_file(io: &TokioIo, named: Option<&PathBuf>) -> Result<CtlFile, Failure> {
    let (path, required) = match named {
        Some(path) => (path.clone(), true),
        None => match std::env::var_os("HOME") {
            Some(home) => (PathBuf::from(home).join(".config/sluice/ctl.toml"), false),
            None => return Ok(CtlFile::default()),
        },
    };
    let bytes = match io.read_file(&path).await {
        Ok(bytes) => bytes,
        Err(error) if required || error.kind() != std::io::ErrorKind::NotFound => {
            let message = format!("cannot read {}: {error}", path.display());
            return Err(Failure::new(Exit::Usage, message));
        }
        Err(_) => return Ok(CtlFile::default()),
    };
    let text = String::from_utf8(bytes).unwrap_or_default();
    toml::from_str(&text)
        .map_err(|error| Failure::new(Exit::Usage, format!("{}: {error}", path.display())))
}

/// The first line of `path`.
async fn read_password(io: &TokioIo, path: &Path) -> Result<String, Failure> {
    let bytes = io.read_file(path).await.map_err(|error| {
        Failure::new(
            Exit::Usage,
            format!("cannot read {}: {error}", path.display()),
        )
    })?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Failure::new(Exit::Usage, format!("{} is not UTF-8", path.display())))?;
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

/// `http://HOST:PORT[/PREFIX]` as its authority and path prefix.
fn parse_url(url: &str) -> Result<(String, String), Failure> {
    let Some(rest) = url.strip_prefix("http://") else {
        let message = format!(
            "{url:?}: only http:// URLs are served (put a TLS-terminating proxy's plain side here)"
        );
        return Err(Failure::new(Exit::Usage, message));
    };
    let (authority, prefix) = match rest.split_once('/') {
        Some((authority, path)) => (authority, format!("/{}", path.trim_end_matches('/'))),
        None => (rest, String::new()),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(Failure::new(
            Exit::Usage,
            format!("{url:?}: expected http://HOST:PORT (credentials go in --user)"),
        ));
    }
    let authority = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, prefix.trim_end_matches('/').to_owned()))
}

/// `name` percent-encoded as one path segment.
fn percent_encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Sends one request and reads its JSON answer, parsed and as sent, or
/// says how it failed.
async fn ask(
    io: &TokioIo,
    target: &Target,
    method: Method,
    path: &str,
    body: Option<Json>,
) -> Result<(Json, Bytes), Failure> {
    let exchange = async {
        let unreachable = |error: &dyn std::fmt::Display| {
            let message = format!("cannot reach {}: {error}", target.authority);
            Failure::new(Exit::Unreachable, message)
        };
        let stream = io
            .connect(&target.authority)
            .await
            .map_err(|e| unreachable(&e))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(HyperIo::new(stream))
            .await
            .map_err(|e| unreachable(&e))?;
        io.spawn(async move {
            // Ends when the answer is read and the sender dropped.
            let _ = connection.await;
        });
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", target.prefix))
            .header(hyper::header::HOST, &target.authority);
        if let Some((user, password)) = &target.login {
            let encoded = Base64::encode_string(format!("{user}:{password}").as_bytes());
            request = request.header(hyper::header::AUTHORIZATION, format!("Basic {encoded}"));
        }
        let body = match body {
            Some(body) => {
                request = request.header(hyper::header::CONTENT_TYPE, "application/json");
                Bytes::from(body.to_string())
            }
            None => Bytes::new(),
        };
        let request = request
            .body(Full::new(body))
            .map_err(|error| Failure::new(Exit::Usage, format!("bad request: {error}")))?;
        let answer = sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(&e))?;
        let status = answer.status();
        let bytes = http_body_util::Limited::new(answer.into_body(), ANSWER_BYTES_MAX)
            .collect()
            .await
            .map_err(|e| unreachable(&e.to_string()))?
            .to_bytes();
        Ok::<_, Failure>((status, bytes))
    };
    let (status, bytes) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| {
            let message = format!(
                "{} did not answer within {REQUEST_TIMEOUT:?}",
                target.authority
            );
            Failure::new(Exit::Unreachable, message)
        })??;
    let json: Option<Json> = serde_json::from_slice(&bytes).ok();
    if status.is_success() {
        let json = json.ok_or_else(|| Failure::new(Exit::Failed, "the answer is not JSON"))?;
        return Ok((json, bytes));
    }
    let reason = json
        .as_ref()
        .and_then(|json| json["error"].as_str().or(json["reason"].as_str()))
        .map_or_else(
            || String::from_utf8_lossy(&bytes).into_owned(),
            str::to_owned,
        );
    let exit = match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Exit::Refused,
        StatusCode::NOT_FOUND => Exit::NotFound,
        _ => Exit::Failed,
    };
    Err(Failure::new(exit, format!("{status}: {reason}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed() {
        let parsed = |url: &str| parse_url(url).ok();
        assert_eq!(
            parsed("http://127.0.0.1:8080"),
            Some(("127.0.0.1:8080".to_owned(), String::new()))
        );
        assert_eq!(
            parsed("http://broker/sluice/"),
            Some(("broker:80".to_owned(), "/sluice".to_owned()))
        );
        assert!(parsed("https://broker:8443").is_none());
        assert!(parsed("http://alice:secret@broker:8080").is_none());
        assert!(parsed("broker:8080").is_none());
    }

    #[test]
    fn names_are_percent_encoded() {
        assert_eq!(percent_encode("orders.eu"), "orders.eu");
        assert_eq!(percent_encode("a/b c"), "a%2Fb%20c");
        assert_eq!(percent_encode("€"), "%E2%82%AC");
    }
}
