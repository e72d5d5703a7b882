//! Unit tests of configuration parsing, validation and queue settings.

use argon2::password_hash::SaltString;
use argon2::{Algorithm, Argon2, Params, PasswordHasher, Version};

use super::*;

/// A cheap argon2id hash of `password` (m = 8 KiB, t = 1): valid, and fast
/// enough to check in unit tests.
fn cheap_hash(password: &str) -> String {
    let salt = SaltString::encode_b64(b"sluice-test-salt").unwrap();
    let params = Params::new(8, 1, 1, None).unwrap();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

fn users_toml(entries: &[(&str, &str)]) -> String {
    // `toml::Value`'s display escapes like TOML, where Rust's `{:?}` would
    // write a NUL as `\0`, which TOML rejects.
    let quote = |text: &str| toml::Value::from(text).to_string();
    entries
        .iter()
        .map(|(name, hash)| {
            format!(
                "[[users]]\nname = {}\npassword_hash = {}\n",
                quote(name),
                quote(hash)
            )
        })
        .collect()
}

fn invalid_field(text: &str) -> &'static str {
    match Config::from_toml(text) {
        Err(ConfigError::Invalid { field, .. }) => field,
        other => panic!("expected an invalid field, got {other:?}"),
    }
}

#[test]
fn empty_file_gives_the_defaults() {
    let config = Config::from_toml("").unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.listen, "127.0.0.1:5672".parse().unwrap());
    assert_eq!(config.data_dir, PathBuf::from("./sluice-data"));
    assert_eq!(config.log.format, LogFormat::Text);
    assert_eq!(config.log.level, "info");
    assert_eq!(config.seed, DEFAULT_SEED);
    assert_eq!(config.amqp.max_frame_size, 262_144);
    assert_eq!(config.amqp.channel_max, 255);
    assert_eq!(config.amqp.idle_timeout_ms, 60_000);
    assert_eq!(config.amqp.container_id, "sluice");
    assert!(config.users.is_empty());
    assert_eq!(config.queues, QueuesConfig::default());
    assert!(config.queue_overrides.is_empty());
    assert_eq!(config.limits.memory_high_watermark_bytes, 1_073_741_824);
    assert_eq!(config.limits.producer_credit, 256);
    assert!(!config.repair);
}

#[test]
fn sample_file_sets_every_field() {
    let config = Config::from_toml(
        r#"
        listen = "0.0.0.0:5673"
        data_dir = "/var/lib/sluice"
        seed = 42

        [log]
        format = "json"
        level = "debug,sluice::server=trace"

        [amqp]
        max_frame_size = 65536
        channel_max = 16
        idle_timeout_ms = 0
        container_id = "sluice-1"
        rcv_settle_mode_second = true
        "#,
    )
    .unwrap();
    assert_eq!(config.listen, "0.0.0.0:5673".parse().unwrap());
    assert_eq!(config.data_dir, PathBuf::from("/var/lib/sluice"));
    assert_eq!(config.seed, 42);
    assert_eq!(config.log.format, LogFormat::Json);
    assert_eq!(config.log.level, "debug,sluice::server=trace");
    assert_eq!(
        config.amqp,
        AmqpConfig {
            max_frame_size: 65_536,
            channel_max: 16,
            idle_timeout_ms: 0,
            container_id: "sluice-1".to_owned(),
            rcv_settle_mode_second: true,
            handshake_timeout_ms: 10_000,
        }
    );
}

#[test]
fn partial_section_keeps_the_other_defaults() {
    let config = Config::from_toml("[amqp]\nchannel_max = 7\n").unwrap();
    assert_eq!(config.amqp.channel_max, 7);
    assert_eq!(config.amqp.max_frame_size, 262_144);
    assert_eq!(config.amqp.container_id, "sluice");
}

#[test]
fn unknown_field_is_named_in_the_error() {
    let error = Config::from_toml("[amqp]\nmax_frame_sise = 1024\n").unwrap_err();
    assert!(matches!(error, ConfigError::Parse(_)));
    let message = error.to_string();
    assert!(
        message.contains("unknown field `max_frame_sise`"),
        "{message}"
    );
    assert!(message.contains("line 2"), "{message}");
}

#[test]
fn unknown_top_level_field_is_rejected() {
    let error = Config::from_toml("lisen = \"127.0.0.1:1\"\n").unwrap_err();
    assert!(
        error.to_string().contains("unknown field `lisen`"),
        "{error}"
    );
}

#[test]
fn wrong_type_and_bad_enum_are_rejected() {
    assert!(matches!(
        Config::from_toml("seed = \"many\"\n"),
        Err(ConfigError::Parse(_))
    ));
    let error = Config::from_toml("[log]\nformat = \"xml\"\n").unwrap_err();
    assert!(error.to_string().contains("xml"), "{error}");
}

#[test]
fn frame_size_below_the_amqp_minimum_is_rejected() {
    let error = Config::from_toml("[amqp]\nmax_frame_size = 511\n").unwrap_err();
    assert!(matches!(
        error,
        ConfigError::Invalid {
            field: "amqp.max_frame_size",
            ..
        }
    ));
    assert!(Config::from_toml("[amqp]\nmax_frame_size = 512\n").is_ok());
}

#[test]
fn empty_container_id_is_rejected() {
    let error = Config::from_toml("[amqp]\ncontainer_id = \"\"\n").unwrap_err();
    assert!(matches!(
        error,
        ConfigError::Invalid {
            field: "amqp.container_id",
            ..
        }
    ));
}

#[test]
fn users_are_loaded_with_parsed_hashes() {
    let text = users_toml(&[
        ("alice", &cheap_hash("wonderland")),
        ("bob", &cheap_hash("b")),
    ]);
    let config = Config::from_toml(&text).unwrap();
    let names: Vec<_> = config.users.iter().map(|user| user.name.as_str()).collect();
    assert_eq!(names, ["alice", "bob"]);
    assert!(
        config.users[0]
            .password_hash
            .as_ref()
            .unwrap()
            .verify(b"wonderland")
    );
    assert!(!config.users[0].password_hash.as_ref().unwrap().verify(b"b"));
}

#[test]
fn malformed_hash_is_an_error_naming_the_user() {
    let text = users_toml(&[("alice", &cheap_hash("a")), ("bob", "$argon2id$v=19$oops")]);
    let error = Config::from_toml(&text).unwrap_err();
    assert!(matches!(error, ConfigError::Parse(_)));
    let message = error.to_string();
    assert!(message.contains("user `bob`"), "{message}");
    assert!(message.contains("sluice passwd"), "{message}");
}

#[test]
fn a_user_needs_a_credential_of_either_kind() {
    let error = Config::from_toml("[[users]]\nname = \"alice\"\n").unwrap_err();
    assert!(
        error.to_string().contains("user `alice` has no credential"),
        "{error}"
    );
    // Unless a client certificate can log it in.
    let certificate_only = "[tls]\nclient_ca_file = \"ca.pem\"\n[[users]]\nname = \"alice\"\n";
    assert!(Config::from_toml(certificate_only).is_ok());
    let scram = crate::sasl::scram::ScramCredential::derive(b"pw", b"salt", 4096);
    let text = format!("[[users]]\nname = \"alice\"\nscram_sha256 = \"{scram}\"\n");
    let config = Config::from_toml(&text).unwrap();
    assert_eq!(config.users[0].scram_sha256.as_ref(), Some(&scram));
    assert_eq!(config.users[0].password_hash, None);
    let bad = "[[users]]\nname = \"bob\"\nscram_sha256 = \"SCRAM-SHA-256$1:x$y:z\"\n";
    let error = Config::from_toml(bad).unwrap_err().to_string();
    assert!(
        error.contains("user `bob`") && error.contains("sluice passwd --scram"),
        "{error}"
    );
}

#[test]
fn user_entries_take_no_unknown_fields() {
    let text = format!(
        "{}role = \"admin\"\n",
        users_toml(&[("alice", &cheap_hash("a"))])
    );
    let error = Config::from_toml(&text).unwrap_err();
    assert!(
        error.to_string().contains("unknown field `role`"),
        "{error}"
    );
}

#[test]
fn user_names_must_be_usable_and_distinct() {
    let hash = cheap_hash("pw");
    for names in [&["alice", "alice"][..], &[""], &["a\0b"]] {
        let entries: Vec<_> = names.iter().map(|name| (*name, hash.as_str())).collect();
        assert_eq!(
            invalid_field(&users_toml(&entries)),
            "users.name",
            "{names:?}"
        );
    }
}

#[test]
fn user_limits_are_optional() {
    let text = format!(
        "{}max_connections = 2\nmax_links = 10\n",
        users_toml(&[("alice", &cheap_hash("a"))])
    );
    let config = Config::from_toml(&text).unwrap();
    let limits = config.users[0].limits;
    assert_eq!(limits.max_connections, Some(2));
    assert_eq!(limits.max_sessions, None);
    assert_eq!(limits.max_links, Some(10));
}

#[test]
fn permissions_are_loaded_with_every_operation_off_by_default() {
    let text = format!(
        "{}[[permissions]]\nuser = \"alice\"\npattern = \"orders.*\"\nsend = true\n",
        users_toml(&[("alice", &cheap_hash("a"))])
    );
    let config = Config::from_toml(&text).unwrap();
    assert_eq!(
        config.permissions,
        [Permission {
            user: "alice".to_owned(),
            pattern: "orders.*".to_owned(),
            send: true,
            ..Permission::default()
        }]
    );
}

#[test]
fn a_permission_names_a_known_user_and_a_pattern_that_parses() {
    let users = users_toml(&[("alice", &cheap_hash("a"))]);
    let entry = |user: &str, pattern: &str| {
        format!("{users}[[permissions]]\nuser = \"{user}\"\npattern = \"{pattern}\"\n")
    };
    assert_eq!(invalid_field(&entry("bob", "orders")), "permissions.user");
    // `anonymous` is a user only where ANONYMOUS is admitted beside accounts.
    assert_eq!(
        invalid_field(&entry("anonymous", "orders")),
        "permissions.user"
    );
    let with_anonymous = format!("[auth]\nanonymous = true\n{}", entry("anonymous", "orders"));
    assert!(Config::from_toml(&with_anonymous).is_ok());
    for pattern in ["", "a.***", "re:orders.(eu"] {
        assert_eq!(
            invalid_field(&entry("alice", pattern)),
            "permissions.pattern",
            "{pattern:?}"
        );
    }
    assert!(Config::from_toml(&entry("alice", r"re:orders\\.(eu|us)")).is_ok());
    let error = Config::from_toml(&format!("{}send = 1\n", entry("alice", "a"))).unwrap_err();
    assert!(matches!(error, ConfigError::Parse(_)), "{error}");
    let error = Config::from_toml(&format!("{}write = true\n", entry("alice", "a"))).unwrap_err();
    assert!(
        error.to_string().contains("unknown field `write`"),
        "{error}"
    );
}

#[test]
fn debug_output_leaves_password_hashes_out() {
    let hash = cheap_hash("pw");
    let config = Config::from_toml(&users_toml(&[("alice", &hash)])).unwrap();
    let shown = format!("{config:?}");
    assert!(shown.contains("alice"), "{shown}");
    assert!(!shown.contains(&hash), "{shown}");
}

#[test]
fn repair_is_not_a_file_setting() {
    let error = Config::from_toml("repair = true\n").unwrap_err();
    assert!(
        error.to_string().contains("unknown field `repair`"),
        "{error}"
    );
}

#[test]
fn queue_defaults_resolve_to_unlimited_and_none() {
    let settings = Config::default().queue_settings("anything");
    assert_eq!(
        settings,
        QueueSettings {
            auto_create: true,
            durable: true,
            persist: Persist::Durable,
            max_length: None,
            max_bytes: None,
            overflow: Overflow::RejectPublish,
            delivery_limit: Some(20),
            dead_letter_queue: None,
            default_ttl: None,
            dedup: Some(DedupWindow {
                duration: Duration::from_secs(600),
                ids: 1_000_000,
            }),
            kind: QueueKind::Standard,
            message_groups: false,
            single_active_consumer: false,
        }
    );
}

const QUEUES: &str = r#"
    [queues]
    auto_create = false
    durable = false
    persist = "always"
    max_length = 10
    max_bytes = 2048
    overflow = "drop-head"
    delivery_limit = 0
    dead_letter_queue = "dlq"
    default_ttl_ms = 60000

    [[queue]]
    name = "orders"
    max_length = 100000
    dead_letter_queue = "orders.dlq"

    [[queue]]
    name = "audit"
    auto_create = true
    durable = true
    persist = "durable"
    max_length = 0
    max_bytes = 0
    overflow = "reject-publish"
    delivery_limit = 3
    dead_letter_queue = ""
    default_ttl_ms = 0

    [limits]
    memory_high_watermark_bytes = 0
    producer_credit = 1
"#;

#[test]
fn queues_section_sets_every_default() {
    let config = Config::from_toml(QUEUES).unwrap();
    assert_eq!(
        config.queue_settings("other"),
        QueueSettings {
            auto_create: false,
            durable: false,
            persist: Persist::Always,
            max_length: Some(10),
            max_bytes: Some(2048),
            overflow: Overflow::DropHead,
            delivery_limit: None,
            dead_letter_queue: Some("dlq".to_owned()),
            default_ttl: Some(Duration::from_secs(60)),
            dedup: Some(DedupWindow {
                duration: Duration::from_secs(600),
                ids: 1_000_000,
            }),
            kind: QueueKind::Standard,
            message_groups: false,
            single_active_consumer: false,
        }
    );
    assert_eq!(config.limits.memory_high_watermark(), None);
    assert_eq!(config.limits.producer_credit, 1);
}

#[test]
fn an_override_replaces_only_the_fields_it_names() {
    let config = Config::from_toml(QUEUES).unwrap();
    let orders = config.queue_settings("orders");
    assert_eq!(orders.max_length, Some(100_000));
    assert_eq!(orders.dead_letter_queue.as_deref(), Some("orders.dlq"));
    assert_eq!(orders.max_bytes, Some(2048));
    assert_eq!(orders.overflow, Overflow::DropHead);
    assert!(!orders.auto_create);
}

#[test]
fn an_override_can_set_every_field_including_back_to_unlimited() {
    let config = Config::from_toml(QUEUES).unwrap();
    assert_eq!(
        config.queue_settings("audit"),
        QueueSettings {
            auto_create: true,
            durable: true,
            persist: Persist::Durable,
            max_length: None,
            max_bytes: None,
            overflow: Overflow::RejectPublish,
            delivery_limit: Some(3),
            dead_letter_queue: None,
            default_ttl: None,
            dedup: Some(DedupWindow {
                duration: Duration::from_secs(600),
                ids: 1_000_000,
            }),
            kind: QueueKind::Standard,
            message_groups: false,
            single_active_consumer: false,
        }
    );
}

#[test]
fn overrides_match_names_exactly() {
    let config = Config::from_toml(QUEUES).unwrap();
    assert_eq!(config.queue_settings("Orders").max_length, Some(10));
    assert_eq!(config.queue_settings("orders.dlq").max_length, Some(10));
}

#[test]
fn the_default_dead_letter_queue_does_not_dead_letter_into_itself() {
    let config = Config::from_toml(QUEUES).unwrap();
    assert_eq!(config.queue_settings("dlq").dead_letter_queue, None);
}

#[test]
fn bad_enum_values_are_named() {
    for (text, value) in [
        ("[queues]\noverflow = \"drop-tail\"\n", "drop-tail"),
        ("[queues]\npersist = \"sometimes\"\n", "sometimes"),
        ("[[queue]]\nname = \"q\"\noverflow = \"drop\"\n", "drop"),
    ] {
        let error = Config::from_toml(text).unwrap_err();
        assert!(matches!(error, ConfigError::Parse(_)), "{text}");
        assert!(error.to_string().contains(value), "{error}");
    }
}

#[test]
fn negative_limits_and_unknown_queue_fields_are_rejected() {
    for text in [
        "[queues]\nmax_length = -1\n",
        "[queues]\nmax_lenght = 1\n",
        "[[queue]]\nname = \"q\"\nmax_lenght = 1\n",
        "[[queue]]\nmax_length = 1\n",
        "[limits]\nproducer_credits = 1\n",
    ] {
        assert!(
            matches!(Config::from_toml(text), Err(ConfigError::Parse(_))),
            "{text}"
        );
    }
}

#[test]
fn producer_credit_must_be_positive() {
    assert_eq!(
        invalid_field("[limits]\nproducer_credit = 0\n"),
        "limits.producer_credit"
    );
}

#[test]
fn queue_entries_must_be_named_once_and_not_dead_letter_into_themselves() {
    assert_eq!(invalid_field("[[queue]]\nname = \"\"\n"), "queue.name");
    assert_eq!(
        invalid_field("[[queue]]\nname = \"q\"\n[[queue]]\nname = \"q\"\n"),
        "queue.name"
    );
    assert_eq!(
        invalid_field("[[queue]]\nname = \"q\"\ndead_letter_queue = \"q\"\n"),
        "queue.dead_letter_queue"
    );
}

/// The complete example in docs/operations.md, with real credentials in
/// place of the elided ones, is a valid configuration: the reference stays
/// honest.
#[test]
fn the_documented_example_parses() {
    let doc = include_str!("../../../docs/operations.md");
    let section = doc.split("## Configuration file").nth(1).unwrap();
    let example = section.split("```toml\n").nth(1).unwrap();
    let example = example.split("```").next().unwrap();
    let elided = |key: &str| {
        example
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{key} = \"")))
            .and_then(|rest| rest.split('"').next())
            .unwrap()
    };
    let scram = crate::sasl::scram::ScramCredential::derive(b"pw", b"salt", 4096);
    let example = example
        .replace(elided("password_hash"), &cheap_hash("pw"))
        .replace(elided("scram_sha256"), &scram.to_string());
    let config = Config::from_toml(&example).unwrap();
    assert_eq!(config.users.len(), 1);
    assert_eq!(config.users[0].limits.max_links, Some(1000));
    assert_eq!(config.users[0].scram_sha256, Some(scram));
    assert_eq!(config.permissions.len(), 1);
    assert_eq!(config.queue_settings("orders").max_length, Some(100_000));
}

#[test]
fn storage_settings_parse_and_are_validated() {
    let config = Config::from_toml(
        r#"
        [storage]
        segment_bytes_max = 1048576
        snapshot_every_records = 500
        disk_reserve_bytes = 0
        "#,
    )
    .unwrap();
    assert_eq!(config.storage.segment_bytes_max, 1 << 20);
    assert_eq!(config.storage.snapshot_every_records, 500);
    assert_eq!(config.storage.disk_reserve_bytes, 0);
    assert_eq!(Config::default().storage.disk_reserve_bytes, 16 << 20);
    assert!(Config::from_toml("[storage]\nsnapshot_every_records = 0\n").is_err());
    assert!(Config::from_toml("[storage]\nsegment_bytes_max = 10\n").is_err());
}

#[test]
fn a_cluster_is_configured_with_peers_and_a_secret() {
    let config = Config::from_toml(
        r#"
        [cluster]
        node_id = 2
        listen = "0.0.0.0:5701"
        secret = "0123456789abcdef"

        [[cluster.peer]]
        id = 1
        address = "node1:5700"

        [[cluster.peer]]
        id = 3
        address = "10.0.0.3:5702"
        "#,
    )
    .unwrap();
    assert!(config.cluster.is_clustered());
    assert_eq!(config.cluster.node_id, 2);
    assert_eq!(config.cluster.listen, "0.0.0.0:5701".parse().unwrap());
    assert_eq!(
        config.cluster.peers,
        [
            Peer {
                id: 1,
                address: "node1:5700".into()
            },
            Peer {
                id: 3,
                address: "10.0.0.3:5702".into()
            }
        ]
    );
    assert!(!Config::default().cluster.is_clustered());
}

#[test]
fn cluster_mistakes_are_named() {
    let peer =
        |id: u64, address: &str| format!("[[cluster.peer]]\nid = {id}\naddress = \"{address}\"\n");
    let secret = "[cluster]\nsecret = \"0123456789abcdef\"\n";
    assert_eq!(invalid_field("[cluster]\nnode_id = 0\n"), "cluster.node_id");
    assert_eq!(
        invalid_field(&format!("{secret}{}", peer(1, "a:1"))),
        "cluster.peer.id",
        "the node's own id"
    );
    assert_eq!(
        invalid_field(&format!("{secret}{}{}", peer(2, "a:1"), peer(2, "b:1"))),
        "cluster.peer.id"
    );
    assert_eq!(
        invalid_field(&format!("{secret}{}", peer(2, "node2"))),
        "cluster.peer.address"
    );
    assert_eq!(
        invalid_field(&format!(
            "[cluster]\nsecret = \"short\"\n{}",
            peer(2, "a:1")
        )),
        "cluster.secret"
    );
}

#[test]
fn peers_parse_from_the_flag_form() {
    assert_eq!(
        "3=10.0.0.3:5700".parse::<Peer>(),
        Ok(Peer {
            id: 3,
            address: "10.0.0.3:5700".into()
        })
    );
    assert!("10.0.0.3:5700".parse::<Peer>().is_err());
    assert!("x=10.0.0.3:5700".parse::<Peer>().is_err());
}

#[test]
fn queue_types_are_set_per_queue_and_need_what_they_key_on() {
    let config = Config::from_toml(
        r#"
        [[queue]]
        name = "prices"
        type = "last-value"
        last_value_key = "instrument"

        [[queue]]
        name = "orders"
        type = "priority"
        message_groups = true
        single_active_consumer = true
        "#,
    )
    .unwrap();
    let prices = config.queue_settings("prices");
    assert_eq!(prices.kind, QueueKind::LastValue("instrument".into()));
    let orders = config.queue_settings("orders");
    assert_eq!(orders.kind, QueueKind::Priority(PRIORITY_LEVELS_DEFAULT));
    assert!(orders.message_groups && orders.single_active_consumer);
    assert_eq!(config.queue_settings("other").kind, QueueKind::Standard);
    assert_eq!(
        invalid_field("[[queue]]\nname = \"p\"\ntype = \"last-value\"\n"),
        "queue.last_value_key"
    );
    assert_eq!(
        invalid_field("[[queue]]\nname = \"p\"\ntype = \"priority\"\npriority_levels = 0\n"),
        "queue.priority_levels"
    );
}
