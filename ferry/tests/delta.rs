//! Delta uploads against a real `ferryd` with the real `ferry`: bit-exact results after random
//! and adversarial changes, only the changed blocks on the wire, damaged block hashes caught,
//! damaged base data caught (by the next download, or at commit with `verify_kept_data`),
//! volumes without block hashes, and kill -9 of either side at random points never leaving a
//! mixed version.

mod common;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::Duration;

use common::{Daemon, ferry, random_file, run_json, write_at};
use serde_json::Value;

/// The block size ferryd keeps hashes for (256 KiB).
const BLOCK: u64 = 256 * 1024;

fn content_hash(path: &Path) -> String {
    blake3::hash(&std::fs::read(path).unwrap())
        .to_hex()
        .to_string()
}

/// `ferry --json vol upload FILE NAME --overwrite` (a delta unless `--full` is in `more`).
fn upload(daemon: &Daemon, file: &Path, name: &str, more: &[&str]) -> Value {
    let file = file.to_str().unwrap();
    let mut args = vec!["vol", "upload", file, name, "--overwrite"];
    args.extend_from_slice(more);
    run_json(daemon, &args)
}

/// Downloads the volume and checks it is byte for byte the file.
fn assert_holds(daemon: &Daemon, name: &str, file: &Path, dir: &Path) {
    let copy = dir.join("check.img");
    let _ = std::fs::remove_file(&copy);
    run_json(daemon, &["vol", "download", name, copy.to_str().unwrap()]);
    assert!(
        std::fs::read(&copy).unwrap() == std::fs::read(file).unwrap(),
        "volume {name} is not the file"
    );
}

/// `ferry vol upload FILE disk --overwrite` started, not waited for (to be killed).
fn spawn_upload(daemon: &Daemon, file: &Path) -> std::process::Child {
    ferry(daemon)
        .args([
            "vol",
            "upload",
            file.to_str().unwrap(),
            "disk",
            "--overwrite",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

fn punch_hole(path: &Path, offset: u64, len: u64) {
    let file = OpenOptions::new().write(true).open(path).unwrap();
    // SAFETY: fallocate on a file we opened; it only deallocates that range.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset as i64,
            len as i64,
        )
    };
    assert_eq!(
        rc,
        0,
        "punching a hole: {}",
        std::io::Error::last_os_error()
    );
}

fn allocated(path: &Path) -> u64 {
    std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(path).unwrap()) * 512
}

/// The bytes a delta may send for `changed` blocks: each at most one block of data.
fn at_most(changed: u64) -> u64 {
    changed * BLOCK
}

#[test]
fn a_delta_upload_is_bit_exact_and_sends_only_the_changed_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&dir.path().join("data"), None);
    let file = dir.path().join("disk.img");
    // 40 blocks and a partial one, with a hole of 3 blocks in the middle.
    let size = 40 * BLOCK + 1000;
    random_file(&file, size, 1);
    punch_hole(&file, 10 * BLOCK, 3 * BLOCK);
    let first = upload(&daemon, &file, "disk", &[]);
    assert_eq!(first["kept_bytes"], 0, "{first}");
    assert_eq!(first["volume"]["checksum"], content_hash(&file));

    let mut seed = 7u8;
    let mut random_bytes = |n: usize| {
        seed = seed.wrapping_add(1);
        let mut out = vec![0; n];
        blake3::Hasher::new()
            .update(&[seed])
            .finalize_xof()
            .fill(&mut out);
        out
    };
    // Each step changes the file and says how many blocks at most differ from the last upload.
    type Step<'a> = (
        &'a str,
        u64,
        Box<dyn Fn(&Path, &mut dyn FnMut(usize) -> Vec<u8>)>,
    );
    let steps: Vec<Step> = vec![
        ("nothing changed", 0, Box::new(|_, _| {})),
        ("first byte", 1, Box::new(|f, r| write_at(f, 0, &r(1)))),
        (
            "last byte of the partial last block",
            1,
            Box::new(|f, r| {
                let len = std::fs::metadata(f).unwrap().len();
                write_at(f, len - 1, &r(1));
            }),
        ),
        (
            "scattered: three blocks, one across a boundary",
            4,
            Box::new(|f, r| {
                write_at(f, 5 * BLOCK + 17, &r(100));
                write_at(f, 20 * BLOCK - 50, &r(100));
                write_at(f, 33 * BLOCK + 4096, &r(4096));
            }),
        ),
        (
            "a data block becomes a hole",
            1,
            Box::new(|f, _| punch_hole(f, 30 * BLOCK, BLOCK)),
        ),
        (
            "the hole becomes data again",
            1,
            Box::new(|f, r| write_at(f, 30 * BLOCK, &r(BLOCK as usize))),
        ),
        (
            "data written into the old hole",
            1,
            Box::new(|f, r| write_at(f, 11 * BLOCK + 3, &r(3))),
        ),
        (
            "grows by one and a half blocks",
            3,
            Box::new(|f, r| {
                let len = std::fs::metadata(f).unwrap().len();
                write_at(f, len, &r((BLOCK + BLOCK / 2) as usize));
            }),
        ),
        (
            "shrinks to the middle of a block",
            1,
            Box::new(|f, _| {
                let file = OpenOptions::new().write(true).open(f).unwrap();
                file.set_len(25 * BLOCK + 12345).unwrap();
            }),
        ),
        (
            "shrinks to a block boundary",
            0,
            Box::new(|f, _| {
                let file = OpenOptions::new().write(true).open(f).unwrap();
                file.set_len(20 * BLOCK).unwrap();
            }),
        ),
    ];
    for (what, changed, change) in steps {
        change(&file, &mut random_bytes);
        let size = std::fs::metadata(&file).unwrap().len();
        let reply = upload(&daemon, &file, "disk", &[]);
        assert_eq!(reply["volume"]["checksum"], content_hash(&file), "{what}");
        assert_eq!(reply["volume"]["size"], size, "{what}");
        let sent = reply["bytes_sent"].as_u64().unwrap();
        let kept = reply["kept_bytes"].as_u64().unwrap();
        let holes = reply["hole_bytes"].as_u64().unwrap();
        assert!(
            sent <= at_most(changed),
            "{what}: sent {sent} bytes: {reply}"
        );
        assert_eq!(sent + kept + holes, size, "{what}: {reply}");
        assert!(
            kept >= size.saturating_sub(at_most(changed + 3)),
            "{what}: {reply}"
        );
        assert!(reply["hash_bytes"].as_u64().unwrap() > 0, "{what}: {reply}");
        assert_holds(&daemon, "disk", &file, dir.path());
    }
    // The volume kept its holes through the deltas: the 3-block hole (less what was written
    // into it) takes no space.
    let stored = dir.path().join("data/volumes/disk");
    assert!(allocated(&stored) < std::fs::metadata(&stored).unwrap().len());

    // --full sends everything again.
    let full = upload(&daemon, &file, "disk", &["--full"]);
    assert_eq!(full["kept_bytes"], 0, "{full}");
    assert_eq!(full["hash_bytes"], 0, "{full}");
    assert_eq!(full["volume"]["checksum"], content_hash(&file));
}

#[test]
fn damaged_block_hashes_fall_back_to_a_full_upload() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&dir.path().join("data"), None);
    let file = dir.path().join("disk.img");
    random_file(&file, 16 * BLOCK, 2);
    upload(&daemon, &file, "disk", &[]);
    let blocks = dir.path().join("data/meta/disk.blocks");

    // A flipped bit in a stored hash: the list no longer merges into the checksum, the node
    // says so and the client sends in full, correctly.
    let mut damaged = std::fs::read(&blocks).unwrap();
    damaged[64 + 5 * 32] ^= 1;
    std::fs::write(&blocks, &damaged).unwrap();
    write_at(&file, 3 * BLOCK, b"changed");
    let reply = upload(&daemon, &file, "disk", &[]);
    assert_eq!(reply["kept_bytes"], 0, "{reply}");
    assert_eq!(reply["volume"]["checksum"], content_hash(&file));
    assert_holds(&daemon, "disk", &file, dir.path());

    // A volume without block hashes (made by an older ferryd): a full upload, which writes
    // them, so the next one is a delta again.
    std::fs::remove_file(&blocks).unwrap();
    write_at(&file, 0, b"older node");
    let reply = upload(&daemon, &file, "disk", &[]);
    assert_eq!(reply["kept_bytes"], 0, "{reply}");
    assert!(blocks.exists());
    write_at(&file, BLOCK, b"delta again");
    let reply = upload(&daemon, &file, "disk", &[]);
    assert_eq!(reply["kept_bytes"].as_u64().unwrap(), 15 * BLOCK, "{reply}");
    assert_holds(&daemon, "disk", &file, dir.path());
}

/// Flips a bit of the stored volume at `offset`, as bit rot would, its block hashes intact.
fn rot(volume: &Path, offset: u64) {
    let stored = File::open(volume).unwrap();
    let mut byte = [0u8; 1];
    stored.read_exact_at(&mut byte, offset).unwrap();
    drop(stored);
    // Volumes are read-only by intent, not by mode: the test writes it as bit rot would.
    write_at(volume, offset, &[byte[0] ^ 0x40]);
}

#[test]
fn damaged_base_data_is_caught_by_the_next_download_or_at_commit_with_verify_kept_data() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("disk.img");
    random_file(&file, 16 * BLOCK, 2);

    // By default a delta takes kept blocks by their stored hashes: the damaged block is
    // carried into the new version, whose record is the client's content...
    let data = dir.path().join("data");
    let daemon = Daemon::start(&data, None);
    upload(&daemon, &file, "disk", &[]);
    rot(&data.join("volumes/disk"), 9 * BLOCK + 1);
    write_at(&file, 12 * BLOCK, b"changed");
    let reply = upload(&daemon, &file, "disk", &[]);
    assert_eq!(reply["kept_bytes"].as_u64().unwrap(), 15 * BLOCK, "{reply}");
    assert_eq!(reply["volume"]["checksum"], content_hash(&file));
    // ...and a download, which checks the bytes against that record, refuses it and writes
    // nothing.
    let copy = dir.path().join("copy.img");
    let refused = common::run(
        &daemon,
        &["--json", "vol", "download", "disk", copy.to_str().unwrap()],
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(8), "{stderr}");
    let error: Value = serde_json::from_slice(&refused.stderr).expect("JSON on failure");
    assert!(
        error.to_string().contains("damaged"),
        "the error says what happened: {error}"
    );
    assert!(!copy.exists(), "nothing written");
    // A full upload repairs it.
    upload(&daemon, &file, "disk", &["--full"]);
    assert_holds(&daemon, "disk", &file, dir.path());
    drop(daemon);

    // With `verify_kept_data` the node reads what it keeps: the whole-content BLAKE3 check
    // refuses the delta's commit, and the client sends in full.
    let data = dir.path().join("verifying");
    let config = dir.path().join("verifying.toml");
    std::fs::write(&config, "[store]\nverify_kept_data = true\n").unwrap();
    let daemon = Daemon::start(&data, Some(&config));
    upload(&daemon, &file, "disk", &[]);
    rot(&data.join("volumes/disk"), 9 * BLOCK + 1);
    write_at(&file, 12 * BLOCK, b"changed again");
    let reply = upload(&daemon, &file, "disk", &[]);
    assert_eq!(
        reply["kept_bytes"], 0,
        "the retry is a full upload: {reply}"
    );
    assert_eq!(reply["volume"]["checksum"], content_hash(&file));
    assert_holds(&daemon, "disk", &file, dir.path());
}

/// The volume's checksum on the node as it is now.
fn stored_checksum(daemon: &Daemon, name: &str) -> String {
    run_json(daemon, &["vol", "info", name])["checksum"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn kill_9_of_the_node_or_the_client_mid_delta_leaves_the_old_version_or_the_new() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = common::frequent_progress_config(dir.path());
    let mut daemon = Daemon::start(&data, Some(&config));
    let old = dir.path().join("old.img");
    let size = 256 * BLOCK;
    random_file(&old, size, 3);
    upload(&daemon, &old, "disk", &[]);
    let old_sum = content_hash(&old);
    // The new version differs in every fourth block, so the delta both copies and receives
    // throughout.
    let new = dir.path().join("new.img");
    std::fs::copy(&old, &new).unwrap();
    for block in (0..256).step_by(4) {
        write_at(&new, block * BLOCK + 99, &[block as u8; 4096]);
    }
    let new_sum = content_hash(&new);

    // Kill points spread over the transfer, reproducibly: the assertion must hold whatever
    // the point, so a fixed spread of delays is enough to visit early, middle and late.
    for (round, delay_ms) in [5u64, 40, 120, 300, 15, 80].into_iter().enumerate() {
        let kill_node = round % 2 == 0;
        // A killed client may have sent its finish already: the node then still commits, so
        // the state is looked at once the node says how the upload ended.
        let watcher = (!kill_node).then(|| common::EventWatcher::start(&daemon));
        let mut child = spawn_upload(&daemon, &new);
        // The client is killed once its upload is under way (the node's first progress
        // event), so the node always has an upload to end, then after the round's delay.
        if let Some(watcher) = &watcher {
            watcher.wait_for("progress", "disk", Duration::from_secs(60));
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        if kill_node {
            daemon.kill9();
            let _ = child.wait();
            daemon = Daemon::start(&data, Some(&config));
        } else {
            let _ = child.kill();
            let _ = child.wait();
            let ended = ["finished", "failed"];
            let watcher = watcher.expect("started for a client kill");
            watcher.wait_for_one_of(&ended, "disk", Duration::from_secs(60));
        }
        let now = stored_checksum(&daemon, "disk");
        assert!(
            now == old_sum || now == new_sum,
            "round {round} (kill {}) left blake3 {now}",
            if kill_node { "node" } else { "client" }
        );
        let expected = if now == old_sum { &old } else { &new };
        assert_holds(&daemon, "disk", expected, dir.path());
        // Back to the old version for the next round, by a delta too.
        upload(&daemon, &old, "disk", &[]);
        assert_eq!(stored_checksum(&daemon, "disk"), old_sum);
    }
}

/// `ferry --json vol download NAME FILE --force` (a delta onto FILE unless `--full`).
fn download(daemon: &Daemon, name: &str, file: &Path, more: &[&str]) -> Value {
    let mut args = vec!["vol", "download", name, file.to_str().unwrap(), "--force"];
    args.extend_from_slice(more);
    run_json(daemon, &args)
}

#[test]
fn a_delta_download_updates_a_file_to_the_volume_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&dir.path().join("data"), None);
    let image = dir.path().join("image.img");
    random_file(&image, 30 * BLOCK + 777, 4);
    punch_hole(&image, 4 * BLOCK, 2 * BLOCK);
    upload(&daemon, &image, "disk", &[]);
    let local = dir.path().join("local.img");
    download(&daemon, "disk", &local, &[]);
    assert_eq!(content_hash(&local), content_hash(&image));

    // The volume moves on in three blocks; the local copy follows with three blocks' data.
    write_at(&image, 0, b"first block");
    write_at(&image, 14 * BLOCK + 5, b"middle");
    write_at(&image, 30 * BLOCK + 700, b"last, partial");
    upload(&daemon, &image, "disk", &[]);
    let reply = download(&daemon, "disk", &local, &[]);
    assert_eq!(content_hash(&local), content_hash(&image));
    assert_eq!(reply["checksum"], content_hash(&image));
    assert_eq!(
        reply["kept_bytes"],
        30 * BLOCK + 777 - (2 * BLOCK + 777),
        "{reply}"
    );
    assert!(reply["hash_bytes"].as_u64().unwrap() > 0, "{reply}");

    // Local files that drifted: longer, shorter, a hole where the volume has data, data
    // where it has a hole, bytes changed here and there. Each time the result is the volume.
    type Drift = Box<dyn Fn(&Path)>;
    let drifts: Vec<(&str, Drift)> = vec![
        (
            "longer",
            Box::new(|f| write_at(f, 40 * BLOCK, b"beyond the end")),
        ),
        (
            "shorter",
            Box::new(|f| {
                OpenOptions::new()
                    .write(true)
                    .open(f)
                    .unwrap()
                    .set_len(9 * BLOCK + 3)
                    .unwrap()
            }),
        ),
        (
            "a hole over data",
            Box::new(|f| punch_hole(f, 20 * BLOCK, BLOCK)),
        ),
        (
            "data over a hole",
            Box::new(|f| write_at(f, 5 * BLOCK, b"not a hole")),
        ),
        (
            "scattered bytes",
            Box::new(|f| {
                for at in [1, 7 * BLOCK - 1, 7 * BLOCK, 29 * BLOCK + 100] {
                    write_at(f, at, &[0xa5]);
                }
            }),
        ),
        (
            "empty",
            Box::new(|f| {
                OpenOptions::new()
                    .write(true)
                    .open(f)
                    .unwrap()
                    .set_len(0)
                    .unwrap()
            }),
        ),
    ];
    for (what, drift) in drifts {
        drift(&local);
        let reply = download(&daemon, "disk", &local, &[]);
        assert_eq!(content_hash(&local), content_hash(&image), "{what}");
        assert_eq!(reply["checksum"], content_hash(&image), "{what}");
    }
    // The volume's holes stay holes in the file.
    assert!(allocated(&local) < std::fs::metadata(&local).unwrap().len());
    // --full fetches everything.
    let full = download(&daemon, "disk", &local, &["--full"]);
    assert_eq!(full["kept_bytes"], 0, "{full}");
    assert_eq!(content_hash(&local), content_hash(&image));

    // Killed part way, a delta download leaves the old file whole (the new one is assembled
    // beside it and renamed only once verified).
    let old = dir.path().join("old.img");
    std::fs::copy(&local, &old).unwrap();
    let before = content_hash(&local);
    random_file(&image, 30 * BLOCK + 777, 5);
    upload(&daemon, &image, "disk", &[]);
    for delay_ms in [3u64, 30, 90] {
        let mut child = ferry(&daemon)
            .args([
                "vol",
                "download",
                "disk",
                local.to_str().unwrap(),
                "--force",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        let now = content_hash(&local);
        assert!(
            now == before || now == content_hash(&image),
            "a mixed file after {delay_ms} ms"
        );
        std::fs::copy(&old, &local).unwrap();
    }
}

#[test]
fn an_interrupted_delta_upload_resumes_and_a_resume_with_another_file_keeps_the_partial() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::frequent_progress_config(dir.path());
    let daemon = Daemon::start(&dir.path().join("data"), Some(&config));
    let old = dir.path().join("old.img");
    random_file(&old, 512 * BLOCK, 6);
    upload(&daemon, &old, "disk", &[]);
    let new = dir.path().join("new.img");
    std::fs::copy(&old, &new).unwrap();
    for block in (0..512).step_by(2) {
        write_at(&new, block * BLOCK, b"every other block changed");
    }

    // The connection is lost mid-delta (the client killed after the node's first progress
    // event): the node keeps the partial upload.
    let watcher = common::EventWatcher::start(&daemon);
    let mut child = spawn_upload(&daemon, &new);
    watcher.wait_for("progress", "disk", Duration::from_secs(60));
    child.kill().unwrap();
    child.wait().unwrap();
    watcher.wait_for("failed", "disk", Duration::from_secs(60));
    let status = |daemon: &Daemon| {
        let partial = daemon.partial_files();
        partial.contains(&"disk.part".to_owned())
    };
    assert!(status(&daemon), "the partial upload was not kept");

    // Resuming with another file is refused up front (exit 8), and the partial stays.
    let other = dir.path().join("other.img");
    random_file(&other, 512 * BLOCK, 7);
    let refused = ferry(&daemon)
        .args([
            "vol",
            "upload",
            other.to_str().unwrap(),
            "disk",
            "--overwrite",
            "--resume",
        ])
        .output()
        .unwrap();
    assert_eq!(
        refused.status.code(),
        Some(8),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("does not start as your file does"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(
        status(&daemon),
        "a refused resume discarded the partial upload"
    );
    assert_eq!(stored_checksum(&daemon, "disk"), content_hash(&old));

    // With the right file it completes, bit for bit.
    let resumed = upload(&daemon, &new, "disk", &["--resume"]);
    assert!(resumed["resumed_from"].as_u64().unwrap() > 0, "{resumed}");
    assert_eq!(resumed["volume"]["checksum"], content_hash(&new));
    assert_holds(&daemon, "disk", &new, dir.path());
}
