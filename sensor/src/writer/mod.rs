//! The writer stage: packets into segments. Between the capture and the store it turns a
//! packet's queue into its slot and direction (the pod's direction for pod veths in
//! Kubernetes mode), applies the settings' retention changes and the reconciler's scope changes
//! (new pods' interfaces, names) before the packets they describe, counts what the disk
//! refused as drops, and publishes the store's health.
//!
//! Rules: it runs on whichever thread drives it — the capture thread itself for the ring
//! channel (one thread from the kernel's ring buffer to the segment file), or its own
//! thread behind the user-space ring for AF_XDP; a scope change is acknowledged only once
//! applied, and the capture attaches a slot only after that; on stop it closes the segment
//! with exact statistics.
use std::{
    net::IpAddr,
    sync::{atomic::Ordering, mpsc, Arc},
    thread,
    time::Duration,
};

use crate::{
    health::Health,
    pcapng::{Direction, InterfaceDescription, InterfaceStatistics},
    ring::{PacketSink, RecordConsumer, RecordHeader},
    stats::Stats,
    store::{flush::FlushGate, SegmentWriter, StoreError},
    sys,
    tls::scope::{Scope, SecretsInbox, SECRETS_FOLLOW_WITHIN},
};

/// What the Kubernetes reconciler tells the writer, in order with the packets.
#[derive(Debug)]
pub enum WriterCommand {
    /// Packets of `slot` belong to this interface from now on; `ack` when applied.
    /// `pod_side`: the slot is a pod's host-side veth, whose tc ingress is what the pod
    /// sends, so directions are turned around to be the pod's (into it: inbound).
    SetInterface {
        slot: u32,
        description: InterfaceDescription,
        pod_side: bool,
        ack: mpsc::Sender<()>,
    },
    SetNames(Vec<(IpAddr, String)>),
    /// The store's retention from now on: its size limit and its time limit (a change of
    /// the settings, `config/settings.rs`).
    SetRetention {
        max_size: u64,
        max_time: Duration,
    },
}

/// A slot's statistics for its statistics blocks, from the shared counters.
#[must_use]
pub(crate) fn interface_statistics(stats: &Stats, id: u32, start_ns: u64) -> InterfaceStatistics {
    let s = stats.snapshot(id as usize);
    InterfaceStatistics {
        start_ns,
        end_ns: sys::realtime_ns(),
        received: s.interface_received(),
        kernel_drops: s.kernel_drops,
        sensor_drops: s.sensor_drops(),
    }
}

/// The writer's side: packets into segments, the writer's commands and the retention
/// limits, on whichever thread runs it (the writer thread behind the user-space ring, or
/// the capture thread itself for the ring channel).
pub(crate) struct Recorder {
    store: SegmentWriter,
    stats: Arc<Stats>,
    /// Where the store's state is published for readiness and status.
    health: Arc<Health>,
    start_ns: u64,
    commands: mpsc::Receiver<WriterCommand>,
    /// A write failed and was logged; the next failures are not, until one succeeds.
    failing: bool,
    /// Slots that are pods' host-side veths (Kubernetes mode): their directions are turned
    /// around to be the pod's.
    pod_side: Vec<bool>,
    /// The sessions recorded and their secrets (`--tls-secrets`).
    tls: Option<TlsSecrets>,
    /// Readers' requests to flush (`store/flush.rs`): the gate, the newest request seen
    /// (served after the next pass) and the newest served.
    flush: Option<Arc<FlushGate>>,
    flush_seen: u64,
    flush_served: u64,
}

/// The writer's side of `--tls-secrets`.
struct TlsSecrets {
    scope: Scope,
    checked: std::time::Instant,
    /// The secrets the collector read, on their own channel, and what became of them.
    inbox: SecretsInbox,
}

impl Recorder {
    pub(crate) fn new(
        store: SegmentWriter,
        stats: Arc<Stats>,
        health: Arc<Health>,
        start_ns: u64,
        commands: mpsc::Receiver<WriterCommand>,
    ) -> Self {
        let flush = Some(store.flush_gate());
        Self {
            store,
            stats,
            health,
            start_ns,
            commands,
            failing: false,
            pod_side: Vec::new(),
            tls: None,
            flush,
            flush_seen: 0,
            flush_served: 0,
        }
    }

    /// Serves the flush requests seen one pass ago (this pass drained what the kernel had
    /// delivered when they arrived), then notes the ones made since.
    fn serve_flushes(&mut self) {
        let Some(gate) = &self.flush else { return };
        if self.flush_seen > self.flush_served {
            self.store.flush_now();
            self.health.set_disk(self.store.disk());
            gate.served(self.flush_seen);
            self.flush_served = self.flush_seen;
        }
        if gate.waiting_beyond(self.flush_served) {
            self.flush_seen = gate.asked();
        }
    }

    /// Writes the TLS secrets of the sessions it records (`--tls-secrets`), counting in
    /// `counts` what became of them.
    #[must_use]
    pub(crate) fn with_tls_secrets(mut self, inbox: Option<SecretsInbox>) -> Self {
        self.tls = inbox.map(|inbox| TlsSecrets {
            scope: Scope::default(),
            checked: std::time::Instant::now(),
            inbox,
        });
        self
    }

    /// Writes the secrets whose ClientHello was recorded; once a second, forgets old ones.
    fn write_secrets(&mut self) {
        let Some(tls) = &mut self.tls else { return };
        let now = std::time::Instant::now();
        if !tls.scope.waiting() && now.duration_since(tls.checked) < Duration::from_secs(1) {
            return;
        }
        tls.checked = now;
        let (lines, hello_at) = tls.scope.ready(now);
        if !lines.is_empty() && !self.store.write_secrets(lines.as_bytes(), hello_at) {
            tls.scope.count_late(lines.lines().count());
        }
        tls.inbox.counts.set(tls.scope.counts);
    }

    /// Applies the commands sent so far: retention changes and scope changes. Scope changes
    /// come before the packets they describe: the capture attaches only after this
    /// acknowledges.
    fn apply_commands(&mut self) {
        while let Ok(command) = self.commands.try_recv() {
            match command {
                WriterCommand::SetInterface {
                    slot,
                    description,
                    pod_side,
                    ack,
                } => {
                    self.store.set_interface(slot, description);
                    let index = slot as usize;
                    if self.pod_side.len() <= index {
                        self.pod_side.resize(index + 1, false);
                    }
                    self.pod_side[index] = pod_side;
                    let _ = ack.send(());
                }
                WriterCommand::SetNames(names) => self.store.set_names(names),
                WriterCommand::SetRetention { max_size, max_time } => {
                    self.store.set_retention(max_size, max_time);
                }
            }
        }
        if let Some(tls) = &mut self.tls {
            while let Ok(secret) = tls.inbox.incoming.try_recv() {
                // Relaxed: a bound on the channel's length (see `SharedCounts`).
                tls.inbox
                    .counts
                    .in_flight
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                tls.scope.offer(secret, std::time::Instant::now());
            }
        }
    }

    fn write(&mut self, header: &RecordHeader, data: &[u8]) {
        let (slot, direction) = podcap_common::slot_of_queue(header.queue);
        // tc ingress of a pod's host-side veth is what the pod sends: the pod's view turns
        // it around.
        let inbound = (direction == podcap_common::DIRECTION_INBOUND)
            != self.pod_side.get(slot as usize).copied().unwrap_or(false);
        let direction = if inbound {
            Direction::Inbound
        } else {
            Direction::Outbound
        };
        let stats = &*self.stats;
        let start_ns = self.start_ns;
        let slot_stats = &stats.slots[(slot as usize).min(stats.slots.len() - 1)];
        let hello = self
            .tls
            .as_ref()
            .and_then(|_| podcap_format::client_hello::client_hello_random(data));
        match self.store.write_packet(
            slot,
            header.timestamp_ns,
            header.original_len,
            data,
            direction,
            |id| interface_statistics(stats, id, start_ns),
        ) {
            Ok(()) => {
                slot_stats.written.fetch_add(1, Ordering::Relaxed);
                self.failing = false;
            }
            Err(e) => {
                slot_stats.writer_drops.fetch_add(1, Ordering::Relaxed);
                if !self.failing {
                    log::error!("{e:#}");
                    self.failing = true;
                }
            }
        }
        // Noted after the write: a segment it opened has the hello in its buffer.
        if let (Some(random), Some(tls)) = (hello, &mut self.tls) {
            let now = std::time::Instant::now();
            tls.scope.saw_hello(random, now);
            self.store.hold_flush_until(now + SECRETS_FOLLOW_WITHIN);
        }
    }

    /// Flushing, rotation by time, retention; packets the disk refused (counted as written
    /// when they were buffered) move to the writer's drops.
    fn tick(&mut self) {
        self.write_secrets();
        let (stats, start_ns) = (&*self.stats, self.start_ns);
        if let Err(e) = self.store.tick(|id| interface_statistics(stats, id, start_ns)) {
            log::error!("{e}");
        }
        for (slot, lost) in self.store.take_lost().into_iter().enumerate() {
            if let Some(s) = self.stats.slots.get(slot).filter(|_| lost > 0) {
                s.writer_drops.fetch_add(lost, Ordering::Relaxed);
                s.written.fetch_sub(lost, Ordering::Relaxed);
            }
        }
        self.health.set_disk(self.store.disk());
    }

    pub(crate) fn finish(mut self) -> Result<(), StoreError> {
        self.apply_commands();
        // The last secrets whose ClientHello was written go in; the others never will.
        self.write_secrets();
        if let Some(tls) = &mut self.tls {
            tls.scope.give_up_waiting();
            tls.inbox.counts.set(tls.scope.counts);
        }
        let (stats, start_ns) = (&*self.stats, self.start_ns);
        self.store.finish(|id| interface_statistics(stats, id, start_ns))
    }
}

/// The ring channel without AF_XDP sockets: the capture thread writes each copy straight
/// from the kernel's ring buffer into the segment's buffer, with no user-space ring and no
/// second thread between them (`docs/design/capture-path.md`, "One thread").
impl PacketSink for Recorder {
    fn accept(&mut self, header: &RecordHeader, data: &[u8]) -> bool {
        self.write(header, data);
        true
    }

    fn after_pass(&mut self) {
        self.apply_commands();
        self.tick();
        self.serve_flushes();
    }
}

/// The writer thread: ring → segments, until the capture side is gone and the ring empty.
pub(crate) fn spawn_writer(
    mut recorder: Recorder,
    mut consumer: RecordConsumer,
) -> std::io::Result<thread::JoinHandle<Result<(), StoreError>>> {
    thread::Builder::new()
        .name("podcap-writer".into())
        .spawn(move || {
            let mut data = Vec::with_capacity(1 << 16);
            loop {
                recorder.apply_commands();
                let mut idle = true;
                while let Some(header) = consumer.pop(&mut data) {
                    idle = false;
                    recorder.write(&header, &data);
                }
                recorder.tick();
                recorder.serve_flushes();
                if consumer.is_finished() {
                    break;
                }
                if idle {
                    thread::sleep(Duration::from_millis(5));
                }
            }
            recorder.finish()
        })
}
