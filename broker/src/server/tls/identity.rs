//! Who a client certificate names: the common name (CN) of its subject,
//! which SASL EXTERNAL then takes as the client's user name, as RabbitMQ's
//! and Artemis's certificate logins do by default.
//!
//! rustls has already checked the certificate against `tls.client_ca_file`
//! by the time this runs; this only reads the subject, strictly: any DER it
//! does not expect means no identity, never a guess.

use rustls::pki_types::CertificateDer;

/// The OID of the `commonName` attribute, 2.5.4.3, as DER content bytes.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_OID: u8 = 0x06;
const TAG_UTF8_STRING: u8 = 0x0c;
const TAG_PRINTABLE_STRING: u8 = 0x13;
const TAG_IA5_STRING: u8 = 0x16;

/// The subject's common name, if the certificate has exactly one that is
/// a UTF8String, PrintableString or IA5String; otherwise `None`.
pub(super) fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let cert = webpki::EndEntityCert::try_from(cert).ok()?;
    subject_common_name(cert.subject())
}

/// The common name in `subject`, an RDNSequence's contents.
fn subject_common_name(subject: &[u8]) -> Option<String> {
    let mut found = None;
    let mut rdns = Der(subject);
    while !rdns.is_empty() {
        let mut attributes = Der(rdns.take(TAG_SET)?);
        while !attributes.is_empty() {
            let mut attribute = Der(attributes.take(TAG_SEQUENCE)?);
            let oid = attribute.take(TAG_OID)?;
            let (tag, value) = attribute.any()?;
            if !attribute.is_empty() {
                return None;
            }
            if oid == COMMON_NAME {
                // Two common names: which one names the user is anyone's
                // guess, so neither does.
                if found.is_some() {
                    return None;
                }
                found = Some(text(tag, value)?);
            }
        }
    }
    found.filter(|name: &String| !name.is_empty())
}

/// A directory string's text, for the string types that hold it as UTF-8
/// (PrintableString and IA5String are subsets of ASCII).
fn text(tag: u8, value: &[u8]) -> Option<String> {
    match tag {
        TAG_UTF8_STRING | TAG_PRINTABLE_STRING | TAG_IA5_STRING => {
            String::from_utf8(value.to_vec()).ok()
        }
        _ => None,
    }
}

/// A bounded reader of DER elements.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The next element's contents, if its tag is `tag`.
    fn take(&mut self, tag: u8) -> Option<&'a [u8]> {
        let (found, value) = self.any()?;
        (found == tag).then_some(value)
    }

    /// The next element's tag and contents.
    fn any(&mut self) -> Option<(u8, &'a [u8])> {
        let (&tag, rest) = self.0.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = match first {
            short @ 0..=0x7f => (usize::from(short), rest),
            0x81 => {
                let (&len, rest) = rest.split_first()?;
                // DER's lengths are minimal: below 128 is the short form.
                (len >= 0x80).then_some((usize::from(len), rest))?
            }
            0x82 => {
                let (len, rest) = rest.split_first_chunk::<2>()?;
                let len = usize::from(u16::from_be_bytes(*len));
                (len >= 0x100).then_some((len, rest))?
            }
            // Longer than 64 KiB is no name worth reading.
            _ => return None,
        };
        if rest.len() < len {
            return None;
        }
        let (value, rest) = rest.split_at(len);
        self.0 = rest;
        Some((tag, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One RDN holding one attribute `oid` = `value` with string `tag`.
    fn rdn(oid: &[u8], tag: u8, value: &[u8]) -> Vec<u8> {
        let mut attribute = vec![TAG_OID, u8::try_from(oid.len()).unwrap()];
        attribute.extend_from_slice(oid);
        attribute.extend([tag, u8::try_from(value.len()).unwrap()]);
        attribute.extend_from_slice(value);
        let mut sequence = vec![TAG_SEQUENCE, u8::try_from(attribute.len()).unwrap()];
        sequence.extend(attribute);
        let mut set = vec![TAG_SET, u8::try_from(sequence.len()).unwrap()];
        set.extend(sequence);
        set
    }

    const ORGANIZATION: &[u8] = &[0x55, 0x04, 0x0a];

    #[test]
    fn the_common_name_is_found_among_other_attributes() {
        let mut subject = rdn(ORGANIZATION, TAG_UTF8_STRING, b"Example Bank");
        subject.extend(rdn(COMMON_NAME, TAG_PRINTABLE_STRING, b"trading-gw-1"));
        assert_eq!(
            subject_common_name(&subject).as_deref(),
            Some("trading-gw-1")
        );
    }

    #[test]
    fn no_common_name_two_of_them_or_an_odd_string_type_give_no_identity() {
        let organization_only = rdn(ORGANIZATION, TAG_UTF8_STRING, b"Example Bank");
        assert_eq!(subject_common_name(&organization_only), None);
        let mut two = rdn(COMMON_NAME, TAG_UTF8_STRING, b"alice");
        two.extend(rdn(COMMON_NAME, TAG_UTF8_STRING, b"admin"));
        assert_eq!(subject_common_name(&two), None);
        // A BMPString (UTF-16) is not read.
        assert_eq!(subject_common_name(&rdn(COMMON_NAME, 0x1e, b"\0a")), None);
        assert_eq!(
            subject_common_name(&rdn(COMMON_NAME, TAG_UTF8_STRING, b"")),
            None
        );
    }

    #[test]
    fn malformed_der_gives_no_identity_and_never_panics() {
        let good = rdn(COMMON_NAME, TAG_UTF8_STRING, b"alice");
        for cut in 0..good.len() {
            assert_eq!(subject_common_name(&good[..cut]), None, "{cut}");
        }
        // A non-minimal long-form length.
        let mut padded = good.clone();
        padded.splice(1..2, [0x81, good[1]]);
        assert_eq!(subject_common_name(&padded), None);
        // A set's contents that are not attribute sequences.
        assert_eq!(subject_common_name(&[TAG_SET, 2, 0x05, 0x00]), None);
    }

    #[test]
    fn a_real_certificate_yields_its_common_name() {
        let mut params = rcgen::CertificateParams::new(vec!["client.example".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "carol");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example Bank");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(common_name(cert.der()).as_deref(), Some("carol"));
    }
}
