//! The one write path of a connection.
//!
//! Every actor of a connection sends its frames through an [`Outbox`]; a single writer future
//! owns the socket's write half. It has two lanes:
//!
//! - the **control** lane (replies, calls, cancels, credits, keepalive, aborts): bounded, and
//!   always written first;
//! - the **data** lane (STREAM data, holes and finishes): one queue per stream, served round
//!   robin, at most [`DATA_PER_WRITE`] bytes per write, so a control frame waits at most about
//!   one chunk's write time behind bulk data. Credit alone does not bound it: a peer may grant
//!   up to 2^32-1 bytes per stream and then stop reading the socket. So the lane also holds at
//!   most `max_send_queue` bytes per connection: a stream reserves [`Room`] before it queues a
//!   frame, and the writer gives the room back once the frame is written (or purged).
//!
//! Each frame is written as a 28-byte head and its payload `Bytes` side by side in one vectored
//! write; payloads are never copied into an intermediate buffer.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice};
use std::sync::Arc;

use ferry_codec::{Frame, MessageType, Status, WireHead};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::metrics::{Counters, Traffic};

/// Tells a connection actor that its writer has stopped (socket closed or failed).
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct WriterStopped;

/// Runs a connection's writer as its own task on the current arbiter, telling `owner` when it
/// stops. The writer must not run inside the connection actor's context: the actor pauses
/// itself (and so its reader) when the control lane is full, and the writer is what makes
/// room again. Abort the returned handle when the connection ends.
pub fn spawn_writer<A>(
    writer: impl Future<Output = io::Result<()>> + 'static,
    owner: actix::Addr<A>,
) -> tokio::task::JoinHandle<()>
where
    A: actix::Actor<Context = actix::Context<A>> + actix::Handler<WriterStopped>,
{
    actix_rt::spawn(async move {
        if let Err(error) = writer.await {
            tracing::debug!(%error, "writer stopped");
        }
        owner.do_send(WriterStopped);
    })
}

/// What the control lane carries, in order.
#[derive(Debug)]
enum Control {
    Frame(Frame),
    /// Flush everything queued before this, shut the socket's write side down and stop.
    Close,
}

/// Control frames written in one vectored write at most; bounds the iovec array.
const BATCH: usize = 64;

/// Stream data written per write at most (when there is more than one chunk).
pub const DATA_PER_WRITE: usize = 256 * 1024;

/// The smallest send queue used, whatever is configured: room for a few frames of any size a
/// peer's `max_chunk` is likely to allow in one piece.
pub const MIN_SEND_QUEUE: u32 = 64 * 1024;

/// A handle for queueing frames on a connection.
#[derive(Debug, Clone)]
pub struct Outbox {
    control: mpsc::Sender<Control>,
    data: mpsc::UnboundedSender<(Frame, Room)>,
    room: Arc<Semaphore>,
    /// The semaphore's size: no single reservation may ask for more.
    room_limit: u32,
    /// Where `send_queued_bytes` is kept.
    counters: Arc<Counters>,
}

/// Bytes reserved in a connection's data lane for one frame; given back when dropped, that is
/// when the writer has written or purged the frame.
#[derive(Debug)]
pub struct Room(Option<(OwnedSemaphorePermit, Arc<Counters>)>);

impl Room {
    /// For a frame that carries no data (a finish): it needs no room.
    pub fn none() -> Self {
        Self(None)
    }

    /// The bytes reserved.
    pub fn bytes(&self) -> usize {
        self.0
            .as_ref()
            .map_or(0, |(permit, _)| permit.num_permits())
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        if let Some((permit, counters)) = &self.0 {
            counters.send_queued_bytes.sub(permit.num_permits() as u64);
        }
    }
}

/// The connection's writer has stopped (socket closed or failed).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the connection's writer has stopped")]
pub struct WriterGone;

impl Outbox {
    /// Creates an outbox and the writer future that drains it into `io`. `capacity` bounds the
    /// control lane in frames, `max_send_queue` the data lane in bytes.
    pub fn new(
        io: Box<dyn AsyncWrite + Unpin>,
        capacity: usize,
        max_send_queue: u32,
        traffic: Traffic,
    ) -> (Self, impl Future<Output = io::Result<()>>) {
        let room_limit = max_send_queue.max(MIN_SEND_QUEUE);
        let room = Arc::new(Semaphore::new(room_limit as usize));
        let (control, control_rx) = mpsc::channel(capacity);
        let (data, data_rx) = mpsc::unbounded_channel();
        let counters = Arc::clone(&traffic.total);
        let writer = Writer {
            io,
            control_rx,
            data_rx,
            lanes: HashMap::new(),
            ready: VecDeque::new(),
            traffic,
        };
        let outbox = Self {
            control,
            data,
            room,
            room_limit,
            counters,
        };
        (outbox, writer.run())
    }

    /// Queues a control frame, waiting while the control lane is full.
    pub async fn send(&self, frame: Frame) -> Result<(), WriterGone> {
        self.control
            .send(Control::Frame(frame))
            .await
            .map_err(|_| WriterGone)
    }

    /// Queues a control frame for a connection actor without blocking it when there is room;
    /// otherwise pauses the actor (and so its reader) until the writer catches up: a peer that
    /// does not read what it is sent gets no more of its frames read.
    pub fn send_or_pause<A>(&self, ctx: &mut actix::Context<A>, frame: Frame)
    where
        A: actix::Actor<Context = actix::Context<A>>,
    {
        use actix::AsyncContext;
        if let Err(frame) = self.try_send(frame) {
            let outbox = self.clone();
            ctx.wait(actix::fut::wrap_future(async move {
                let _ = outbox.send(frame).await;
            }));
        }
    }

    /// Queues a control frame without waiting; gives it back if the lane is full or the writer
    /// gone.
    pub fn try_send(&self, frame: Frame) -> Result<(), Frame> {
        self.control
            .try_send(Control::Frame(frame))
            .map_err(|e| match e.into_inner() {
                Control::Frame(frame) => frame,
                Control::Close => unreachable!("only frames are sent here"),
            })
    }

    /// Reserves room for a frame of `bytes` in the data lane, if there is that much now. A
    /// frame larger than the whole lane reserves the whole lane.
    pub fn try_reserve(&self, bytes: usize) -> Option<Room> {
        let n = self.clamp(bytes);
        let permit = Arc::clone(&self.room).try_acquire_many_owned(n).ok()?;
        Some(self.room(permit))
    }

    /// Waits until the data lane has room for a frame of `bytes`, and reserves it. Waiters are
    /// served in order, so streams sharing a full lane take turns.
    pub fn reserve(&self, bytes: usize) -> impl Future<Output = Room> + 'static + use<> {
        let (n, outbox) = (self.clamp(bytes), self.clone());
        async move {
            let permit = Arc::clone(&outbox.room)
                .acquire_many_owned(n)
                .await
                .expect("the data lane's semaphore is never closed");
            outbox.room(permit)
        }
    }

    fn clamp(&self, bytes: usize) -> u32 {
        u32::try_from(bytes).map_or(self.room_limit, |n| n.min(self.room_limit))
    }

    fn room(&self, permit: OwnedSemaphorePermit) -> Room {
        self.counters
            .send_queued_bytes
            .add(permit.num_permits() as u64);
        Room(Some((permit, Arc::clone(&self.counters))))
    }

    /// Queues a stream frame on its stream's data lane. The caller must hold credit and
    /// [`Room`] for it.
    pub fn send_data(&self, frame: Frame, room: Room) -> Result<(), WriterGone> {
        self.data.send((frame, room)).map_err(|_| WriterGone)
    }

    pub async fn close(&self) {
        let _ = self.control.send(Control::Close).await;
    }
}

struct Writer {
    io: Box<dyn AsyncWrite + Unpin>,
    control_rx: mpsc::Receiver<Control>,
    data_rx: mpsc::UnboundedReceiver<(Frame, Room)>,
    /// Queued stream frames, per serial.
    lanes: HashMap<u32, VecDeque<(Frame, Room)>>,
    /// Serials with queued frames, in round-robin order.
    ready: VecDeque<u32>,
    traffic: Traffic,
}

impl Writer {
    async fn run(mut self) -> io::Result<()> {
        // These grow to what the traffic needs and are reused; an idle connection (most of
        // 10,000) keeps them empty instead of pre-sizing them for a burst.
        let mut control = Vec::new();
        let mut batch = Vec::new();
        // Room of the data frames in `batch`, given back once they are written.
        let mut written = Vec::new();
        loop {
            if self.ready.is_empty() {
                // Nothing queued: wait for either lane.
                tokio::select! {
                    biased;
                    n = self.control_rx.recv_many(&mut control, BATCH) => if n == 0 { break },
                    queued = self.data_rx.recv() => match queued {
                        Some(queued) => self.enqueue(queued),
                        None => break,
                    },
                }
            }
            while let Ok(queued) = self.data_rx.try_recv() {
                self.enqueue(queued);
            }
            while control.len() < BATCH {
                match self.control_rx.try_recv() {
                    Ok(item) => control.push(item),
                    Err(_) => break,
                }
            }
            let mut closing = false;
            for item in control.drain(..) {
                match item {
                    Control::Frame(frame) => {
                        self.purge_if_final(&frame);
                        batch.push(frame);
                    }
                    Control::Close => closing = true,
                }
            }
            if !closing {
                self.take_data(&mut batch, &mut written);
            }
            write_frames(&mut self.io, &batch, &self.traffic).await?;
            batch.clear();
            written.clear();
            if closing {
                break;
            }
        }
        self.io.shutdown().await
    }

    fn enqueue(&mut self, queued: (Frame, Room)) {
        let serial = queued.0.header.serial;
        let lane = self.lanes.entry(serial).or_default();
        if lane.is_empty() {
            self.ready.push_back(serial);
        }
        lane.push_back(queued);
    }

    /// A REPLY or an abort ends its serial's stream: data still queued for it must not follow.
    fn purge_if_final(&mut self, frame: &Frame) {
        let h = &frame.header;
        let is_final = h.kind == MessageType::Reply
            || (h.kind == MessageType::Stream && h.status == Status::Error);
        if is_final && self.lanes.remove(&h.serial).is_some() {
            self.ready.retain(|&s| s != h.serial);
        }
    }

    /// Moves stream frames into `batch`, one per stream in turn, up to [`DATA_PER_WRITE`].
    fn take_data(&mut self, batch: &mut Vec<Frame>, written: &mut Vec<Room>) {
        let mut bytes = 0;
        while bytes < DATA_PER_WRITE && batch.len() < BATCH {
            let Some(serial) = self.ready.pop_front() else {
                break;
            };
            let lane = self
                .lanes
                .get_mut(&serial)
                .expect("ready serials have lanes");
            let (frame, room) = lane.pop_front().expect("ready lanes are not empty");
            bytes += frame.wire_len();
            batch.push(frame);
            written.push(room);
            if lane.is_empty() {
                self.lanes.remove(&serial);
            } else {
                self.ready.push_back(serial);
            }
        }
    }
}

/// Writes whole frames with vectored writes, heads and payloads side by side.
pub async fn write_frames(
    io: &mut (dyn AsyncWrite + Unpin),
    frames: &[Frame],
    traffic: &Traffic,
) -> io::Result<()> {
    if frames.is_empty() {
        return Ok(());
    }
    let heads: Vec<WireHead> = frames
        .iter()
        .map(|f| f.header.encode(f.payload.len()))
        .collect();
    let mut slices = Vec::with_capacity(frames.len() * 2);
    let mut total = 0;
    let mut stream_bytes = 0;
    for (head, frame) in heads.iter().zip(frames) {
        slices.push(IoSlice::new(head));
        total += head.len() + frame.payload.len();
        if frame.header.kind == MessageType::Stream && frame.header.status == Status::Continue {
            stream_bytes += frame.payload.len() as u64;
        }
        if !frame.payload.is_empty() {
            slices.push(IoSlice::new(&frame.payload));
        }
    }
    let mut remaining: &mut [IoSlice<'_>] = &mut slices;
    while !remaining.is_empty() {
        let written = io.write_vectored(remaining).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut remaining, written);
    }
    io.flush().await?;
    traffic.sent(frames.len() as u64, total as u64, stream_bytes);
    Ok(())
}
