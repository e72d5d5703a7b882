//! The protocol's definitions (spec parts 2, 3 and 5) as typed Rust values:
//! performatives, SASL frames, delivery states, termini and message sections.

mod definitions;
mod messaging;
mod performatives;
mod sasl;
mod transactions;

pub use definitions::{
    Annotations, ApplicationProperties, DistributionMode, Error, ExpiryPolicy, Fields, Handle,
    ReceiverSettleMode, Role, SenderSettleMode, TerminusDurability, Timestamp, condition,
};
pub use messaging::{
    Accepted, AttachSource, DeliveryState, Header, Message, MessageId, Modified, Properties,
    Received, Rejected, Released, Section, Source, Target, section,
};
pub use performatives::{
    Attach, Begin, Close, Detach, Disposition, End, Flow, Open, Performative, Transfer,
};
pub use sasl::{
    SaslChallenge, SaslCode, SaslFrame, SaslInit, SaslMechanisms, SaslOutcome, SaslResponse,
};
pub use transactions::{
    AttachTarget, ControlMessage, Coordinator, Declare, Declared, Discharge, LOCAL_TRANSACTIONS,
    TXN_ID_MAX, TransactionalState, acquisition,
};

#[cfg(test)]
mod tests;
