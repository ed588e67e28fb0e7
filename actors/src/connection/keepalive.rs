//! Detecting a silent peer: libvirt's keepalive, counted in intervals of silence.

use std::time::Instant;

use crate::config::KeepaliveConfig;

/// What the connection should do on a keepalive tick.
#[derive(Debug, PartialEq, Eq)]
pub enum Tick {
    /// Traffic arrived recently; nothing to do.
    Quiet,
    /// Silence for another interval: send a PING.
    Ping,
    /// Silence for more than `count` intervals: the peer is gone.
    Dead,
}

/// Keepalive state of one connection. Any received frame counts as a sign of life.
#[derive(Debug)]
pub struct Keepalive {
    config: KeepaliveConfig,
    last_received: Instant,
    silent_intervals: u32,
}

impl Keepalive {
    pub fn new(config: KeepaliveConfig) -> Self {
        Self {
            config,
            last_received: Instant::now(),
            silent_intervals: 0,
        }
    }

    pub fn config(&self) -> KeepaliveConfig {
        self.config
    }

    pub fn received(&mut self) {
        self.last_received = Instant::now();
        self.silent_intervals = 0;
    }

    /// Called every `interval`.
    pub fn tick(&mut self) -> Tick {
        if self.last_received.elapsed() < self.config.interval {
            return Tick::Quiet;
        }
        self.silent_intervals += 1;
        if self.silent_intervals > self.config.count {
            Tick::Dead
        } else {
            Tick::Ping
        }
    }
}
