//! docs/PROTOCOL.md and the volume program's .proto against a real `ferryd`, on the wire: raw
//! frames (common/raw.rs), so what is checked is what any peer would see.

mod common;

use bytes::Bytes;
use common::Daemon;
use common::raw::{ECHO, Peer, UPLOAD, test, volume};
use ferry_actors::codec::proto::ErrorBody;
use ferry_actors::codec::{Frame, Status};
use ferry_actors::test_program::proto::EchoRequest;
use ferry_actors::{ErrorCode, Layer, Side};
use ferry_node::proto::volume::UploadRequest;
use prost::Message;

/// Uploads `data` as `name` with `request`'s expectations and returns the REPLY's error body.
fn failed_upload(node: &Daemon, request: UploadRequest, data: &[u8]) -> ErrorBody {
    let mut peer = Peer::connect(node);
    peer.call(volume(UPLOAD), 1, &request);
    peer.accepted(1);
    peer.data(volume(UPLOAD), 1, Bytes::copy_from_slice(data));
    peer.send(Frame::stream_finish(volume(UPLOAD), 1));
    let reply = peer.reply(1);
    assert_eq!(reply.header.status, Status::Error, "{reply:?}");
    ErrorBody::decode(&reply.payload[..]).unwrap()
}

fn listed(node: &Daemon) -> serde_json::Value {
    common::run_json(node, &["vol", "list"])
}

/// volume.proto: an upload whose content differs from `expected_checksum`, or whose finish
/// comes at another size than `expected_size`, fails with FAILED_PRECONDITION (what it
/// announced does not hold), and nothing becomes visible.
#[test]
fn an_upload_that_breaks_its_announced_size_or_checksum_fails_with_failed_precondition() {
    let dir = tempfile::tempdir().unwrap();
    let node = Daemon::start(dir.path(), None);
    let data = b"the content of the volume";
    let wrong_checksum = UploadRequest {
        name: "checked".into(),
        expected_checksum: Bytes::from(vec![0u8; 32]),
        ..Default::default()
    };
    let short = UploadRequest {
        name: "sized".into(),
        expected_size: Some(data.len() as u64 + 1),
        ..Default::default()
    };
    for request in [wrong_checksum, short] {
        let name = request.name.clone();
        let body = failed_upload(&node, request, data);
        assert_eq!(
            body.code,
            ErrorCode::FailedPrecondition as i32,
            "{name}: {body:?}"
        );
        assert_eq!(body.side, Side::Server as i32, "{body:?}");
        assert_eq!(body.layer, Layer::Application as i32, "{body:?}");
    }
    assert_eq!(listed(&node), serde_json::json!([]));
}

/// Section 7.5: the first CREDIT says the runtime accepted the stream; the procedure may still
/// refuse it with a REPLY/ERROR (a server abort, section 7.6), here ALREADY_EXISTS for an upload
/// of a name that exists. The client then closes its side with STREAM/ERROR ABORTED.
#[test]
fn an_upload_of_an_existing_name_is_refused_after_its_first_credit() {
    let dir = tempfile::tempdir().unwrap();
    let node = Daemon::start(dir.path(), None);
    let create = common::run(&node, &["vol", "create", "taken", "1MiB"]);
    assert!(create.status.success(), "{create:?}");
    let mut peer = Peer::connect(&node);
    let request = UploadRequest {
        name: "taken".into(),
        ..Default::default()
    };
    peer.call(volume(UPLOAD), 1, &request);
    peer.accepted(1);
    let reply = peer.reply(1);
    assert_eq!(reply.header.status, Status::Error, "{reply:?}");
    let body = ErrorBody::decode(&reply.payload[..]).unwrap();
    assert_eq!(body.code, ErrorCode::AlreadyExists as i32, "{body:?}");
    let closing = ErrorBody {
        code: ErrorCode::Aborted as i32,
        ..Default::default()
    };
    peer.send(Frame::stream_abort(volume(UPLOAD), 1, &closing));
    // The connection goes on serving, serial 1 included.
    peer.call(test(ECHO), 1, &EchoRequest::default());
    assert_eq!(peer.reply(1).header.status, Status::Ok);
    assert_eq!(listed(&node).as_array().map(Vec::len), Some(1));
}

/// Uploads `data` as `name`, finishing with `trailer` as the STREAM/OK payload; the REPLY.
fn upload_with_trailer(node: &Daemon, name: &str, data: &[u8], trailer: Bytes) -> Frame {
    let mut peer = Peer::connect(node);
    let request = UploadRequest {
        name: name.into(),
        expected_size: Some(data.len() as u64),
        ..Default::default()
    };
    peer.call(volume(UPLOAD), 1, &request);
    peer.accepted(1);
    peer.data(volume(UPLOAD), 1, Bytes::copy_from_slice(data));
    peer.send(Frame::stream_finish_with(volume(UPLOAD), 1, trailer));
    peer.reply(1)
}

/// PROTOCOL.md 7.6 and volume.proto: an upload's finish may carry an `UploadFinish` with the
/// checksum the client computed while sending; the node commits only that content. A wrong
/// one fails FAILED_PRECONDITION, a trailer that is not an UploadFinish BAD_REQUEST, one over
/// MAX_TRAILER a PROTOCOL_VIOLATION on the stream; none of them leaves a volume.
#[test]
fn the_checksum_vouched_for_in_an_uploads_finish_decides_its_commit() {
    let dir = tempfile::tempdir().unwrap();
    let node = Daemon::start(dir.path(), None);
    let data = b"hashed while it was sent";
    let finish = |checksum: &[u8]| {
        Bytes::from(
            ferry_node::proto::volume::UploadFinish {
                checksum: Bytes::copy_from_slice(checksum),
            }
            .encode_to_vec(),
        )
    };
    let right = blake3::hash(data);
    let reply = upload_with_trailer(&node, "vouched", data, finish(right.as_bytes()));
    assert_eq!(reply.header.status, Status::Ok, "{reply:?}");
    let info = common::run_json(&node, &["vol", "info", "vouched"]);
    assert_eq!(info["checksum"], right.to_hex().as_str());

    let refused = [
        (
            "wrong",
            finish(&[7u8; 32]),
            ErrorCode::FailedPrecondition,
            Layer::Application,
        ),
        (
            "short",
            finish(&[7u8; 5]),
            ErrorCode::BadRequest,
            Layer::Application,
        ),
        (
            "garbage",
            Bytes::from_static(b"\xff\xff\xff"),
            ErrorCode::BadRequest,
            Layer::Application,
        ),
        (
            "huge",
            finish(&vec![1u8; ferry_actors::codec::MAX_TRAILER]),
            ErrorCode::ProtocolViolation,
            Layer::Stream,
        ),
    ];
    for (name, trailer, code, layer) in refused {
        let reply = upload_with_trailer(&node, name, data, trailer);
        assert_eq!(reply.header.status, Status::Error, "{name}: {reply:?}");
        let body = ErrorBody::decode(&reply.payload[..]).unwrap();
        assert_eq!(
            (body.code, body.layer),
            (code as i32, layer as i32),
            "{name}: {body:?}"
        );
    }
    assert_eq!(
        listed(&node).as_array().unwrap().len(),
        1,
        "{}",
        listed(&node)
    );
}
