use std::net::Ipv4Addr;

use argon2::password_hash::SaltString;
use argon2::{Algorithm, Argon2, Params, Version};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::config::{User, UserLimits};
use crate::io::{TokioIo, seeded_rng};
use crate::metrics::Metrics;
use crate::sasl::scram::ScramClient;

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A cheap argon2id hash of `password` (m = 8 KiB, t = 1), so that tests
/// do not pay for production parameters on every check.
fn cheap_hash(password: &str) -> Argon2Hash {
    let salt = SaltString::encode_b64(b"sluice-test-salt").unwrap();
    let params = Params::new(8, 1, 1, None).unwrap();
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let hash = argon2::PasswordHasher::hash_password(&argon2, password.as_bytes(), &salt);
    Argon2Hash::parse(&hash.unwrap().to_string()).unwrap()
}

fn plain_user(name: &str, password: &str) -> User {
    User {
        name: name.to_owned(),
        password_hash: Some(cheap_hash(password)),
        scram_sha256: None,
        limits: UserLimits::default(),
    }
}

fn scram_user(name: &str, password: &str) -> User {
    User {
        name: name.to_owned(),
        password_hash: None,
        scram_sha256: Some(ScramCredential::derive(password.as_bytes(), b"salt", 4096)),
        limits: UserLimits::default(),
    }
}

fn config(users: Vec<User>) -> Config {
    Config {
        users,
        ..Config::default()
    }
}

fn authentication(config: &Config) -> Arc<Authentication> {
    Arc::new(Authentication::new(&TokioIo, config, 1, Metrics::default()))
}

fn transport(tls: bool) -> Transport {
    Transport {
        tls,
        peer: PEER,
        certificate: None,
    }
}

fn exchange(auth: &Arc<Authentication>, tls: bool) -> Exchange<TokioIo> {
    Exchange::new(Arc::clone(auth), TokioIo, transport(tls), seeded_rng(1))
}

fn mechanisms(auth: &Authentication, tls: bool) -> Vec<String> {
    let offer = auth.offer(&transport(tls));
    offer
        .mechanisms
        .iter()
        .map(|m| m.as_str().to_owned())
        .collect()
}

fn accepted_as(verdict: &SaslVerdict, expected: &str) -> bool {
    matches!(verdict, SaslVerdict::Accept { identity, .. } if identity == expected)
}

const REFUSED: SaslVerdict = SaslVerdict::Refuse(SaslCode::Auth);

#[test]
fn no_accounts_is_an_open_broker() {
    let auth = authentication(&Config::default());
    assert_eq!(mechanisms(&auth, false), ["ANONYMOUS"]);
    assert_eq!(
        auth.offer(&transport(false)).unauthenticated.as_deref(),
        Some(ANONYMOUS_IDENTITY)
    );
    assert!(auth.offers_without_tls());
}

#[test]
fn plain_is_offered_only_over_tls_unless_allowed() {
    let auth = authentication(&config(vec![plain_user("alice", "pw")]));
    assert_eq!(mechanisms(&auth, true), ["PLAIN"]);
    assert!(mechanisms(&auth, false).is_empty());
    assert!(!auth.offers_without_tls());
    assert_eq!(auth.offer(&transport(true)).unauthenticated, None);

    let mut allowed = config(vec![plain_user("alice", "pw")]);
    allowed.auth.allow_plain_without_tls = true;
    assert_eq!(mechanisms(&authentication(&allowed), false), ["PLAIN"]);
}

#[test]
fn scram_is_offered_first_and_anonymous_only_when_configured() {
    let mut both = config(vec![plain_user("alice", "pw"), scram_user("bob", "pw")]);
    assert_eq!(
        mechanisms(&authentication(&both), true),
        ["SCRAM-SHA-256", "PLAIN"]
    );
    assert_eq!(mechanisms(&authentication(&both), false), ["SCRAM-SHA-256"]);
    both.auth.anonymous = true;
    assert_eq!(
        mechanisms(&authentication(&both), true),
        ["SCRAM-SHA-256", "PLAIN", "ANONYMOUS"]
    );
}

#[tokio::test]
async fn plain_admits_the_right_password_and_refuses_the_rest() {
    let auth = authentication(&config(vec![
        plain_user("alice", "wonderland"),
        plain_user("bob", "builder"),
    ]));
    let verdict = exchange(&auth, true)
        .init(PLAIN, b"\0alice\0wonderland")
        .await;
    assert!(accepted_as(&verdict, "alice"), "{verdict:?}");
    let verdict = exchange(&auth, true)
        .init(PLAIN, b"bob\0bob\0builder")
        .await;
    assert!(accepted_as(&verdict, "bob"), "{verdict:?}");
    for response in [
        &b"\0alice\0builder"[..], // another user's password
        b"\0alice\0wonderlan",    // a prefix
        b"\0carol\0wonderland",   // unknown user
        b"\0Alice\0wonderland",   // names are case-sensitive
        b"alice",                 // malformed
    ] {
        let verdict = exchange(&auth, true).init(PLAIN, response).await;
        assert_eq!(verdict, REFUSED, "{response:?}");
    }
    assert_eq!(auth.metrics.auth_failures(), 5);
}

#[tokio::test]
async fn anonymous_is_admitted_as_the_anonymous_user() {
    let auth = authentication(&Config::default());
    let verdict = exchange(&auth, false)
        .init(ANONYMOUS, b"trace@example.com")
        .await;
    assert!(accepted_as(&verdict, ANONYMOUS_IDENTITY));
}

/// Runs a whole SCRAM exchange as `user` with `password`.
async fn scram_login(auth: &Arc<Authentication>, user: &str, password: &str) -> SaslVerdict {
    let mut exchange = exchange(auth, false);
    let (mut client, first) = ScramClient::start(user, password.as_bytes(), "nonce");
    let SaslVerdict::Challenge(server_first) = exchange.init(scram::MECHANISM, &first).await else {
        panic!("SCRAM starts with a challenge");
    };
    let last = client.respond(&server_first).unwrap();
    let verdict = exchange.response(&last);
    if let SaslVerdict::Accept {
        additional_data: Some(server_final),
        ..
    } = &verdict
    {
        client.verify(server_final).unwrap();
    }
    verdict
}

#[tokio::test]
async fn scram_admits_the_right_password_and_proves_the_server() {
    let auth = authentication(&config(vec![scram_user("bob", "builder")]));
    let verdict = scram_login(&auth, "bob", "builder").await;
    assert!(accepted_as(&verdict, "bob"), "{verdict:?}");
    assert_eq!(scram_login(&auth, "bob", "wrong").await, REFUSED);
    assert_eq!(scram_login(&auth, "nobody", "builder").await, REFUSED);
    assert_eq!(auth.metrics.auth_failures(), 2);
}

/// An account with only an argon2 hash cannot log in with SCRAM, and the
/// refusal looks like any other.
#[tokio::test]
async fn scram_for_an_account_without_a_scram_credential_is_refused() {
    let auth = authentication(&config(vec![
        plain_user("alice", "pw"),
        scram_user("bob", "pw"),
    ]));
    assert_eq!(scram_login(&auth, "alice", "pw").await, REFUSED);
}

/// EXTERNAL is offered, first, only to a connection with a verified client
/// certificate, and admits the user it names if that user has an account.
#[tokio::test]
async fn external_admits_the_account_a_client_certificate_names() {
    let auth = authentication(&config(vec![plain_user("alice", "pw")]));
    let with_certificate = |name: &str| Transport {
        tls: true,
        peer: PEER,
        certificate: Some(name.to_owned()),
    };
    let offered = auth.offer(&with_certificate("alice")).mechanisms;
    assert_eq!(offered.first().map(|m| m.as_str()), Some(EXTERNAL));
    assert!(!mechanisms(&auth, true).contains(&EXTERNAL.to_owned()));

    let login = |name: &str| {
        Exchange::new(
            Arc::clone(&auth),
            TokioIo,
            with_certificate(name),
            seeded_rng(1),
        )
    };
    assert!(accepted_as(
        &login("alice").init(EXTERNAL, b"").await,
        "alice"
    ));
    assert!(accepted_as(
        &login("alice").init(EXTERNAL, b"alice").await,
        "alice"
    ));
    assert_eq!(login("alice").init(EXTERNAL, b"admin").await, REFUSED);
    assert_eq!(login("mallory").init(EXTERNAL, b"").await, REFUSED);
    // Without a certificate there is nothing to go by.
    assert_eq!(
        exchange(&auth, true).init(EXTERNAL, b"alice").await,
        REFUSED
    );
}

#[tokio::test]
async fn a_response_without_a_challenge_is_refused() {
    let auth = authentication(&config(vec![scram_user("bob", "pw")]));
    assert_eq!(exchange(&auth, false).response(b"c=biws,r=x,p=y"), REFUSED);
}

/// With every queue slot for argon2 taken, a login is refused at once with
/// `sys-temp` (try again later), without hashing anything.
#[tokio::test]
async fn a_full_verification_queue_refuses_with_sys_temp() {
    let auth = authentication(&config(vec![plain_user("alice", "pw")]));
    let slots = auth.verify_slots.available_permits();
    let _taken = auth
        .verify_slots
        .try_acquire_many(u32::try_from(slots).unwrap())
        .unwrap();
    let verdict = exchange(&auth, true).init(PLAIN, b"\0alice\0pw").await;
    assert_eq!(verdict, SaslVerdict::Refuse(SaslCode::SysTemp));
    // Counted as a refused login, though nothing was checked.
    assert_eq!(auth.metrics.auth_failures(), 1);
}

/// After a failure, the source's next attempt waits its turn.
#[tokio::test(start_paused = true)]
async fn a_failed_login_delays_the_next_attempt_from_that_source() {
    let auth = authentication(&config(vec![plain_user("alice", "pw")]));
    let before = TokioIo.now();
    assert_eq!(
        exchange(&auth, true).init(PLAIN, b"\0alice\0no").await,
        REFUSED
    );
    let failed = TokioIo.now();
    let verdict = exchange(&auth, true).init(PLAIN, b"\0alice\0pw").await;
    assert!(accepted_as(&verdict, "alice"));
    assert!(
        TokioIo.now() - failed >= std::time::Duration::from_millis(50),
        "{:?}",
        TokioIo.now() - before
    );
}

/// A burst of wrong passwords from one source, all at once (a flood over
/// parallel connections): the turns booked before the first failure are
/// void once it fails, so only a few guesses are checked before the rest
/// find their turns too far off.
#[tokio::test(start_paused = true)]
async fn a_burst_of_wrong_passwords_from_one_source_gets_few_checks() {
    const BURST: usize = 64;
    let auth = authentication(&config(vec![plain_user("alice", "pw")]));
    let start = TokioIo.now();
    let attempts: Vec<_> = (0..BURST)
        .map(|_| {
            let mut exchange = exchange(&auth, true);
            TokioIo.spawn(async move { exchange.init(PLAIN, b"\0alice\0no").await })
        })
        .collect();
    let (mut checked, mut refused_unchecked) = (0, 0);
    for attempt in attempts {
        match attempt.await.unwrap() {
            verdict if verdict == REFUSED => checked += 1,
            SaslVerdict::Refuse(SaslCode::SysTemp) => refused_unchecked += 1,
            other => panic!("a wrong password answered {other:?}"),
        }
    }
    assert_eq!(checked + refused_unchecked, BURST);
    // One check per penalty (50 ms doubling to 1 s): about ten before the
    // rest are refused (all 64 were, before turns could be void).
    assert!(checked <= 16, "{checked} of {BURST} guesses checked");
    // However often its turn was void, no attempt waited past the limit
    // (and the check it then had).
    let took = TokioIo.now() - start;
    assert!(
        took <= super::throttle::WAIT_MAX + std::time::Duration::from_millis(100),
        "{took:?}"
    );
}

#[test]
fn decoy_salts_are_stable_per_name_and_differ_between_names() {
    let auth = authentication(&config(vec![scram_user("bob", "pw")]));
    assert_eq!(auth.decoy_salt("mallory"), auth.decoy_salt("mallory"));
    assert_ne!(auth.decoy_salt("mallory"), auth.decoy_salt("eve"));
    assert_eq!(auth.decoy_salt("eve").len(), scram::SALT_BYTES);
}

#[test]
fn hash_password_uses_argon2id_with_owasp_parameters_and_verifies() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let hash = hash_password(b"correct horse", &mut rng).unwrap();
    assert!(
        hash.as_str().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    assert!(hash.verify(b"correct horse"));
    assert!(!hash.verify(b"correct horse "));
    assert_eq!(Argon2Hash::parse(hash.as_str()).unwrap(), hash);
}

#[test]
fn salts_come_from_the_rng() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let first = hash_password(b"pw", &mut rng).unwrap();
    let second = hash_password(b"pw", &mut rng).unwrap();
    assert_ne!(first, second);
    let scram_first = scram_credential(b"pw", &mut rng);
    assert_ne!(scram_first, scram_credential(b"pw", &mut rng));
    assert!(scram_first.to_string().starts_with("SCRAM-SHA-256$4096:"));
}

#[test]
fn parse_rejects_unusable_hashes() {
    let good = cheap_hash("pw").to_string();
    let without_output = good.rsplit_once('$').unwrap().0.to_owned();
    for phc in [
        "",
        "hunter2",
        "$argon2id$v=19$m=19456,t=2,p=1", // no salt
        &without_output,                  // no hash
        "$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E",
        &good.replace("$v=19$", "$v=18$"), // unknown version
        &good.replace("m=8,", "m=1,"),     // memory below 8 p
        &good.replace("c2x1aWNlLXRlc3Qtc2FsdA", "c2x1aWNl"), // salt below 8 bytes
    ] {
        assert!(Argon2Hash::parse(phc).is_err(), "{phc:?}");
    }
    assert!(Argon2Hash::parse(&good).is_ok());
}

#[test]
fn debug_leaves_the_credentials_out() {
    let hash = cheap_hash("pw");
    let scram = ScramCredential::derive(b"pw", b"salt", 4096);
    let auth = authentication(&config(vec![plain_user("alice", "pw")]));
    let shown = format!("{hash:?} {scram:?} {auth:?}");
    assert!(!shown.contains(hash.as_str()), "{shown}");
    assert!(!shown.contains(&scram.to_string()), "{shown}");
    assert!(
        shown.contains("argon2id") && shown.contains("alice"),
        "{shown}"
    );
}
