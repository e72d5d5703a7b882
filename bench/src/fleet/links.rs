//! Many links attached on one connection, several answers awaited at once.

use sluice::amqp::engine::{EngineError, Event, LinkId, LinkOptions, SessionId};
use sluice::amqp::types::{ReceiverSettleMode, Role, SenderSettleMode, Source, Target};
use sluice::client::Client;
use sluice::io::TokioIo;

use super::FleetError;

/// What each link is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A sender to the address, detached (closed) once attached: what
    /// declares a queue where attaching makes it.
    Declare,
    /// A receiver from the address, granted `credit`, left attached.
    Consumer { credit: u32 },
}

/// Attaches links `first..first + count` on `client`, link `n` at
/// `address(n)`, at most `window` awaiting their answer, on `session` and
/// the sessions it begins once that one is full (`session` names the last).
pub async fn attach(
    client: &mut Client<TokioIo>,
    session: &mut SessionId,
    kind: Kind,
    address: impl Fn(usize) -> String,
    first: usize,
    count: usize,
    window: usize,
) -> Result<(), FleetError> {
    let (mut issued, mut done, mut in_flight) = (0, 0, 0);
    while done < count {
        while in_flight < window && issued < count {
            let n = first + issued;
            // A session takes as many links as the broker's handle-max
            // allows (RabbitMQ: 256, Sluice: 1,024); then the next begins,
            // unless declarations in flight will give theirs back.
            match client
                .connection()
                .attach(*session, options(kind, n, address(n)))
            {
                Err(EngineError::NoFreeHandle) if kind == Kind::Declare && in_flight > 0 => break,
                Err(EngineError::NoFreeHandle) => {
                    *session = client.begin().await?;
                    continue;
                }
                attached => attached?,
            };
            issued += 1;
            in_flight += 1;
        }
        match client.next_event().await? {
            Event::LinkAttached { link, remote, .. } => {
                let refused = match remote.role {
                    Role::Sender => remote.source.is_none(),
                    Role::Receiver => remote.target.is_none(),
                };
                if refused {
                    return Err(refusal(client, link).await);
                }
                match kind {
                    Kind::Declare => client.connection().detach(link, true, None)?,
                    Kind::Consumer { credit } => {
                        client.connection().flow(link, credit, false)?;
                        (done, in_flight) = (done + 1, in_flight - 1);
                    }
                }
            }
            Event::LinkDetached { error: None, .. } if kind == Kind::Declare => {
                (done, in_flight) = (done + 1, in_flight - 1);
            }
            Event::LinkDetached { error, .. } => {
                return Err(FleetError::Refused(format!("a link detached: {error:?}")));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The error of a refused link: the detach that follows its attach.
async fn refusal(client: &mut Client<TokioIo>, link: LinkId) -> FleetError {
    let detached = client
        .wait_for(|e| matches!(e, Event::LinkDetached { link: l, .. } if *l == link))
        .await;
    match detached {
        Ok(Event::LinkDetached { error, .. }) => {
            FleetError::Refused(format!("a link was refused: {error:?}"))
        }
        Ok(_) => FleetError::Refused("a link was refused".to_owned()),
        Err(error) => error.into(),
    }
}

fn options(kind: Kind, n: usize, address: String) -> LinkOptions {
    let name = format!("fleet-{n}");
    let (role, source, target) = match kind {
        Kind::Declare => (
            Role::Sender,
            Source::default(),
            Target {
                address: Some(address),
                ..Target::default()
            },
        ),
        Kind::Consumer { .. } => (
            Role::Receiver,
            Source {
                address: Some(address),
                ..Source::default()
            },
            Target::default(),
        ),
    };
    LinkOptions {
        name,
        role,
        source: Some(source.into()),
        target: Some(target.into()),
        snd_settle_mode: SenderSettleMode::Unsettled,
        rcv_settle_mode: ReceiverSettleMode::First,
    }
}
