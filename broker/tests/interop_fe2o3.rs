//! Cross-implementation check: fe2o3-amqp, an independent AMQP 1.0 client,
//! completes SASL, open, begin, end and close against the real server entry
//! point on loopback TCP.
// Test helpers panic on anything unexpected: the panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Broker, WAIT};
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::{Connection, Session};
use tokio::time::timeout;

#[tokio::test]
async fn fe2o3_opens_begins_ends_and_closes_with_sasl_anonymous() {
    let broker = Broker::start().await;

    let mut connection = timeout(
        WAIT,
        Connection::builder()
            .container_id("fe2o3-interop")
            .sasl_profile(SaslProfile::Anonymous)
            .open(broker.url().as_str()),
    )
    .await
    .unwrap()
    .expect("fe2o3 completes SASL ANONYMOUS and open");
    let mut session = timeout(WAIT, Session::begin(&mut connection))
        .await
        .unwrap()
        .expect("the broker answers begin");
    timeout(WAIT, session.end())
        .await
        .unwrap()
        .expect("the broker answers end");
    timeout(WAIT, connection.close())
        .await
        .unwrap()
        .expect("the broker answers close");

    broker.stop().await;
}

#[tokio::test]
async fn fe2o3_without_sasl_is_admitted_anonymously() {
    let broker = Broker::start().await;

    let mut connection = timeout(
        WAIT,
        Connection::open("fe2o3-no-sasl", broker.url().as_str()),
    )
    .await
    .unwrap()
    .expect("fe2o3 opens without a SASL layer");
    timeout(WAIT, connection.close())
        .await
        .unwrap()
        .expect("the broker answers close");

    broker.stop().await;
}
