//! SASL frames (spec part 5 §5.3).

use std::fmt;

use bytes::{Bytes, BytesMut};

use crate::amqp::codec::{
    Composite, Decode, DecodeError, DecodeErrorKind, Encode, FieldDecoder, FieldEncoder, Reader,
    Symbol, composite_codec, read_descriptor,
};

/// The mechanisms the server supports, sent first.
#[derive(Debug, Clone, PartialEq)]
pub struct SaslMechanisms {
    /// Supported mechanisms, in order of preference.
    pub mechanisms: Vec<Symbol>,
}

/// The client's chosen mechanism and initial response.
#[derive(Clone, PartialEq)]
pub struct SaslInit {
    /// The chosen mechanism.
    pub mechanism: Symbol,
    /// The mechanism's initial response (e.g. PLAIN's `\0user\0password`).
    pub initial_response: Option<Bytes>,
    /// The name of the host the client is connecting to.
    pub hostname: Option<String>,
}

/// A server challenge.
#[derive(Clone, PartialEq)]
pub struct SaslChallenge {
    /// The challenge data.
    pub challenge: Bytes,
}

/// A client response to a challenge.
#[derive(Clone, PartialEq)]
pub struct SaslResponse {
    /// The response data.
    pub response: Bytes,
}

// The mechanisms' data is credentials (PLAIN's is the password itself):
// `Debug`, which error messages and logs use, shows only its length.

impl fmt::Debug for SaslInit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaslInit")
            .field("mechanism", &self.mechanism)
            .field(
                "initial_response",
                &self.initial_response.as_ref().map(Redacted::of),
            )
            .field("hostname", &self.hostname)
            .finish()
    }
}

impl fmt::Debug for SaslChallenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaslChallenge")
            .field("challenge", &Redacted::of(&self.challenge))
            .finish()
    }
}

impl fmt::Debug for SaslResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaslResponse")
            .field("response", &Redacted::of(&self.response))
            .finish()
    }
}

/// Shows how many bytes there are, not what they are.
struct Redacted(usize);

impl Redacted {
    fn of(bytes: &Bytes) -> Self {
        Self(bytes.len())
    }
}

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0)
    }
}

/// The result of authentication.
#[derive(Debug, Clone, PartialEq)]
pub struct SaslOutcome {
    /// The result.
    pub code: SaslCode,
    /// Mechanism-specific data for the client.
    pub additional_data: Option<Bytes>,
}

/// The result codes of SASL authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslCode {
    /// Authentication succeeded.
    Ok,
    /// Bad credentials.
    Auth,
    /// A system error.
    Sys,
    /// A permanent system error.
    SysPerm,
    /// A transient system error.
    SysTemp,
}

impl SaslCode {
    const ALL: [SaslCode; 5] = [
        Self::Ok,
        Self::Auth,
        Self::Sys,
        Self::SysPerm,
        Self::SysTemp,
    ];
}

impl Encode for SaslCode {
    fn encode(&self, buf: &mut BytesMut) {
        (*self as u8).encode(buf)
    }
}

impl Decode for SaslCode {
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let code = usize::from(u8::decode(r)?);
        Self::ALL
            .get(code)
            .copied()
            .ok_or(DecodeErrorKind::InvalidValue.into())
    }
}

impl Composite for SaslMechanisms {
    const NAME: &'static str = "amqp:sasl-mechanisms:list";
    const CODE: u64 = 0x40;

    fn encode_fields(&self, f: &mut FieldEncoder<'_>) {
        f.field(&self.mechanisms);
    }

    fn decode_fields(f: &mut FieldDecoder) -> Result<Self, DecodeError> {
        let mechanisms: Vec<Symbol> = f.or_default("sasl-server-mechanisms")?;
        if mechanisms.is_empty() {
            return Err(
                DecodeError::new(DecodeErrorKind::MissingField).in_field("sasl-server-mechanisms")
            );
        }
        Ok(Self { mechanisms })
    }
}

impl Composite for SaslInit {
    const NAME: &'static str = "amqp:sasl-init:list";
    const CODE: u64 = 0x41;

    fn encode_fields(&self, f: &mut FieldEncoder<'_>) {
        f.field(&self.mechanism)
            .field(&self.initial_response)
            .field(&self.hostname);
    }

    fn decode_fields(f: &mut FieldDecoder) -> Result<Self, DecodeError> {
        Ok(Self {
            mechanism: f.required("mechanism")?,
            initial_response: f.optional("initial-response")?,
            hostname: f.optional("hostname")?,
        })
    }
}

impl Composite for SaslChallenge {
    const NAME: &'static str = "amqp:sasl-challenge:list";
    const CODE: u64 = 0x42;

    fn encode_fields(&self, f: &mut FieldEncoder<'_>) {
        f.field(&self.challenge);
    }

    fn decode_fields(f: &mut FieldDecoder) -> Result<Self, DecodeError> {
        Ok(Self {
            challenge: f.required("challenge")?,
        })
    }
}

impl Composite for SaslResponse {
    const NAME: &'static str = "amqp:sasl-response:list";
    const CODE: u64 = 0x43;

    fn encode_fields(&self, f: &mut FieldEncoder<'_>) {
        f.field(&self.response);
    }

    fn decode_fields(f: &mut FieldDecoder) -> Result<Self, DecodeError> {
        Ok(Self {
            response: f.required("response")?,
        })
    }
}

impl Composite for SaslOutcome {
    const NAME: &'static str = "amqp:sasl-outcome:list";
    const CODE: u64 = 0x44;

    fn encode_fields(&self, f: &mut FieldEncoder<'_>) {
        f.field(&self.code).field(&self.additional_data);
    }

    fn decode_fields(f: &mut FieldDecoder) -> Result<Self, DecodeError> {
        Ok(Self {
            code: f.required("code")?,
            additional_data: f.optional("additional-data")?,
        })
    }
}

composite_codec!(
    SaslMechanisms,
    SaslInit,
    SaslChallenge,
    SaslResponse,
    SaslOutcome
);

/// The body of a SASL frame.
#[derive(Debug, Clone, PartialEq)]
pub enum SaslFrame {
    /// `sasl-mechanisms`.
    Mechanisms(SaslMechanisms),
    /// `sasl-init`.
    Init(SaslInit),
    /// `sasl-challenge`.
    Challenge(SaslChallenge),
    /// `sasl-response`.
    Response(SaslResponse),
    /// `sasl-outcome`.
    Outcome(SaslOutcome),
}

impl Encode for SaslFrame {
    fn encode(&self, buf: &mut BytesMut) {
        match self {
            SaslFrame::Mechanisms(f) => f.encode(buf),
            SaslFrame::Init(f) => f.encode(buf),
            SaslFrame::Challenge(f) => f.encode(buf),
            SaslFrame::Response(f) => f.encode(buf),
            SaslFrame::Outcome(f) => f.encode(buf),
        }
    }
}

impl Decode for SaslFrame {
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let descriptor = read_descriptor(r)?;
        let is = |name, code| descriptor.is(name, code);
        if is(SaslMechanisms::NAME, SaslMechanisms::CODE) {
            SaslMechanisms::decode_after_descriptor(r).map(SaslFrame::Mechanisms)
        } else if is(SaslInit::NAME, SaslInit::CODE) {
            SaslInit::decode_after_descriptor(r).map(SaslFrame::Init)
        } else if is(SaslChallenge::NAME, SaslChallenge::CODE) {
            SaslChallenge::decode_after_descriptor(r).map(SaslFrame::Challenge)
        } else if is(SaslResponse::NAME, SaslResponse::CODE) {
            SaslResponse::decode_after_descriptor(r).map(SaslFrame::Response)
        } else if is(SaslOutcome::NAME, SaslOutcome::CODE) {
            SaslOutcome::decode_after_descriptor(r).map(SaslFrame::Outcome)
        } else {
            Err(DecodeErrorKind::UnexpectedDescriptor.into())
        }
    }
}
