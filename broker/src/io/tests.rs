//! The seam's contract, written once against [`Io`] and checked on every
//! implementation, so that code which passes under turmoil behaves the same
//! on tokio.

use std::io::{ErrorKind, SeekFrom};
use std::path::Path;
use std::time::Duration;

use rand_chacha::rand_core::RngCore;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::*;

/// Append, truncate, rename, remove, list and sync, as a log and its
/// snapshots will use them.
async fn file_contract<I: Io>(io: &I, root: &Path) {
    let dir = root.join("node");
    io.create_dir_all(&dir).await.unwrap();
    io.sync_dir(root).await.unwrap();

    let log = dir.join("log");
    let mut file = io.open(&log, OpenMode::Append).await.unwrap();
    file.write_all(b"hello ").await.unwrap();
    file.sync_all().await.unwrap();
    drop(file);

    // Reopened for append: reads start at the beginning, writes still land
    // at the end.
    let mut file = io.open(&log, OpenMode::Append).await.unwrap();
    let mut head = [0; 5];
    file.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"hello");
    file.write_all(b"world").await.unwrap();
    file.sync_all().await.unwrap();
    assert_eq!(io.read_file(&log).await.unwrap(), b"hello world");

    file.set_len(5).await.unwrap();
    file.sync_all().await.unwrap();
    assert_eq!(io.read_file(&log).await.unwrap(), b"hello");
    drop(file);

    let temporary = dir.join("snapshot.tmp");
    let snapshot = dir.join("snapshot");
    let mut file = io.open(&temporary, OpenMode::Truncate).await.unwrap();
    file.write_all(b"version 1").await.unwrap();
    file.seek(SeekFrom::Start(0)).await.unwrap();
    let mut written = String::new();
    file.read_to_string(&mut written).await.unwrap();
    assert_eq!(written, "version 1");
    file.sync_all().await.unwrap();
    drop(file);
    io.rename(&temporary, &snapshot).await.unwrap();
    io.sync_dir(&dir).await.unwrap();
    assert_eq!(
        io.read_dir(&dir).await.unwrap(),
        vec![log.clone(), snapshot.clone()]
    );

    let mut file = io.open(&snapshot, OpenMode::Truncate).await.unwrap();
    file.write_all(b"2").await.unwrap();
    file.sync_all().await.unwrap();
    assert_eq!(io.read_file(&snapshot).await.unwrap(), b"2");

    io.remove_file(&log).await.unwrap();
    io.sync_dir(&dir).await.unwrap();
    assert_eq!(io.read_dir(&dir).await.unwrap(), vec![snapshot]);
    let Err(missing) = io.open(&log, OpenMode::Read).await else {
        panic!("opened a removed file");
    };
    assert_eq!(missing.kind(), ErrorKind::NotFound);
}

/// Port 0 binds a real port, and bytes cross a connection both ways.
async fn net_contract<I: Io>(io: &I) {
    let listener = io.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let bound = listener.local_addr().unwrap();
    assert_ne!(bound.port(), 0);

    let bound = bound.to_string();
    let (client, accepted) = tokio::join!(io.connect(&bound), listener.accept());
    let mut client = client.unwrap();
    let (mut server, peer) = accepted.unwrap();
    assert!(peer.ip().is_loopback());

    client.write_all(b"ping").await.unwrap();
    let mut request = [0; 4];
    server.read_exact(&mut request).await.unwrap();
    assert_eq!(&request, b"ping");
    server.write_all(b"pong").await.unwrap();
    let mut reply = [0; 4];
    client.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"pong");
}

/// `now` follows tokio's timer (virtual here), and spawned tasks run.
async fn clock_and_spawn_contract<I: Io>(io: &I) {
    let before = io.now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(io.now() - before >= Duration::from_secs(3));

    let deadline = io.now() + Duration::from_millis(250);
    sleep_until(deadline).await;
    assert!(io.now() >= deadline);

    let task = io.spawn(async { 6 * 7 });
    assert_eq!(task.await.unwrap(), 42);
}

#[tokio::test]
async fn tokio_files_follow_the_contract() {
    let root = tempfile::tempdir().unwrap();
    file_contract(&TokioIo, root.path()).await;
}

#[tokio::test]
async fn tokio_network_follows_the_contract() {
    net_contract(&TokioIo).await;
}

#[tokio::test(start_paused = true)]
async fn tokio_clock_and_spawn_follow_the_contract() {
    clock_and_spawn_contract(&TokioIo).await;
}

/// Real file systems tell their free space, and a disk full on demand has
/// none.
#[cfg(unix)]
#[tokio::test]
async fn tokio_tells_the_free_space_and_a_full_disk_has_none() {
    let root = tempfile::tempdir().unwrap();
    let free = TokioIo.available_bytes(root.path()).await.unwrap();
    assert!(free.is_some_and(|free| free > 0), "{free:?}");
    let faulty = faulty::FaultyIo::new(TokioIo);
    faulty.faults.fail_writes(Some(ErrorKind::StorageFull));
    assert_eq!(faulty.available_bytes(root.path()).await.unwrap(), Some(0));
    faulty.faults.fail_writes(None);
    assert!(faulty.available_bytes(root.path()).await.unwrap().is_some());
    let missing = TokioIo.available_bytes(&root.path().join("missing")).await;
    assert_eq!(missing.map_err(|e| e.kind()), Err(ErrorKind::NotFound));
}

/// Reads fail once the reads allowed before the error have passed, and
/// succeed again when the fault is off.
#[tokio::test]
async fn failed_reads_come_after_the_reads_allowed() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("file");
    let faulty = faulty::FaultyIo::new(TokioIo);
    replace_file(&faulty, &path, b"contents").await.unwrap();
    faulty.faults.fail_reads(Some((ErrorKind::Other, 0)));
    let failed = faulty.read_file(&path).await;
    assert_eq!(failed.map_err(|e| e.kind()), Err(ErrorKind::Other));
    // One read of the contents passes; the one that finds the end fails.
    faulty.faults.fail_reads(Some((ErrorKind::Other, 1)));
    assert!(faulty.read_file(&path).await.is_err());
    faulty.faults.fail_reads(None);
    assert_eq!(faulty.read_file(&path).await.unwrap(), b"contents");
}

/// A damaged log write flips one bit of its last record, only in a
/// segment, only in a write of whole records, and fails the fsync after it.
#[tokio::test]
async fn a_damaged_log_write_flips_a_bit_of_its_last_record_and_fails_its_fsync() {
    let root = tempfile::tempdir().unwrap();
    let faulty = faulty::FaultyIo::new(TokioIo);
    let frame = |payload: &[u8]| {
        let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
        [&len[..], &[0; 4], payload].concat()
    };
    let frames = [frame(b"first"), frame(b"second")].concat();
    faulty.faults.damage_next_log_write(Some(3));
    // Not a segment: left alone.
    let other = root.path().join("votes");
    let mut file = faulty.open(&other, OpenMode::Append).await.unwrap();
    file.write_all(&frames).await.unwrap();
    file.sync_all().await.unwrap();
    let segment = root.path().join("0001.seg");
    let mut file = faulty.open(&segment, OpenMode::Append).await.unwrap();
    // Not whole records: left alone.
    file.write_all(b"\0\0\0\x09head").await.unwrap();
    file.sync_all().await.unwrap();
    assert!(faulty.faults.log_write_damage_armed());
    file.write_all(&frames).await.unwrap();
    assert!(!faulty.faults.log_write_damage_armed());
    assert!(file.sync_all().await.is_err());
    let written = faulty.read_file(&segment).await.unwrap();
    let written = &written[8..];
    let last = frame(b"first").len();
    assert_eq!(
        written[..last],
        frames[..last],
        "the first record is intact"
    );
    let flipped: Vec<usize> = (0..frames.len())
        .filter(|&i| written[i] != frames[i])
        .collect();
    assert_eq!(flipped, [last + 3]);
    // The fault was one write's: the next fsync succeeds.
    assert!(file.sync_all().await.is_ok());
}

#[test]
fn tokio_wall_clock_is_after_2024() {
    let january_2024_ms = 1_704_067_200_000;
    assert!(TokioIo.unix_time_ms() > january_2024_ms);
}

#[test]
fn same_seed_same_stream_and_different_seeds_differ() {
    let draw = |seed| {
        let mut rng = seeded_rng(seed);
        [rng.next_u64(), rng.next_u64(), rng.next_u64()]
    };
    assert_eq!(draw(7), draw(7));
    assert_ne!(draw(7), draw(8));
}

#[cfg(feature = "sim")]
mod turmoil {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::super::turmoil_io::SIM_EPOCH_UNIX_MS;
    use super::*;

    /// Runs `contract` as a turmoil client and fails the test if it fails.
    fn simulate<F>(contract: F)
    where
        F: Future<Output = ()> + 'static,
    {
        let mut sim = ::turmoil::Builder::new().rng_seed(1).build();
        sim.client("node", async move {
            contract.await;
            Ok(())
        });
        sim.run().unwrap();
    }

    /// A page file deleted at a recovery and made again by the replay
    /// reads back what was written to it since: without the directory
    /// synced between the two, turmoil's disk gave back zeros for what a
    /// checkpoint had synced (found by the simulator: a paged record read
    /// as zeros after a restart).
    #[test]
    fn a_page_file_made_again_after_a_recovery_reads_back_what_was_written() {
        simulate(async {
            let dir = Path::new("/data/pages");
            let mut store = TurmoilIo.page_store(dir);
            store.retain(&[]).unwrap();
            store.write(8, 0, &[1; 100]);
            store.checkpoint().unwrap().sync.run().unwrap();
            let mut store = TurmoilIo.page_store(dir);
            store.retain(&[]).unwrap();
            store.write(8, 0, &[2; 50]);
            store.checkpoint().unwrap().sync.run().unwrap();
            store.write(8, 50, &[3; 50]);
            let read = store.read(8, 0, 100).unwrap();
            assert_eq!(read[..50], [2; 50]);
            assert_eq!(read[50..], [3; 50]);
        });
    }

    /// Runs `before` on a host, crashes it (what was not synced is lost),
    /// then runs `after` on it; fails the test if either fails.
    fn across_a_crash<B, A>(before: fn() -> B, after: fn() -> A)
    where
        B: Future<Output = ()> + 'static,
        A: Future<Output = ()> + 'static,
    {
        let mut sim = ::turmoil::Builder::new().rng_seed(1).build();
        let crashed = Arc::new(AtomicBool::new(false));
        let done = Arc::new(tokio::sync::Notify::new());
        let (host_crashed, host_done) = (crashed.clone(), done.clone());
        sim.host("node", move || {
            let (crashed, done) = (host_crashed.clone(), host_done.clone());
            async move {
                if crashed.load(Ordering::SeqCst) {
                    after().await;
                } else {
                    before().await;
                }
                done.notify_one();
                std::future::pending::<()>().await;
                Ok(())
            }
        });
        for phase in ["before", "after"] {
            let done = done.clone();
            sim.client(phase, async move {
                done.notified().await;
                Ok(())
            });
            sim.run().unwrap();
            sim.crash("node");
            crashed.store(true, Ordering::SeqCst);
            sim.bounce("node");
        }
    }

    /// A page a checkpoint synced survives a crash: the checkpoint syncs
    /// the new segment's file and the directory that names it (without
    /// the directory's sync the file is gone after the crash).
    #[test]
    fn a_page_synced_by_a_checkpoint_survives_a_crash() {
        across_a_crash(
            || async {
                // As the log makes the data directory at start.
                TurmoilIo.create_dir_all(Path::new("/data")).await.unwrap();
                TurmoilIo.sync_dir(Path::new("/")).await.unwrap();
                let mut store = TurmoilIo.page_store(Path::new("/data/pages"));
                store.retain(&[]).unwrap();
                store.write(8, 0, &[1; 100]);
                store.checkpoint().unwrap().sync.run().unwrap();
            },
            || async {
                let mut store = TurmoilIo.page_store(Path::new("/data/pages"));
                store.retain(&[(8, 0, 100)]).unwrap();
                assert_eq!(store.read(8, 0, 100).unwrap(), [1; 100]);
            },
        );
    }

    #[test]
    fn turmoil_files_follow_the_contract() {
        simulate(async { file_contract(&TurmoilIo, Path::new("/data")).await });
    }

    #[test]
    fn turmoil_network_follows_the_contract() {
        simulate(async { net_contract(&TurmoilIo).await });
    }

    #[test]
    fn turmoil_clock_and_spawn_follow_the_contract() {
        simulate(async { clock_and_spawn_contract(&TurmoilIo).await });
    }

    #[test]
    fn turmoil_wall_clock_starts_at_the_fixed_epoch_and_follows_sim_time() {
        simulate(async {
            let start_ms = TurmoilIo.unix_time_ms();
            assert!((SIM_EPOCH_UNIX_MS..SIM_EPOCH_UNIX_MS + 1_000).contains(&start_ms));
            tokio::time::sleep(Duration::from_secs(2)).await;
            let slept_ms = TurmoilIo.unix_time_ms() - start_ms;
            assert!((2_000..2_010).contains(&slept_ms), "slept {slept_ms} ms");
        });
    }
}
