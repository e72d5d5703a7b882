use super::*;

// RFC 7677 §3's example exchange.
const USER: &str = "user";
const PASSWORD: &[u8] = b"pencil";
const CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
const SALT_B64: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
const CLIENT_FIRST: &[u8] = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
const SERVER_FIRST: &[u8] =
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const CLIENT_FINAL: &[u8] = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
const SERVER_FINAL: &[u8] = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

fn credential() -> ScramCredential {
    ScramCredential::derive(PASSWORD, &Base64::decode_vec(SALT_B64).unwrap(), 4096)
}

fn lookup_of(known: Option<ScramCredential>) -> impl Fn(&str) -> Option<ScramCredential> {
    move |user| (user == USER).then(|| known.clone()).flatten()
}

fn decoy(user: &str) -> Vec<u8> {
    Sha256::digest(user.as_bytes())[..SALT_BYTES].to_vec()
}

fn start(
    known: Option<ScramCredential>,
    client_first: &[u8],
) -> Result<(ScramServer, Vec<u8>), ScramError> {
    let credential = lookup_of(known);
    let lookup = Lookup {
        credential: &credential,
        decoy_salt: &decoy,
    };
    ScramServer::start(client_first, SERVER_NONCE, &lookup)
}

#[test]
fn the_client_reproduces_rfc_7677s_exchange() {
    let (mut client, first) = ScramClient::start(USER, PASSWORD, CLIENT_NONCE);
    assert_eq!(first, CLIENT_FIRST);
    assert_eq!(client.respond(SERVER_FIRST).unwrap(), CLIENT_FINAL);
    client.verify(SERVER_FINAL).unwrap();
}

#[test]
fn a_client_with_the_password_salted_reproduces_the_exchange_and_refuses_another_salt() {
    let salt = Base64::decode_vec(SALT_B64).unwrap();
    let salted = SaltedPassword::derive(PASSWORD, &salt, 4096);
    let (mut client, first) = ScramClient::start_salted(USER, salted.clone(), CLIENT_NONCE);
    assert_eq!(first, CLIENT_FIRST);
    assert_eq!(client.respond(SERVER_FIRST).unwrap(), CLIENT_FINAL);
    client.verify(SERVER_FINAL).unwrap();
    // Salted for another iteration count: the server's 4096 is refused,
    // rather than answered with a proof that cannot hold.
    let other = SaltedPassword::derive(PASSWORD, &salt, 4097);
    let (mut client, _) = ScramClient::start_salted(USER, other, CLIENT_NONCE);
    assert!(matches!(
        client.respond(SERVER_FIRST),
        Err(ScramError::Server(_))
    ));
}

#[test]
fn the_server_reproduces_rfc_7677s_exchange() {
    let (server, first) = start(Some(credential()), CLIENT_FIRST).unwrap();
    assert_eq!(server.user(), USER);
    assert_eq!(first, SERVER_FIRST);
    let (user, last) = server.finish(CLIENT_FINAL).unwrap();
    assert_eq!(user, USER);
    assert_eq!(last, SERVER_FINAL);
}

#[test]
fn a_credential_verifies_its_password_and_no_other() {
    assert!(credential().verifies(PASSWORD));
    assert!(!credential().verifies(b"pencil "));
}

#[test]
fn a_wrong_password_fails_the_proof() {
    let (server, server_first) = start(Some(credential()), CLIENT_FIRST).unwrap();
    let (mut client, _) = ScramClient::start(USER, b"pencil!", CLIENT_NONCE);
    let client_final = client.respond(&server_first).unwrap();
    assert_eq!(server.finish(&client_final), Err(ScramError::InvalidProof));
}

#[test]
fn an_unknown_user_gets_a_stable_decoy_salt_and_fails_only_at_the_proof() {
    let first = b"n,,n=mallory,r=abc";
    let (server, server_first) = start(None, first).unwrap();
    let (_, again) = start(None, first).unwrap();
    assert_eq!(server_first, again, "the same salt at every attempt");
    let (mut client, _) = ScramClient::start("mallory", PASSWORD, "abc");
    let client_final = client.respond(&server_first).unwrap();
    assert_eq!(server.finish(&client_final), Err(ScramError::InvalidProof));
}

#[test]
fn a_server_that_does_not_know_the_credential_fails_the_clients_check() {
    let (mut client, _) = ScramClient::start(USER, PASSWORD, CLIENT_NONCE);
    client.respond(SERVER_FIRST).unwrap();
    assert_eq!(
        client.verify(b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
        Err(ScramError::ServerSignature)
    );
    assert_eq!(
        client.verify(b"e=invalid-proof"),
        Err(ScramError::Server("invalid-proof".into()))
    );
}

#[test]
fn the_client_refuses_a_nonce_it_did_not_start_and_too_few_iterations() {
    let (mut client, _) = ScramClient::start(USER, PASSWORD, CLIENT_NONCE);
    assert_eq!(
        client.respond(b"r=someoneelse,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"),
        Err(ScramError::Mismatch)
    );
    assert_eq!(
        client.respond(b"r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"),
        Err(ScramError::Mismatch),
        "the server must add its own nonce"
    );
    assert!(matches!(
        client.respond(b"r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1"),
        Err(ScramError::Server(_))
    ));
}

#[test]
fn the_server_refuses_binding_other_users_and_a_changed_nonce() {
    assert_eq!(
        start(None, b"p=tls-unique,,n=user,r=abc").unwrap_err(),
        ScramError::ChannelBinding
    );
    assert_eq!(
        start(None, b"n,a=admin,n=user,r=abc").unwrap_err(),
        ScramError::Authzid
    );
    assert!(start(None, b"n,a=user,n=user,r=abc").is_ok());
    let (server, _) = start(Some(credential()), CLIENT_FIRST).unwrap();
    let forged =
        b"c=biws,r=rOprNGfwEbeRWgbNEkqOother,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    assert_eq!(server.finish(forged), Err(ScramError::Mismatch));
}

#[test]
fn malformed_messages_are_errors_not_panics() {
    for first in [
        &b""[..],
        b"n,,",
        b"n,,n=user",
        b"n,,r=abc,n=user",
        b"x,,n=user,r=abc",
        b"n,,n=,r=abc",
        b"n,,n=a=2,r=abc",
        b"n,,n=user,r=",
        b"n,,n=user,r=a,b",
        b"\xff,,n=user,r=abc",
    ] {
        assert!(
            matches!(start(None, first), Err(ScramError::Malformed(_))),
            "{:?}",
            String::from_utf8_lossy(first)
        );
    }
    let (server, _) = start(Some(credential()), CLIENT_FIRST).unwrap();
    assert!(matches!(
        server.finish(b"c=biws"),
        Err(ScramError::Malformed(_))
    ));
}

#[test]
fn names_with_commas_and_equals_signs_round_trip() {
    let name = "a,b=c";
    assert_eq!(escape_name(name), "a=2Cb=3Dc");
    assert_eq!(unescape_name(&escape_name(name)).unwrap(), name);
}

#[test]
fn the_stored_form_round_trips_and_is_checked() {
    let stored = credential().to_string();
    assert!(
        stored.starts_with("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"),
        "{stored}"
    );
    assert_eq!(stored.parse::<ScramCredential>().unwrap(), credential());
    for bad in [
        "",
        "SCRAM-SHA-1$4096:c2FsdA==$a:b",
        "SCRAM-SHA-256$4096:c2FsdA==",
        "SCRAM-SHA-256$100:c2FsdA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "SCRAM-SHA-256$x:c2FsdA==$AAAA:AAAA",
    ] {
        assert!(bad.parse::<ScramCredential>().is_err(), "{bad}");
    }
}
