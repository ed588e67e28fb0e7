//! The volume store against real files in temporary directories.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use ferry_codec::Chunk;
use ferry_codec::proto::ErrorCode;
use ferry_store::{
    BlockHashes, Download, MAX_PAGE, PartialStatus, StoreConfig, StoreError, Upload, UploadOptions,
    VolumeStore,
};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn open(root: &Path) -> VolumeStore {
    VolumeStore::open(root, StoreConfig::default()).expect("open store")
}

/// Deterministic, non-repeating-looking content.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u64)
                .wrapping_mul(2_654_435_761)
                .rotate_left(seed as u32 % 64) as u8
                ^ seed
        })
        .collect()
}

fn data(bytes: &[u8]) -> Chunk {
    Chunk::Data(Bytes::copy_from_slice(bytes))
}

/// BLAKE3 of a stream of chunks, holes as zeros: what the store must compute.
fn checksum_of(chunks: &[Chunk]) -> [u8; 32] {
    let zeros = vec![0u8; MIB as usize];
    let mut hasher = blake3::Hasher::new();
    for chunk in chunks {
        match chunk {
            Chunk::Data(bytes) => {
                hasher.update(bytes);
            }
            Chunk::Hole(n) => {
                let mut n = *n;
                while n > 0 {
                    let k = n.min(MIB);
                    hasher.update(&zeros[..k as usize]);
                    n -= k;
                }
            }
            Chunk::Keep(_) => panic!("a KEEP has no content here"),
        }
    }
    *hasher.finalize().as_bytes()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn names(store: &VolumeStore) -> Vec<String> {
    store.list().unwrap().into_iter().map(|v| v.name).collect()
}

/// Reads a whole download into memory (holes as zeros) and returns it with the chunks seen.
fn drain(download: &mut Download, max: usize) -> (Vec<u8>, Vec<Chunk>) {
    let mut content = Vec::new();
    let mut chunks = Vec::new();
    while let Some(chunk) = download.next_chunk(max).unwrap() {
        match &chunk {
            Chunk::Data(bytes) => {
                assert!(!bytes.is_empty());
                assert!(bytes.len() <= max, "chunk of {} > max {max}", bytes.len());
                content.extend_from_slice(bytes);
            }
            Chunk::Hole(n) => {
                assert!(*n > 0);
                content.resize(content.len() + *n as usize, 0);
            }
            Chunk::Keep(_) => panic!("a download never yields KEEP"),
        }
        chunks.push(chunk);
    }
    (content, chunks)
}

fn upload_all(store: &VolumeStore, name: &str, content: &[u8], options: UploadOptions) -> Upload {
    let mut upload = store.begin_upload(name, options).unwrap();
    for piece in content.chunks(100_000) {
        upload.write(&data(piece)).unwrap();
    }
    upload
}

fn set_partial_updated(root: &Path, name: &str, updated: u64) {
    let path = root.join("partial").join(format!("{name}.json"));
    let mut json: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    json["updated"] = updated.into();
    fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
}

#[test]
fn layout_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = open(&root);
    assert_eq!(
        files_in(&root),
        ["meta", "partial", "store.lock", "volumes"]
    );
    assert_eq!(store.root(), root);
    assert_eq!(store.recovery_report().volumes, 0);
    assert!(!store.recovery_report().found_debris());
}

#[test]
fn create_list_info_delete() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let before = SystemTime::now() - Duration::from_secs(1);

    let big = store.create("b-volume", 10 * GIB).unwrap();
    assert_eq!(big.name, "b-volume");
    assert_eq!(big.size, 10 * GIB);
    assert!(
        big.allocated < MIB,
        "a created volume is sparse: {}",
        big.allocated
    );
    assert_eq!(big.checksum, None);
    assert!(big.created >= before && big.modified >= big.created);
    store.create("a.img", 0).unwrap();

    assert_eq!(names(&store), ["a.img", "b-volume"]);
    assert_eq!(store.info("b-volume").unwrap(), big);
    assert!(matches!(
        store.create("b-volume", 1),
        Err(StoreError::AlreadyExists { .. })
    ));
    assert_eq!(
        store.info("b-volume").unwrap().size,
        10 * GIB,
        "not replaced"
    );

    // The content of a created volume is zeros, read back as one hole.
    let mut download = store.open_download("b-volume", 0, None).unwrap();
    assert_eq!(
        download.next_chunk(1024).unwrap(),
        Some(Chunk::Hole(10 * GIB))
    );
    assert_eq!(download.next_chunk(1024).unwrap(), None);

    store.delete("a.img").unwrap();
    assert_eq!(names(&store), ["b-volume"]);
    assert!(matches!(
        store.info("a.img"),
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.delete("a.img"),
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.open_download("a.img", 0, None),
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(files_in(&dir.path().join("volumes")), ["b-volume"]);
    assert_eq!(files_in(&dir.path().join("meta")), ["b-volume.json"]);

    // Sizes no file can have.
    for size in [u64::MAX, i64::MAX as u64 + 1] {
        let err = store.create("huge", size).unwrap_err();
        assert_eq!(err.code(), ErrorCode::ResourceExhausted, "{err}");
    }
    assert_eq!(
        files_in(&dir.path().join("volumes")),
        ["b-volume"],
        "no temporaries left"
    );
}

#[test]
fn every_operation_validates_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for bad in ["../x", "a/b", ".hidden", "", "..", &"n".repeat(129)] {
        let invalid = |result: Result<(), StoreError>| {
            let err = result.unwrap_err();
            assert!(
                matches!(err, StoreError::InvalidName { .. }),
                "{bad:?}: {err}"
            );
            assert_eq!(err.code(), ErrorCode::BadRequest);
        };
        invalid(store.validate_name(bad));
        invalid(store.create(bad, 1).map(drop));
        invalid(store.info(bad).map(drop));
        invalid(store.delete(bad));
        invalid(store.begin_upload(bad, UploadOptions::default()).map(drop));
        invalid(store.resume_upload(bad).map(drop));
        invalid(store.upload_status(bad).map(drop));
        invalid(store.discard_upload(bad));
        invalid(store.open_download(bad, 0, None).map(drop));
    }
    // Nothing escaped the store.
    assert_eq!(
        files_in(dir.path()),
        ["meta", "partial", "store.lock", "volumes"]
    );
    assert!(files_in(&dir.path().join("partial")).is_empty());

    let short = VolumeStore::open(
        &dir.path().join("short"),
        StoreConfig {
            max_name_len: 4,
            ..StoreConfig::default()
        },
    )
    .unwrap();
    short.create("abcd", 1).unwrap();
    let err = short.create("abcde", 1).unwrap_err();
    assert!(err.to_string().contains("the limit is 4"), "{err}");
}

#[test]
fn upload_is_visible_only_after_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let content = pattern(3 * MIB as usize + 123, 7);
    let checksum = *blake3::hash(&content).as_bytes();
    let upload = upload_all(
        &store,
        "disk",
        &content,
        UploadOptions {
            expected_size: Some(content.len() as u64),
            expected_checksum: Some(checksum),
            overwrite: false,
            resumable: true,
            base: None,
        },
    );
    assert_eq!(upload.offset(), content.len() as u64);

    assert!(names(&store).is_empty());
    assert!(matches!(
        store.info("disk"),
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.open_download("disk", 0, None),
        Err(StoreError::NotFound { .. })
    ));
    assert!(files_in(&dir.path().join("volumes")).is_empty());
    let status = store.upload_status("disk").unwrap().unwrap();
    assert_eq!(status.offset, content.len() as u64);
    assert_eq!(status.expected_checksum, Some(checksum));
    assert!(status.in_progress);
    assert!(matches!(
        store.resume_upload("disk"),
        Err(StoreError::UploadInProgress { .. })
    ));
    assert!(matches!(
        store.begin_upload("disk", UploadOptions::default()),
        Err(StoreError::UploadInProgress { .. })
    ));

    let info = upload.commit().unwrap();
    assert_eq!(info.size, content.len() as u64);
    assert_eq!(info.checksum, Some(checksum));
    assert_eq!(
        info.checksum_hex().unwrap(),
        blake3::hash(&content).to_hex().as_str()
    );
    assert_eq!(store.info("disk").unwrap(), info);
    assert_eq!(names(&store), ["disk"]);
    assert_eq!(store.upload_status("disk").unwrap(), None);
    assert!(files_in(&dir.path().join("partial")).is_empty());
    assert_eq!(fs::read(dir.path().join("volumes/disk")).unwrap(), content);

    let mut download = store.open_download("disk", 0, None).unwrap();
    assert_eq!(download.volume(), &info);
    let (read, _) = drain(&mut download, 64 * 1024);
    assert_eq!(read, content);

    // Without overwrite, a second upload of the name is refused before any data is sent.
    assert!(matches!(
        store.begin_upload("disk", UploadOptions::default()),
        Err(StoreError::AlreadyExists { .. })
    ));
}

#[test]
fn checksum_mismatch_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let content = pattern(500_000, 1);
    let wrong = *blake3::hash(b"something else").as_bytes();
    let upload = upload_all(
        &store,
        "v",
        &content,
        UploadOptions {
            expected_checksum: Some(wrong),
            ..UploadOptions::default()
        },
    );
    match upload.commit().unwrap_err() {
        err @ StoreError::ChecksumMismatch { .. } => {
            let StoreError::ChecksumMismatch {
                ref expected,
                ref actual,
                ..
            } = err
            else {
                unreachable!()
            };
            assert_eq!(expected, &hex::encode(wrong));
            assert_eq!(actual, blake3::hash(&content).to_hex().as_str());
            assert_eq!(err.code(), ErrorCode::FailedPrecondition);
            assert!(err.to_string().contains("upload it again"), "{err}");
        }
        other => panic!("expected a checksum mismatch, got {other}"),
    }
    assert!(names(&store).is_empty());
    assert_eq!(store.upload_status("v").unwrap(), None);
    assert!(files_in(&dir.path().join("volumes")).is_empty());
    assert!(files_in(&dir.path().join("meta")).is_empty());
    assert!(files_in(&dir.path().join("partial")).is_empty());
}

#[test]
fn size_limits() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let options = UploadOptions {
        expected_size: Some(1000),
        ..UploadOptions::default()
    };

    // Past the expected size: refused whole, the upload stays usable where it was.
    let mut upload = store.begin_upload("v", options.clone()).unwrap();
    upload.write(&data(&[1; 600])).unwrap();
    let err = upload.write(&data(&[2; 600])).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::BeyondExpectedSize {
                expected: 1000,
                offset: 600,
                chunk: 600,
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        upload.write(&Chunk::Hole(401)),
        Err(StoreError::BeyondExpectedSize { .. })
    ));
    assert_eq!(upload.offset(), 600);
    upload.write(&Chunk::Hole(400)).unwrap();
    let info = upload.commit().unwrap();
    assert_eq!(info.size, 1000);
    let mut expected = vec![1u8; 600];
    expected.resize(1000, 0);
    assert_eq!(info.checksum, Some(*blake3::hash(&expected).as_bytes()));

    // Short of the expected size: the commit fails and the partial goes.
    let mut upload = store.begin_upload("w", options).unwrap();
    upload.write(&data(&[1; 999])).unwrap();
    assert!(matches!(
        upload.commit(),
        Err(StoreError::SizeMismatch {
            expected: 1000,
            actual: 999,
            ..
        })
    ));
    assert_eq!(store.upload_status("w").unwrap(), None);
    assert_eq!(names(&store), ["v"]);

    // Without an expected size anything goes, empty included.
    let upload = store
        .begin_upload("empty", UploadOptions::default())
        .unwrap();
    let info = upload.commit().unwrap();
    assert_eq!(info.size, 0);
    assert_eq!(info.checksum, Some(*blake3::hash(b"").as_bytes()));
}

/// `max_volume_size` bounds volumes however they are made: created, announced by an upload, or
/// grown by an upload's data and holes (a hole costs its sender 40 bytes on the wire but is
/// hashed here as zeros, so this is also the bound on an upload's CPU).
#[test]
fn max_volume_size() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        max_volume_size: 1 << 20,
        ..StoreConfig::default()
    };
    let store = VolumeStore::open(dir.path(), config).unwrap();
    let too_large = |result: Result<_, StoreError>, size| match result {
        Err(StoreError::TooLarge {
            size: s,
            limit: 1_048_576,
            ..
        }) if s == size => {}
        Err(other) => panic!("expected TooLarge, got {other}"),
        Ok(_) => panic!("expected TooLarge, got success"),
    };
    too_large(store.create("big", (1 << 20) + 1).map(drop), (1 << 20) + 1);
    store.create("fits", 1 << 20).unwrap();
    let announced = UploadOptions {
        expected_size: Some(1 << 30),
        ..UploadOptions::default()
    };
    too_large(
        store.begin_upload("announced", announced).map(drop),
        1 << 30,
    );

    // Unannounced: the chunk that would pass the limit is refused whole, even a huge hole.
    let mut upload = store
        .begin_upload("grown", UploadOptions::default())
        .unwrap();
    upload.write(&data(&[7; 4096])).unwrap();
    too_large(
        upload.write(&Chunk::Hole(1 << 50)).map(drop),
        4096 + (1 << 50),
    );
    too_large(upload.write(&Chunk::Hole(u64::MAX)).map(drop), u64::MAX);
    assert_eq!(upload.offset(), 4096);
    upload.abort().unwrap();
    assert_eq!(store.upload_status("grown").unwrap(), None);
    assert_eq!(names(&store), ["fits"]);
    let err = store.create("big", u64::MAX).unwrap_err();
    assert_eq!(err.code(), ErrorCode::ResourceExhausted, "{err}");
}

#[test]
fn abort_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let upload = upload_all(&store, "v", &pattern(300_000, 2), UploadOptions::default());
    upload.abort().unwrap();
    assert_eq!(store.upload_status("v").unwrap(), None);
    assert!(names(&store).is_empty());
    assert!(files_in(&dir.path().join("partial")).is_empty());
    assert!(matches!(
        store.resume_upload("v"),
        Err(StoreError::NoPartialUpload { .. })
    ));
    // The name is free again.
    store
        .begin_upload("v", UploadOptions::default())
        .unwrap()
        .abort()
        .unwrap();
}

#[test]
fn suspend_reopen_resume() {
    let dir = tempfile::tempdir().unwrap();
    let first = pattern(2 * MIB as usize + 17, 3);
    let second = pattern(MIB as usize, 4);
    let all = [data(&first), Chunk::Hole(5 * MIB), data(&second)];
    let size: u64 = all.iter().map(Chunk::len).sum();
    let checksum = checksum_of(&all);
    let options = UploadOptions {
        expected_size: Some(size),
        expected_checksum: Some(checksum),
        overwrite: false,
        resumable: true,
        base: None,
    };

    {
        let store = open(dir.path());
        let mut upload = store.begin_upload("vm", options.clone()).unwrap();
        upload.write(&all[0]).unwrap();
        upload.write(&all[1]).unwrap();
        upload.suspend().unwrap();
        let status = store.upload_status("vm").unwrap().unwrap();
        assert_eq!(status.offset, first.len() as u64 + 5 * MIB);
        assert!(!status.in_progress);
        assert!(names(&store).is_empty());
    }

    let store = open(dir.path());
    assert_eq!(store.recovery_report().partials_kept, 1);
    let status: PartialStatus = store.upload_status("vm").unwrap().unwrap();
    assert_eq!(status.offset, first.len() as u64 + 5 * MIB);
    assert_eq!(status.expected_size, Some(size));
    assert_eq!(status.expected_checksum, Some(checksum));
    assert_eq!(store.partial_uploads().unwrap(), vec![status.clone()]);

    let mut upload = store.resume_upload("vm").unwrap();
    assert_eq!(upload.offset(), status.offset);
    assert_eq!(upload.expected_size(), Some(size));
    upload.write(&all[2]).unwrap();
    let info = upload.commit().unwrap();
    assert_eq!(info.size, size);
    assert_eq!(info.checksum, Some(checksum));
    // The hole written before the suspension is still a hole.
    assert!(
        info.allocated < size - 4 * MIB,
        "allocated {}",
        info.allocated
    );

    let mut download = store.open_download("vm", 0, None).unwrap();
    let (content, chunks) = drain(&mut download, MIB as usize);
    assert_eq!(*blake3::hash(&content).as_bytes(), checksum);
    assert!(chunks.iter().any(|c| matches!(c, Chunk::Hole(_))));
}

#[test]
fn dropping_an_upload_keeps_it_resumable() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let content = pattern(700_000, 5);
    let upload = upload_all(&store, "v", &content[..300_000], UploadOptions::default());
    drop(upload);
    let status = store.upload_status("v").unwrap().unwrap();
    assert_eq!(status.offset, 300_000);
    assert!(!status.in_progress);

    let mut upload = store.resume_upload("v").unwrap();
    assert!(store.upload_status("v").unwrap().unwrap().in_progress);
    upload.write(&data(&content[300_000..])).unwrap();
    let info = upload.commit().unwrap();
    assert_eq!(info.checksum, Some(*blake3::hash(&content).as_bytes()));
}

#[test]
fn a_non_resumable_upload_is_never_kept_not_even_by_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let partial = root.join("partial");
    let not_resumable = UploadOptions {
        resumable: false,
        ..UploadOptions::default()
    };
    let crashed = {
        let store = open(root);
        let upload = upload_all(
            &store,
            "replica",
            &pattern(300_000, 1),
            not_resumable.clone(),
        );
        assert!(!upload.resumable());
        let status = store.upload_status("replica").unwrap().unwrap();
        assert!(!status.resumable && status.in_progress, "{status:?}");
        // What a crash at this moment leaves on disk.
        let crashed: Vec<(String, Vec<u8>)> = ["replica.json", "replica.part"]
            .into_iter()
            .map(|file| (file.to_owned(), fs::read(partial.join(file)).unwrap()))
            .collect();
        let json: serde_json::Value = serde_json::from_slice(&crashed[0].1).unwrap();
        assert_eq!(json["resumable"], false, "{json}");

        // Dropping (a lost connection) and suspending both discard it.
        drop(upload);
        upload_all(&store, "suspended", b"data", not_resumable.clone())
            .suspend()
            .unwrap();
        // A resumable upload beside them is kept.
        drop(upload_all(
            &store,
            "client",
            b"client",
            UploadOptions::default(),
        ));
        assert_eq!(
            files_in(&partial),
            ["client.blocks", "client.json", "client.part"]
        );
        crashed
    };
    let crash = || {
        for (file, bytes) in &crashed {
            fs::write(partial.join(file), bytes).unwrap();
        }
    };
    crash();
    // A partial JSON written before the field existed is resumable.
    let old_json = partial.join("client.json");
    let mut json: serde_json::Value =
        serde_json::from_slice(&fs::read(&old_json).unwrap()).unwrap();
    json.as_object_mut().unwrap().remove("resumable").unwrap();
    fs::write(&old_json, json.to_string()).unwrap();

    // Recovery removes the crashed replica however fresh it is, and keeps the other.
    let store = open(root);
    let report = store.recovery_report().clone();
    assert_eq!(report.unresumable_partials_removed, 1, "{report:?}");
    assert_eq!(report.partials_kept, 1, "{report:?}");
    assert_eq!(report.expired_partials_removed, 0, "{report:?}");
    assert!(report.found_debris());
    assert!(
        report
            .to_string()
            .contains("1 non-resumable partial uploads removed"),
        "{report}"
    );
    assert_eq!(
        files_in(&partial),
        ["client.blocks", "client.json", "client.part"]
    );
    assert!(store.upload_status("client").unwrap().unwrap().resumable);
    assert_eq!(store.upload_status("replica").unwrap(), None);

    // Left behind while the store is open: refused for resuming, gone at the next sweep.
    crash();
    assert!(matches!(
        store.resume_upload("replica"),
        Err(err @ StoreError::NotResumable { .. }) if err.code() == ErrorCode::FailedPrecondition
    ));
    assert_eq!(store.expire_partials().unwrap(), 1);
    assert_eq!(
        files_in(&partial),
        ["client.blocks", "client.json", "client.part"]
    );
    store.resume_upload("client").unwrap().commit().unwrap();
}

#[test]
fn begin_replaces_an_older_partial_and_discard_removes_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    upload_all(&store, "v", &pattern(100_000, 1), UploadOptions::default())
        .suspend()
        .unwrap();
    let upload = store.begin_upload("v", UploadOptions::default()).unwrap();
    assert_eq!(upload.offset(), 0);
    drop(upload);
    assert_eq!(store.upload_status("v").unwrap().unwrap().offset, 0);

    store.discard_upload("v").unwrap();
    assert_eq!(store.upload_status("v").unwrap(), None);
    assert!(matches!(
        store.discard_upload("v"),
        Err(StoreError::NoPartialUpload { .. })
    ));
    assert!(files_in(&dir.path().join("partial")).is_empty());
}

#[test]
fn sparse_upload_and_download() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let head = pattern(MIB as usize, 11);
    let tail = pattern(MIB as usize, 12);
    let stream = [data(&head), Chunk::Hole(GIB), data(&tail)];
    let size = 2 * MIB + GIB;
    let checksum = checksum_of(&stream);

    let mut upload = store
        .begin_upload(
            "sparse",
            UploadOptions {
                expected_size: Some(size),
                expected_checksum: Some(checksum),
                overwrite: false,
                resumable: true,
                base: None,
            },
        )
        .unwrap();
    for chunk in &stream {
        upload.write(chunk).unwrap();
        // The partial file's length is always the upload's offset.
        let part = dir.path().join("partial/sparse.part");
        assert_eq!(fs::metadata(part).unwrap().len(), upload.offset());
    }
    let info = upload.commit().unwrap();
    assert_eq!(info.size, size);
    assert_eq!(info.checksum, Some(checksum));
    assert!(
        info.allocated < 16 * MIB,
        "a 1 GiB hole must not be allocated: {} bytes allocated",
        info.allocated
    );

    let max = 256 * 1024;
    let mut download = store.open_download("sparse", 0, None).unwrap();
    assert_eq!(download.len(), size);
    let mut total = 0;
    let mut data_bytes = 0;
    let mut hole_bytes = 0;
    let mut head_read = Vec::new();
    let mut tail_read = Vec::new();
    while let Some(chunk) = download.next_chunk(max).unwrap() {
        match &chunk {
            Chunk::Data(bytes) => {
                assert!(bytes.len() <= max);
                if total < MIB {
                    head_read.extend_from_slice(bytes);
                } else {
                    assert!(total >= MIB + GIB, "data inside the hole at {total}");
                    tail_read.extend_from_slice(bytes);
                }
                data_bytes += bytes.len() as u64;
            }
            Chunk::Hole(n) => hole_bytes += n,
            Chunk::Keep(_) => panic!("a download never yields KEEP"),
        }
        total += chunk.len();
    }
    assert_eq!(total, size);
    assert_eq!(data_bytes + hole_bytes, size);
    assert_eq!(data_bytes, 2 * MIB);
    assert_eq!(hole_bytes, GIB);
    assert_eq!(head_read, head);
    assert_eq!(tail_read, tail);
    assert_eq!(download.remaining(), 0);
    assert_eq!(download.next_chunk(max).unwrap(), None);
}

#[test]
fn download_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let head = pattern(MIB as usize, 21);
    let tail = pattern(MIB as usize, 22);
    let hole = 4 * MIB;
    let mut upload = store.begin_upload("r", UploadOptions::default()).unwrap();
    for chunk in [data(&head), Chunk::Hole(hole), data(&tail)] {
        upload.write(&chunk).unwrap();
    }
    upload.commit().unwrap();
    let size = 2 * MIB + hole;
    let mut whole = head.clone();
    whole.resize((MIB + hole) as usize, 0);
    whole.extend_from_slice(&tail);

    let ranges: &[(u64, Option<u64>)] = &[
        (0, None),
        (10, Some(100)),
        (MIB - 10, Some(20)),         // data into the hole
        (MIB + 100, Some(MIB)),       // inside the hole
        (MIB + hole - 5, Some(1000)), // hole into data
        (MIB / 2, None),              // across everything to the end
        (size - 1, None),
        (size, None),
        (size, Some(0)),
        (3, Some(0)),
    ];
    for &(offset, length) in ranges {
        let mut download = store.open_download("r", offset, length).unwrap();
        let expected_len = length.unwrap_or(size - offset);
        assert_eq!(download.len(), expected_len);
        assert_eq!(download.offset(), offset);
        assert_eq!(download.is_empty(), expected_len == 0);
        let (content, chunks) = drain(&mut download, 4096);
        assert_eq!(
            content,
            &whole[offset as usize..(offset + expected_len) as usize],
            "range {offset} {length:?}"
        );
        let in_hole = offset >= MIB && offset + expected_len <= MIB + hole;
        if in_hole && expected_len > 0 {
            assert_eq!(
                chunks,
                [Chunk::Hole(expected_len)],
                "range {offset} {length:?}"
            );
        }
    }

    for (offset, length) in [
        (size + 1, None),
        (size, Some(1)),
        (10, Some(size)),
        (1, Some(u64::MAX)),
        (u64::MAX, None),
    ] {
        let err = store.open_download("r", offset, length).unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidRange { size: s, .. } if s == size),
            "range {offset} {length:?}: {err}"
        );
        assert_eq!(err.code(), ErrorCode::BadRequest);
    }

    let mut download = store.open_download("r", 0, None).unwrap();
    assert!(download.next_chunk(0).is_err(), "max 0 is refused");
}

#[test]
fn overwrite_replaces_and_open_downloads_keep_their_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let old = pattern(200_000, 31);
    let new = pattern(300_000, 32);
    let first = upload_all(&store, "v", &old, UploadOptions::default())
        .commit()
        .unwrap();
    let mut reader = store.open_download("v", 0, None).unwrap();

    std::thread::sleep(Duration::from_millis(5));
    let second = upload_all(
        &store,
        "v",
        &new,
        UploadOptions {
            overwrite: true,
            ..UploadOptions::default()
        },
    )
    .commit()
    .unwrap();
    assert_eq!(
        second.created, first.created,
        "overwriting keeps the creation time"
    );
    assert!(second.modified > first.modified);
    assert_eq!(second.checksum, Some(*blake3::hash(&new).as_bytes()));
    assert_eq!(store.info("v").unwrap(), second);

    let (content, _) = drain(&mut reader, 65536);
    assert_eq!(
        content, old,
        "the open download reads the version it opened"
    );
    assert_eq!(reader.volume(), &first);

    // Deleting does not cut short a download that is under way either.
    let mut reader = store.open_download("v", 0, None).unwrap();
    store.delete("v").unwrap();
    let (content, _) = drain(&mut reader, 65536);
    assert_eq!(content, new);
}

#[test]
fn commit_refuses_a_volume_that_appeared_meanwhile_and_keeps_the_partial() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let content = pattern(100_000, 41);
    let upload = upload_all(&store, "v", &content, UploadOptions::default());
    store.create("v", 5).unwrap();
    let err = upload.commit().unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err}");
    assert_eq!(err.code(), ErrorCode::AlreadyExists);
    assert_eq!(
        store.info("v").unwrap().size,
        5,
        "the existing volume is untouched"
    );
    assert_eq!(store.upload_status("v").unwrap().unwrap().offset, 100_000);

    // Resuming says why it cannot go on; once the volume is gone it can.
    assert!(matches!(
        store.resume_upload("v"),
        Err(StoreError::AlreadyExists { .. })
    ));
    store.delete("v").unwrap();
    let info = store.resume_upload("v").unwrap().commit().unwrap();
    assert_eq!(info.checksum, Some(*blake3::hash(&content).as_bytes()));
}

#[test]
fn crash_recovery_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let volumes = root.join("volumes");
    let meta = root.join("meta");
    let partial = root.join("partial");
    {
        let store = open(root);
        // A volume whose name looks like a temporary file must survive recovery.
        upload_all(&store, "keep.tmp", b"keep me", UploadOptions::default())
            .commit()
            .unwrap();
        store.create("plain", 4096).unwrap();
        upload_all(&store, "old", &pattern(10_000, 1), UploadOptions::default())
            .suspend()
            .unwrap();
        upload_all(
            &store,
            "fresh",
            &pattern(10_000, 2),
            UploadOptions::default(),
        )
        .suspend()
        .unwrap();
        // A commit that crashed after writing its record, before publishing the data.
        upload_all(
            &store,
            "unpublished",
            &pattern(10_000, 3),
            UploadOptions::default(),
        )
        .suspend()
        .unwrap();
    }
    // Debris of a crash.
    fs::write(
        volumes.join(".plain.00000000000000aa.tmp"),
        b"half a volume",
    )
    .unwrap();
    fs::write(meta.join(".plain.json.00000000000000ab.tmp"), b"{").unwrap();
    fs::write(partial.join(".old.json.00000000000000ac.tmp"), b"{").unwrap();
    fs::copy(meta.join("plain.json"), meta.join("ghost.json")).unwrap();
    set_partial_updated(root, "old", 0);
    fs::write(partial.join("orphan.part"), b"data without json").unwrap();
    fs::copy(partial.join("fresh.json"), partial.join("lonely.json")).unwrap();
    fs::copy(meta.join("plain.json"), partial.join("unpublished.commit")).unwrap();
    // A commit that crashed after publishing the data, before installing the sidecar.
    let published = pattern(5000, 4);
    fs::write(volumes.join("published"), &published).unwrap();
    let sidecar = serde_json::json!({
        "format": 1,
        "size": 5000,
        "checksum": blake3::hash(&published).to_hex().as_str(),
        "created": 1_000,
        "modified": 2_000,
    });
    fs::write(partial.join("published.commit"), sidecar.to_string()).unwrap();
    fs::copy(partial.join("fresh.json"), partial.join("published.json")).unwrap();
    // Not the store's: left alone.
    fs::create_dir(volumes.join("lost+found")).unwrap();

    let store = open(root);
    let report = store.recovery_report().clone();
    assert_eq!(report.temp_files_removed, 3, "{report:?}");
    assert_eq!(report.orphan_meta_removed, 1, "{report:?}");
    assert_eq!(report.expired_partials_removed, 1, "{report:?}");
    assert_eq!(report.broken_partials_removed, 2, "{report:?}");
    assert_eq!(report.commits_completed, 1, "{report:?}");
    assert_eq!(report.commits_rolled_back, 1, "{report:?}");
    assert_eq!(report.partials_kept, 2, "{report:?}");
    assert_eq!(report.volumes, 3, "{report:?}");
    assert_eq!(report.ignored_entries, 1, "{report:?}");
    assert_eq!(report.unreadable_meta, 0, "{report:?}");
    assert!(report.found_debris());
    let line = report.to_string();
    assert!(
        line.starts_with("3 volumes, 2 partial uploads kept"),
        "{line}"
    );
    assert!(line.contains("1 interrupted commits completed"), "{line}");

    assert_eq!(
        files_in(&volumes),
        ["keep.tmp", "lost+found", "plain", "published"]
    );
    // keep.tmp was committed by an upload, which also keeps its block hashes.
    assert_eq!(
        files_in(&meta),
        [
            "keep.tmp.blocks",
            "keep.tmp.json",
            "plain.json",
            "published.json"
        ]
    );
    assert_eq!(
        files_in(&partial),
        [
            "fresh.blocks",
            "fresh.json",
            "fresh.part",
            "unpublished.blocks",
            "unpublished.json",
            "unpublished.part"
        ]
    );
    assert_eq!(names(&store), ["keep.tmp", "plain", "published"]);
    let info = store.info("published").unwrap();
    assert_eq!(info.checksum, Some(*blake3::hash(&published).as_bytes()));
    assert_eq!(
        info.created,
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_000)
    );
    assert_eq!(store.upload_status("old").unwrap(), None);
    assert_eq!(
        store.upload_status("fresh").unwrap().unwrap().offset,
        10_000
    );
    let info = store
        .resume_upload("unpublished")
        .unwrap()
        .commit()
        .unwrap();
    assert_eq!(
        info.checksum,
        Some(*blake3::hash(&pattern(10_000, 3)).as_bytes())
    );
    assert_eq!(fs::read(volumes.join("keep.tmp")).unwrap(), b"keep me");

    // A second open finds nothing more to do.
    drop(store);
    let store = open(root);
    assert!(
        !store.recovery_report().found_debris(),
        "{}",
        store.recovery_report()
    );
}

#[test]
fn zero_ttl_expires_every_partial_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        upload_all(&store, "a", b"aaaa", UploadOptions::default());
    }
    let store = VolumeStore::open(
        dir.path(),
        StoreConfig {
            resume_ttl: Duration::ZERO,
            ..StoreConfig::default()
        },
    )
    .unwrap();
    assert_eq!(store.recovery_report().expired_partials_removed, 1);
    assert!(store.partial_uploads().unwrap().is_empty());
}

#[test]
fn expire_partials_skips_open_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let store = VolumeStore::open(
        dir.path(),
        StoreConfig {
            resume_ttl: Duration::from_secs(3600),
            ..StoreConfig::default()
        },
    )
    .unwrap();
    upload_all(&store, "idle", b"idle", UploadOptions::default())
        .suspend()
        .unwrap();
    let open_upload = upload_all(&store, "busy", b"busy", UploadOptions::default());
    upload_all(&store, "recent", b"recent", UploadOptions::default())
        .suspend()
        .unwrap();
    set_partial_updated(dir.path(), "idle", 0);
    set_partial_updated(dir.path(), "busy", 0);

    assert_eq!(store.expire_partials().unwrap(), 1);
    let left: Vec<String> = store
        .partial_uploads()
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(left, ["busy", "recent"]);
    open_upload.commit().unwrap();
}

#[test]
fn one_process_per_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let clone = store.clone();
    let err = VolumeStore::open(dir.path(), StoreConfig::default()).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    drop(store);
    // A clone still holds the lock.
    assert!(VolumeStore::open(dir.path(), StoreConfig::default()).is_err());
    drop(clone);
    open(dir.path());
}

#[test]
fn invalid_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for max_name_len in [0, 1000] {
        let err = VolumeStore::open(
            dir.path(),
            StoreConfig {
                max_name_len,
                ..StoreConfig::default()
            },
        )
        .unwrap_err();
        assert!(matches!(err, StoreError::InvalidConfig { .. }), "{err}");
    }
}

#[test]
fn store_types_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<VolumeStore>();
    send::<Upload>();
    send::<Download>();
    send_sync::<StoreError>();

    // Many threads uploading different names at once, and racing for one name.
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            std::thread::spawn(move || {
                let content = pattern(50_000, i);
                let own = upload_all(&store, &format!("t{i}"), &content, UploadOptions::default());
                own.commit().unwrap();
                store.create("contested", 1).is_ok()
            })
        })
        .collect();
    let winners = threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .filter(|&won| won)
        .count();
    assert_eq!(winners, 1);
    assert_eq!(store.list().unwrap().len(), 9);
}

#[test]
fn unreadable_files_degrade_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    {
        let store = open(root);
        upload_all(&store, "v", b"content", UploadOptions::default())
            .commit()
            .unwrap();
        upload_all(&store, "p", b"partial", UploadOptions::default())
            .suspend()
            .unwrap();
        fs::write(root.join("meta/v.json"), "{").unwrap();
        fs::write(root.join("partial/p.json"), "not json").unwrap();

        // The volume stays usable, without a checksum.
        let info = store.info("v").unwrap();
        assert_eq!(info.size, 7);
        assert_eq!(info.checksum, None);
        assert_eq!(names(&store), ["v"]);
        // The broken partial cannot be resumed, and does not break the listing.
        assert!(matches!(
            store.upload_status("p"),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            store.resume_upload("p"),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(store.partial_uploads().unwrap().is_empty());
    }
    let store = open(root);
    let report = store.recovery_report();
    assert_eq!(report.unreadable_meta, 1, "{report:?}");
    assert_eq!(report.broken_partials_removed, 1, "{report:?}");
    assert!(
        root.join("meta/v.json").exists(),
        "left for an operator to look at"
    );
    assert_eq!(store.upload_status("p").unwrap(), None);
}

#[test]
fn block_hashes_come_in_small_pages_that_add_up_to_the_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let block = 256 * 1024;
    let content = pattern(200 * block + 10, 3);
    let upload = upload_all(&store, "disk", &content, UploadOptions::default());
    upload.commit().unwrap();
    let (info, first) = store.block_hashes("disk", 0, 10_000).unwrap();
    let BlockHashes::Available(first) = first else {
        panic!("no block hashes: {first:?}")
    };
    // Under 4 KiB a page, whatever was asked: unread replies stay small.
    assert_eq!(first.hashes.len() as u64, 32 * MAX_PAGE);
    assert!(first.hashes.len() < 4096);
    assert_eq!(first.total, 201);
    let mut all = first.hashes.clone();
    while (all.len() as u64) < 32 * first.total {
        let (_, page) = store
            .block_hashes("disk", all.len() as u64 / 32, 0)
            .unwrap();
        let BlockHashes::Available(page) = page else {
            panic!("{page:?}")
        };
        all.extend_from_slice(&page.hashes);
    }
    let mut tree = ferry_store::blockhash::Tree::default();
    for hash in all.chunks(32) {
        tree.push(hash.try_into().unwrap());
    }
    assert_eq!(Some(tree.root(|| unreachable!())), info.checksum);
    // A damaged list is refused at page 0, not trusted.
    let path = dir.path().join("meta/disk.blocks");
    let mut bytes = fs::read(&path).unwrap();
    bytes[64 + 32 * 150] ^= 1;
    fs::write(&path, bytes).unwrap();
    assert!(matches!(
        store.block_hashes("disk", 0, 0).unwrap().1,
        BlockHashes::Unusable(_)
    ));
}
