//! The TLS secrets uprobes (`--tls-secrets`): Go's key log function and OpenSSL 3.0's
//! reads and writes, each secret one `TlsSecretEvent` in `TLS_SECRETS`.
//!
//! Rules: a probe only reads the probed process's memory (every read may fault and end the
//! look at that call, never the process); a field that does not fit its room is sent with
//! its lengths only (counted by user space), never cut; with Kubernetes mode's fence up
//! only a task under a targeted pod's cgroup gives secrets (`tls_task_allowed`), and what
//! it turns away is counted; a full ring loses the event, counted.
use aya_ebpf::{
    helpers::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_pid_tgid, bpf_probe_read_user,
        bpf_probe_read_user_buf, generated::bpf_get_attach_cookie,
    },
    macros::{map, uprobe},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::ProbeContext,
};
use podcap_common::{
    OpenSslLayout, TlsSecretEvent, MAX_POD_CGROUP_LEVEL, OPENSSL_LAYOUTS_MAX, TLS_FENCE_LEVELS, TLS_FENCE_UP,
    TLS_HANDSHAKE_HASH_AT, TLS_HANDSHAKE_LABEL, TLS_LABEL_MAX, TLS_POD_CGROUPS_MAX, TLS_RANDOM_LEN,
    TLS_SECRET_MAX, TLS_SECRET_UNREADABLE,
};

/// TLS secrets read by the uprobes (`--tls-secrets`), one [`TlsSecretEvent`] each.
#[map]
static TLS_SECRETS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Secret events lost to a full [`TLS_SECRETS`] (per CPU; user space sums them).
#[map]
static TLS_SECRETS_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The fence of Kubernetes mode ([`TLS_FENCE_UP`], [`TLS_FENCE_LEVELS`]; user space
/// sets them).
#[map]
static TLS_FENCE: Array<u32> = Array::with_max_entries(2, 0);

/// The targeted pods' cgroup v2 ids (value unused): with the fence up, only a process in
/// one of them (at any depth) gives secrets.
#[map]
static TLS_POD_CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(TLS_POD_CGROUPS_MAX, 0);

/// Probe hits of processes outside the targeted pods while the fence is up: secrets not
/// read (per CPU; user space sums them).
#[map]
static TLS_SECRETS_FENCED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Whether the probed task may give secrets: the fence is down, or the task's cgroup is
/// (under) a targeted pod's, at one of the levels pods' cgroups sit. Counted when not.
#[inline(always)]
fn tls_task_allowed() -> bool {
    let fence = |index: u32| TLS_FENCE.get(index).copied().unwrap_or(0);
    if fence(TLS_FENCE_UP) == 0 {
        return true;
    }
    let levels = fence(TLS_FENCE_LEVELS);
    for level in 1..=MAX_POD_CGROUP_LEVEL {
        if levels & (1 << level) == 0 {
            continue;
        }
        // SAFETY: a helper about the current task; 0 when its cgroup is not that deep.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
        // SAFETY: a lookup in our own map with a key on the stack.
        if id != 0 && unsafe { TLS_POD_CGROUPS.get(&id) }.is_some() {
            return true;
        }
    }
    if let Some(fenced) = TLS_SECRETS_FENCED.get_ptr_mut(0) {
        // SAFETY: this CPU's slot of a per-CPU map; a BPF program is not preempted on its
        // CPU, so nothing else writes it meanwhile.
        unsafe { *fenced += 1 };
    }
    false
}

/// Entry of Go's `crypto/tls.(*Config).writeKeyLog(label string, clientRandom, secret
/// []byte)`, which Go's TLS calls for every secret of every session whether or not a key
/// log writer is set. Go's register ABI on amd64: the receiver in RAX, then `label` (RBX
/// pointer, RCX length), `clientRandom` (RDI, RSI, R8 capacity), `secret` (R9, R10, R11).
/// Each field is read from the process's memory, at most its room; a full ring buffer
/// loses the event, counted in [`TLS_SECRETS_LOST`].
#[uprobe]
pub fn podcap_go_keylog(ctx: ProbeContext) -> u32 {
    if !tls_task_allowed() {
        return 0;
    }
    let regs = ctx.regs;
    // SAFETY: `regs` is the probed task's saved registers, handed to this program.
    let (label, label_len, random, random_len, secret, secret_len) = unsafe {
        (
            (*regs).rbx,
            (*regs).rcx,
            (*regs).rdi,
            (*regs).rsi,
            (*regs).r9,
            (*regs).r10,
        )
    };
    let mut event = TlsSecretEvent {
        pid: (bpf_get_current_pid_tgid() >> 32) as u32,
        label_len: label_len as u32,
        random_len: random_len as u32,
        secret_len: secret_len as u32,
        label: [0; TLS_LABEL_MAX],
        random: [0; TLS_RANDOM_LEN],
        secret: [0; TLS_SECRET_MAX],
    };
    if label_len as usize > TLS_LABEL_MAX
        || random_len as usize != TLS_RANDOM_LEN
        || secret_len as usize > TLS_SECRET_MAX
    {
        // Not a secret this event can carry whole: sent with its lengths only, so user
        // space can count it by reason.
        submit_secret(&event);
        return 0;
    }
    let mut read = true;
    if let Some(dst) = event.label.get_mut(..label_len as usize) {
        // SAFETY: a read of the probed process's memory; a fault returns an error.
        read &= unsafe { bpf_probe_read_user_buf(label as *const u8, dst) }.is_ok();
    }
    // SAFETY: as above.
    read &= unsafe { bpf_probe_read_user_buf(random as *const u8, &mut event.random) }.is_ok();
    if let Some(dst) = event.secret.get_mut(..secret_len as usize) {
        // SAFETY: as above.
        read &= unsafe { bpf_probe_read_user_buf(secret as *const u8, dst) }.is_ok();
    }
    if !read {
        // A page a uprobe cannot fault in: zeros are no secret. Said by the length.
        event.secret_len = TLS_SECRET_UNREADABLE;
    }
    submit_secret(&event);
    0
}

#[inline(always)]
fn submit_secret(event: &TlsSecretEvent) {
    if let Some(mut entry) = TLS_SECRETS.reserve::<TlsSecretEvent>(0) {
        entry.write(*event);
        entry.submit(0);
    } else if let Some(lost) = TLS_SECRETS_LOST.get_ptr_mut(0) {
        // SAFETY: this CPU's slot of a per-CPU map; a BPF program is not preempted on its
        // CPU, so nothing else writes it meanwhile.
        unsafe { *lost += 1 };
    }
}

/// The layouts of the OpenSSL releases probed (user space fills them; a probe's attach
/// cookie is its library's index).
#[map]
static OPENSSL_LAYOUTS: Array<OpenSslLayout> = Array::with_max_entries(OPENSSL_LAYOUTS_MAX, 0);

/// Client randoms of the OpenSSL sessions whose secrets were sent (value unused): the
/// probe runs at every read and write, and sends a session's secrets once. Least recently
/// used entries make room; a session forgotten that way is sent again, which the writer
/// takes once.
#[map]
static OPENSSL_SENT: LruHashMap<[u8; TLS_RANDOM_LEN], u8> = LruHashMap::with_max_entries(16384, 0);

/// `SSL3_VERSION` and `TLS1_3_VERSION`: a negotiated version lies between them.
const SSL3: i32 = 0x0300;
const TLS1_3: i32 = 0x0304;
/// `EVP_MAX_MD_SIZE`'s share a probe reads of every secret: SHA-384's 48 bytes.
const SECRET_READ: usize = 48;

/// Entry of OpenSSL 3.0's `SSL_read`, `SSL_read_ex`, `SSL_write` and `SSL_write_ex` (the
/// `SSL *` in RDI): once the handshake is done, a session's secrets are in `SSL` and its
/// `SSL_SESSION`, at offsets of the release's layout. Sent once per client random
/// ([`OPENSSL_SENT`]): TLS 1.2's master key as `CLIENT_RANDOM`; TLS 1.3's traffic and
/// exporter secrets, and the handshake secret with its transcript hash, from which user
/// space derives the handshake traffic secrets (OpenSSL does not keep those). A session
/// whose secrets are not there yet (all zeros) is looked at again on its next call.
#[uprobe]
pub fn podcap_openssl_secrets(ctx: ProbeContext) -> u32 {
    // SAFETY: `ctx.regs` is the probed task's saved registers; the cookie is the one the
    // probe was attached with.
    let (ssl, cookie) = unsafe { ((*ctx.regs).rdi, bpf_get_attach_cookie(ctx.regs.cast())) };
    let Some(layout) = OPENSSL_LAYOUTS.get(cookie as u32) else {
        return 0;
    };
    let _ = openssl_secrets(ssl, layout);
    0
}

#[inline(always)]
fn openssl_secrets(ssl: u64, layout: &OpenSslLayout) -> Option<()> {
    let at = |offset: u32| (ssl + u64::from(offset)) as *const u8;
    // One event on the stack, its fields read into in place (the stack holds 512 bytes).
    let mut event = TlsSecretEvent {
        pid: (bpf_get_current_pid_tgid() >> 32) as u32,
        label_len: 0,
        random_len: TLS_RANDOM_LEN as u32,
        secret_len: 0,
        label: [0; TLS_LABEL_MAX],
        random: [0; TLS_RANDOM_LEN],
        secret: [0; TLS_SECRET_MAX],
    };
    // SAFETY (this and every read below): a read of the probed process's memory; a fault
    // returns an error, which ends the look at this call.
    unsafe { bpf_probe_read_user_buf(at(layout.client_random), &mut event.random) }.ok()?;
    if event.random == [0; TLS_RANDOM_LEN] {
        return None;
    }
    // SAFETY: a lookup in a hash map with a key on the stack.
    if unsafe { OPENSSL_SENT.get(&event.random) }.is_some() {
        return None;
    }
    // SAFETY: as above.
    let version: i32 = unsafe { bpf_probe_read_user(at(layout.version).cast()) }.ok()?;
    // SAFETY: as above.
    let session: u64 = unsafe { bpf_probe_read_user(at(layout.session).cast()) }.ok()?;
    if session == 0 {
        return None;
    }
    let in_session = |offset: u32| (session + u64::from(offset)) as *const u8;
    // Until the version is negotiated `version` is the method's (`TLS_ANY_VERSION`), and a
    // client resuming a session already points at the old one: nothing is read then.
    if !(SSL3..=TLS1_3).contains(&version) {
        return None;
    }
    if version != TLS1_3 {
        // SAFETY: as above.
        let length: u64 = unsafe { bpf_probe_read_user(in_session(layout.master_key_length).cast()) }.ok()?;
        if length == 0 || length > SECRET_READ as u64 || !tls_task_allowed() {
            return None;
        }
        read_secret(&mut event, in_session(layout.master_key), 0)?;
        event.secret_len = length as u32;
        set_label(&mut event, b"CLIENT_RANDOM");
        let _ = OPENSSL_SENT.insert(&event.random, &0, 0);
        submit_secret(&event);
        return Some(());
    }
    // The suite's hash: SHA-384 for TLS_AES_256_GCM_SHA384, SHA-256 for every other.
    // SAFETY: as above.
    let cipher: u64 = unsafe { bpf_probe_read_user(in_session(layout.session_cipher).cast()) }.ok()?;
    let suite: u64 = if cipher == 0 {
        // SAFETY: as above.
        unsafe { bpf_probe_read_user(in_session(layout.session_cipher_id).cast()) }.ok()?
    } else {
        // SAFETY: as above.
        let id: u32 =
            unsafe { bpf_probe_read_user((cipher + u64::from(layout.cipher_id)) as *const u32) }.ok()?;
        u64::from(id)
    };
    let hash_len: u32 = if suite & 0xffff == 0x1302 { 48 } else { 32 };
    // SAFETY: as above.
    let start: [u64; 2] = unsafe { bpf_probe_read_user(at(layout.client_app_traffic_secret).cast()) }.ok()?;
    if start == [0; 2] {
        // The handshake is not done yet: looked at again on the next call.
        return None;
    }
    // Fenced after the checks above, so that only a call that would send counts, and a
    // fenced end leaves the session to the other end.
    if !tls_task_allowed() {
        return None;
    }
    let _ = OPENSSL_SENT.insert(&event.random, &0, 0);
    event.secret_len = hash_len;
    for (label, offset) in [
        (&b"CLIENT_TRAFFIC_SECRET_0"[..], layout.client_app_traffic_secret),
        (&b"SERVER_TRAFFIC_SECRET_0"[..], layout.server_app_traffic_secret),
        (&b"EXPORTER_SECRET"[..], layout.exporter_master_secret),
    ] {
        read_secret(&mut event, at(offset), 0)?;
        set_label(&mut event, label);
        submit_secret(&event);
    }
    read_secret(&mut event, at(layout.handshake_secret), 0)?;
    read_secret(
        &mut event,
        at(layout.handshake_traffic_hash),
        TLS_HANDSHAKE_HASH_AT,
    )?;
    event.secret_len = TLS_HANDSHAKE_HASH_AT as u32 + hash_len;
    set_label(&mut event, TLS_HANDSHAKE_LABEL);
    submit_secret(&event);
    Some(())
}

/// Reads [`SECRET_READ`] bytes at `from` in the probed process into `event.secret[at..]`.
#[inline(always)]
fn read_secret(event: &mut TlsSecretEvent, from: *const u8, at: usize) -> Option<()> {
    let dst = event.secret.get_mut(at..at + SECRET_READ)?;
    // SAFETY: a read of the probed process's memory; a fault returns an error.
    unsafe { bpf_probe_read_user_buf(from, dst) }.ok()
}

#[inline(always)]
fn set_label(event: &mut TlsSecretEvent, label: &[u8]) {
    let len = label.len().min(TLS_LABEL_MAX);
    event.label = [0; TLS_LABEL_MAX];
    event.label[..len].copy_from_slice(&label[..len]);
    event.label_len = len as u32;
}
