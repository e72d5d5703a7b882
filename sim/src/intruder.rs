//! The brokers' accounts, and the intruder: a client that tries, at random
//! times and under the same faults as everyone, what its user may not do,
//! and logs in with a wrong password, recording each answer
//! ([`Op::Intrusion`]) for rule 23.
//!
//! Every simulated broker has two `[[users]]`, each with a SCRAM-SHA-256
//! credential, and `[[permissions]]`, so that permissions are enforced:
//!
//! - [`SIM_USER`], which every other client logs in as, may send, receive,
//!   browse and manage every address (`**`);
//! - [`INTRUDER_USER`] may only browse `q1`: it may not consume from or
//!   send to either workload queue, nor create anything. Browsing is not
//!   consuming, so a broker that took the one for the other would serve a
//!   receiver on `q1`.
//!
//! What the intruder tries, each on a connection of its own to a broker
//! drawn as any client's: a wrong password for [`SIM_USER`] (one attempt in
//! four); a handshake stalled past the broker's deadline (one in eight of
//! the rest: the protocol header trickled a byte at a time, each gap under
//! the idle timeout, so that only the deadline can end it); or, logged in
//! as itself, one to three of: a consuming receiver on `q0` or `q1`, a
//! sender to either, and a message through the anonymous relay with `to`
//! either. The broker must refuse each (a link refused, the relayed message
//! rejected, the login failed, the stalled connection closed); under faults
//! an attempt may also fail or go unanswered, never be served.

use std::rc::Rc;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use sluice::amqp::engine::{Event, LinkId, SessionId};
use sluice::amqp::types::{
    DeliveryState, Error, Header, Message, Properties, Rejected, Section, Source,
};
use sluice::client::ClientError;
use sluice::config::{Permission, User, UserLimits};
use sluice::sasl::scram::{self, SaltedPassword, ScramCredential, ScramError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::history::{Answer, Attempt, ClientId, ConnId, NodeId, Op, broker_name};
use crate::workload::{
    AMQP_PORT, Phase, Shared, SimClient, client_rng, connect_as, outcome_of, with_timeout,
};

/// The user every workload client logs in as.
pub const SIM_USER: &str = "sim";
/// Its password.
const SIM_PASSWORD: &str = "sim-password";
/// The intruder's own user.
pub const INTRUDER_USER: &str = "intruder";
/// Its password.
const INTRUDER_PASSWORD: &str = "intruder-password";
/// What the intruder tries as [`SIM_USER`]'s password.
const WRONG_PASSWORD: &str = "not-the-password";
/// The queues the intruder may not consume from or send to.
const FORBIDDEN: [&str; 2] = ["q0", "q1"];
/// The queue the intruder may browse.
const BROWSABLE: &str = "q1";
/// The credit the intruder's receivers ask for.
const CREDIT: u32 = 10;
/// The gap before each of the intruder's connections, in milliseconds.
const GAP_MS: std::ops::RangeInclusive<u64> = 50..=1_000;
/// Of the intruder's connections, one in this many tries a wrong password.
const WRONG_PASSWORD_ONE_IN: u32 = 4;
/// Of the intruder's other connections, one in this many stalls its
/// handshake.
const STALL_ONE_IN: u32 = 8;
/// The simulated brokers' handshake deadline (`amqp.handshake_timeout_ms`).
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(2);
/// The gap between the stalling intruder's header bytes: under the
/// brokers' idle timeout (2 s), so that only the handshake deadline ends
/// the connection; eight of them outlast the deadline.
const TRICKLE_GAP: Duration = Duration::from_millis(400);
/// How long the stalling intruder waits for an answer to its whole header.
const ANSWER_WAIT: Duration = Duration::from_secs(1);
/// The header of AMQP's SASL layer, which the stalling intruder trickles.
const SASL_HEADER: [u8; 8] = *b"AMQP\x03\x01\x00\x00";
/// What the client's engine says when the broker's SASL outcome is not
/// `ok` (`amqp::engine`'s handshake).
const SASL_FAILED: &str = "SASL authentication failed";

/// The accounts, and the passwords the clients log in with, salted.
struct Accounts {
    users: Vec<User>,
    permissions: Vec<Permission>,
    sim: SaltedPassword,
    intruder: SaltedPassword,
}

/// The accounts, derived once per process: PBKDF2 at 4096 iterations
/// costs a few milliseconds, which every login would pay again (more
/// than a third of the simulator's time) if clients salted the password
/// themselves, as a client with only the password must.
fn accounts() -> &'static Accounts {
    static ACCOUNTS: OnceLock<Accounts> = OnceLock::new();
    ACCOUNTS.get_or_init(|| {
        let salted = |name: &str, password: &str| {
            let salt = format!("salt of {name}");
            SaltedPassword::derive(
                password.as_bytes(),
                salt.as_bytes(),
                scram::DEFAULT_ITERATIONS,
            )
        };
        let user = |name: &str, password: &str| User {
            name: name.to_owned(),
            password_hash: None,
            scram_sha256: Some(ScramCredential::derive(
                password.as_bytes(),
                format!("salt of {name}").as_bytes(),
                scram::DEFAULT_ITERATIONS,
            )),
            limits: UserLimits::default(),
        };
        let users = vec![
            user(SIM_USER, SIM_PASSWORD),
            user(INTRUDER_USER, INTRUDER_PASSWORD),
        ];
        let permissions = vec![
            Permission {
                user: SIM_USER.to_owned(),
                pattern: "**".to_owned(),
                send: true,
                receive: true,
                browse: true,
                manage: true,
                ..Permission::default()
            },
            Permission {
                user: INTRUDER_USER.to_owned(),
                pattern: BROWSABLE.to_owned(),
                browse: true,
                ..Permission::default()
            },
        ];
        Accounts {
            users,
            permissions,
            sim: salted(SIM_USER, SIM_PASSWORD),
            intruder: salted(INTRUDER_USER, INTRUDER_PASSWORD),
        }
    })
}

/// The brokers' `[[users]]` and `[[permissions]]`.
pub fn users_and_permissions() -> (Vec<User>, Vec<Permission>) {
    let accounts = accounts();
    (accounts.users.clone(), accounts.permissions.clone())
}

/// [`SIM_USER`]'s password, salted for its credential.
pub(crate) fn sim_password() -> SaltedPassword {
    accounts().sim.clone()
}

/// What the intruder tries on a connection logged in as itself.
#[derive(Debug, Clone, Copy)]
enum Trespass {
    Receive(&'static str),
    Send(&'static str),
    Relay(&'static str),
}

impl Trespass {
    fn draw(rng: &mut ChaCha8Rng) -> Self {
        let queue = FORBIDDEN[rng.gen_range(0..FORBIDDEN.len())];
        match rng.gen_range(0..3) {
            0 => Trespass::Receive(queue),
            1 => Trespass::Send(queue),
            _ => Trespass::Relay(queue),
        }
    }

    fn attempt(self) -> Attempt {
        match self {
            Trespass::Receive(queue) => Attempt::Receive(queue.to_owned()),
            Trespass::Send(queue) => Attempt::Send(queue.to_owned()),
            Trespass::Relay(queue) => Attempt::Relay(queue.to_owned()),
        }
    }
}

/// Intruder `n`: until the run is finished, after a random gap, a
/// connection that tries a wrong password or trespasses.
pub async fn intruder(n: u32, seed: u64, shared: Rc<Shared>) -> turmoil::Result {
    let me = ClientId::Intruder(n);
    let mut rng = client_rng(seed, me);
    let mut conns = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(GAP_MS))).await;
        if shared.phase() == Phase::Finished {
            return Ok(());
        }
        conns += 1;
        let conn = ConnId {
            client: me,
            n: conns,
        };
        let node = shared.pick_broker(&mut rng);
        if rng.gen_ratio(1, WRONG_PASSWORD_ONE_IN) {
            wrong_password(&shared, conn, node).await;
        } else if rng.gen_ratio(1, STALL_ONE_IN) {
            let answer = stall_handshake(&shared, conn, node).await;
            record(&shared, conn, node, Attempt::StallHandshake, answer);
        } else {
            let trespasses = (0..rng.gen_range(1..=3))
                .map(|_| Trespass::draw(&mut rng))
                .collect();
            trespass(&shared, conn, node, trespasses).await;
        }
    }
}

fn record(shared: &Shared, conn: ConnId, node: NodeId, attempt: Attempt, answer: Answer) {
    shared.record(Op::Intrusion {
        conn,
        node,
        attempt,
        answer,
    });
}

/// Logs in as [`SIM_USER`] with a wrong password.
async fn wrong_password(shared: &Shared, conn: ConnId, node: NodeId) {
    let sasl = shared.scram(SIM_USER, WRONG_PASSWORD);
    let answer = match connect_as(shared, conn, conn.to_string(), node, sasl).await {
        Ok(mut client) => {
            let what = match with_timeout(client.begin()).await {
                Ok(_) => "a session",
                Err(_) => "an open connection",
            };
            close(client).await;
            Answer::Served(what.to_owned())
        }
        Err(ClientError::Closed(Some(error))) => login_refusal(&error),
        Err(error) => Answer::Failed(error.to_string()),
    };
    record(shared, conn, node, Attempt::WrongPassword, answer);
}

/// Trickles the protocol header past the broker's handshake deadline. A
/// broker that keeps its deadline has closed the connection by then (seen
/// as the end of the stream, or a failed write); one that answers the whole
/// header with its own served a handshake it should have cut off. Nothing
/// at all is a fault's doing (a link or node cut off).
async fn stall_handshake(shared: &Shared, conn: ConnId, node: NodeId) -> Answer {
    let broker = broker_name(node);
    let address = format!("{broker}:{AMQP_PORT}");
    let client = conn.client.to_string();
    let mut stream = match shared.links.connect(&client, &broker, &address).await {
        Ok(stream) => stream,
        Err(error) => return Answer::Failed(format!("connect: {error}")),
    };
    // The last byte goes out after the deadline, and on its own: the
    // answer to the whole header is read below.
    let (first, last) = SASL_HEADER.split_at(SASL_HEADER.len() - 1);
    for &byte in first {
        if let Err(error) = stream.write_all(&[byte]).await {
            return Answer::Refused(format!("closed ({error})"));
        }
        // Before the header is whole the broker sends nothing but its way
        // out: anything read is read to the end.
        let mut ending = Vec::new();
        if tokio::time::timeout(TRICKLE_GAP, stream.read_to_end(&mut ending))
            .await
            .is_ok()
        {
            return Answer::Refused("closed".to_owned());
        }
    }
    if let Err(error) = stream.write_all(last).await {
        return Answer::Refused(format!("closed ({error})"));
    }
    let mut answer = [0; SASL_HEADER.len()];
    match tokio::time::timeout(ANSWER_WAIT, stream.read_exact(&mut answer)).await {
        Ok(Ok(_)) if answer == SASL_HEADER => {
            Answer::Served("a protocol header answered past the deadline".to_owned())
        }
        Ok(_) => Answer::Refused("closed".to_owned()),
        Err(_) => Answer::Failed("no answer".to_owned()),
    }
}

/// What a login that ended with `error` got. SCRAM has the server prove
/// that it knows the credential: a broker that answers a wrong proof with
/// `ok` cannot, so the client's engine gives up on the server's signature
/// instead, after the broker admitted the login.
fn login_refusal(error: &Error) -> Answer {
    let why = error.description.clone().unwrap_or_default();
    if why == ScramError::ServerSignature.to_string() {
        Answer::Served(format!("SASL outcome ok ({why})"))
    } else if why.starts_with(SASL_FAILED) {
        Answer::Refused(why)
    } else {
        Answer::Failed(why)
    }
}

/// Logs in as [`INTRUDER_USER`] and tries each of `trespasses` in turn, on
/// one session, until one fails.
async fn trespass(shared: &Shared, conn: ConnId, node: NodeId, trespasses: Vec<Trespass>) {
    let Some(first) = trespasses.first().map(|t| t.attempt()) else {
        return;
    };
    let sasl = shared.scram_salted(INTRUDER_USER, accounts().intruder.clone());
    let mut client = match connect_as(shared, conn, conn.to_string(), node, sasl).await {
        Ok(client) => client,
        Err(error) => {
            let answer = Answer::Failed(format!("connect: {error}"));
            return record(shared, conn, node, first, answer);
        }
    };
    let session = match with_timeout(client.begin()).await {
        Ok(session) => session,
        Err(error) => {
            let answer = Answer::Failed(format!("begin: {error}"));
            return record(shared, conn, node, first, answer);
        }
    };
    for (k, trespass) in trespasses.into_iter().enumerate() {
        let answer = try_one(&mut client, session, k, trespass).await;
        let failed = matches!(answer, Answer::Failed(_));
        record(shared, conn, node, trespass.attempt(), answer);
        if failed {
            // The connection may be gone: nothing more to learn on it.
            return;
        }
    }
    close(client).await;
}

async fn try_one(
    client: &mut SimClient,
    session: SessionId,
    k: usize,
    trespass: Trespass,
) -> Answer {
    let name = format!("intruder{k}");
    match trespass {
        Trespass::Receive(queue) => {
            let source = Source {
                address: Some(queue.to_owned()),
                ..Source::default()
            };
            let attached = client.attach_receiver(session, &name, source, CREDIT);
            link_answer(with_timeout(attached).await, "a receiving link")
        }
        Trespass::Send(queue) => {
            let attached = client.attach_sender(session, &name, Some(queue));
            link_answer(with_timeout(attached).await, "a sending link")
        }
        Trespass::Relay(queue) => relay(client, session, &name, queue).await,
    }
}

/// A link attach's answer: granted (served), or refused with its error.
fn link_answer(attached: Result<LinkId, ClientError>, what: &str) -> Answer {
    match attached {
        Ok(_) => Answer::Served(what.to_owned()),
        Err(ClientError::LinkRefused(Some(error))) => {
            Answer::Refused(error.condition.as_str().to_owned())
        }
        Err(ClientError::LinkRefused(None)) => Answer::Refused("no error".to_owned()),
        Err(error) => Answer::Failed(error.to_string()),
    }
}

/// Sends a message to `queue` through the anonymous relay, and waits for
/// its outcome.
async fn relay(client: &mut SimClient, session: SessionId, name: &str, queue: &str) -> Answer {
    let link = match with_timeout(client.attach_sender(session, name, None)).await {
        Ok(link) => link,
        Err(error) => return Answer::Failed(format!("relay attach: {error}")),
    };
    let sent = client.send(link, Bytes::from_static(b"0"), message_to(queue), false);
    let sent = match with_timeout(sent).await {
        Ok(delivery) => delivery,
        Err(error) => return Answer::Failed(format!("send: {error}")),
    };
    let answered = client.wait_for(
        |event| matches!(event, Event::Disposition { delivery, settled: true, .. } if *delivery == sent),
    );
    match with_timeout(answered).await {
        Ok(Event::Disposition { state, .. }) => match state {
            Some(DeliveryState::Accepted(_)) => Answer::Served("the message accepted".to_owned()),
            Some(DeliveryState::Rejected(Rejected { error: Some(error) })) => {
                Answer::Refused(error.condition.as_str().to_owned())
            }
            state => Answer::Failed(format!("outcome {:?}", outcome_of(state.as_ref()))),
        },
        Ok(_) => Answer::Failed("no outcome".to_owned()),
        Err(error) => Answer::Failed(format!("outcome: {error}")),
    }
}

/// The intruder's message: to `queue`, with a body no producer sends, so
/// that a consumer that got it would record it as never sent (rule 1).
fn message_to(queue: &str) -> Bytes {
    let sections = vec![
        Section::Header(Header {
            durable: true,
            ..Header::default()
        }),
        Section::Properties(Box::new(Properties {
            to: Some(queue.to_owned()),
            ..Properties::default()
        })),
        Section::Data(Bytes::from_static(b"intruder")),
    ];
    Message { sections }.encode()
}

/// Closes the connection, bounded as every close is; the intruder's
/// connections matter to no rule once their attempts are recorded.
async fn close(client: SimClient) {
    let _ = with_timeout(client.close()).await;
}
