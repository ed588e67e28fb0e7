//! A connected socket, split into owned halves so the reader and the writer never contend.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

/// The two halves of a socket plus a printable peer name for logs and admin views.
pub struct Transport {
    pub read: Box<dyn AsyncRead + Unpin>,
    pub write: Box<dyn AsyncWrite + Unpin>,
    pub peer: String,
    /// The peer's uid, on a unix socket (`SO_PEERCRED`).
    pub peer_uid: Option<u32>,
}

impl Transport {
    pub fn tcp(stream: TcpStream) -> Self {
        // Small frames (replies, credits) must not wait for Nagle's timer.
        let _ = stream.set_nodelay(true);
        let peer = stream
            .peer_addr()
            .map_or_else(|_| "tcp:?".to_owned(), |a| format!("tcp:{a}"));
        let (read, write) = stream.into_split();
        Self {
            read: Box::new(read),
            write: Box::new(write),
            peer,
            peer_uid: None,
        }
    }

    pub fn unix(stream: UnixStream) -> Self {
        widen_buffers(&stream);
        let peer_uid = stream.peer_cred().ok().map(|cred| cred.uid());
        let peer = peer_uid.map_or_else(|| "unix:?".to_owned(), |uid| format!("unix:uid={uid}"));
        let (read, write) = stream.into_split();
        Self {
            read: Box::new(read),
            write: Box::new(write),
            peer,
            peer_uid,
        }
    }
}

impl Transport {
    /// A TLS stream over TCP; the halves share the session, so they are split with a lock.
    pub fn tls(stream: tokio_openssl::SslStream<TcpStream>) -> Self {
        let peer = stream
            .get_ref()
            .peer_addr()
            .map_or_else(|_| "tls:?".to_owned(), |a| format!("tls:{a}"));
        let (read, write) = tokio::io::split(stream);
        Self {
            read: Box::new(read),
            write: Box::new(write),
            peer,
            peer_uid: None,
        }
    }
}

/// Socket buffer asked for a unix connection, each direction: 1 MiB, one stream window.
const UNIX_BUFFER: libc::c_int = 1 << 20;

/// A unix socket's buffers default to `net.core.wmem_default` (208 KiB on most systems), less
/// than one frame of a 256 KiB chunk, so a sender and its reader take turns for every frame
/// (docs/BENCHMARKS.md: one unix upload 0.75-0.83x raw with the default, 0.85-0.89x with
/// this, alternated runs). The kernel caps the request at `net.core.wmem_max`/`rmem_max`;
/// failure only costs speed, so it is ignored.
fn widen_buffers(stream: &UnixStream) {
    use std::os::fd::AsRawFd;
    for option in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live constant; the
        // descriptor belongs to `stream`, which outlives the call.
        unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&UNIX_BUFFER as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}
