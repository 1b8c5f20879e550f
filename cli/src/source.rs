//! Where sensors come from, and how one is asked. [`named_sensors`] takes `--sensor
//! [NAME=]URL`s; [`crate::discovery`] finds sensor pods and port-forwards to them, handing
//! out the same [`Sensor`]s (loopback URLs).
use std::{
    io::{Read, Write},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use rustls::pki_types::{pem::PemObject, CertificateDer};

/// A sensor answered, and said no (an HTTP error status, with its message).
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}: {}", self.status, self.message)
    }
}

impl std::error::Error for Refused {}

/// Why the last forward of a sensor failed: the local end also gets a `502`, which a TLS
/// client cannot read, so the reason is kept here for the error message too.
pub type TunnelFailure = std::sync::Arc<std::sync::Mutex<Option<String>>>;

/// A sensor the CLI can talk to.
#[derive(Clone, Debug)]
pub struct Sensor {
    /// Names the sensor in messages and prefixes its interfaces in merged files.
    pub label: String,
    pub base_url: String,
    /// How it is reached: one agent per command (its connections, its TLS roots).
    pub agent: ureq::Agent,
    /// Through a port-forward: why its last forward failed, if it did.
    pub tunnel_failure: Option<TunnelFailure>,
    /// How long it may send nothing before it is given up (`--request-timeout`; none: a
    /// live stream, which may be quiet for as long as its pods are).
    pub request_timeout: Option<Duration>,
}

/// The default of `--request-timeout`, kubectl's: 30 s without a byte.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTP(S) agent of a command: sensors that cannot be reached are named quickly; one
/// that sends no byte for `request_timeout` is given up (bodies may stream for long, so
/// this is a time without progress, not a deadline); `https://` sensors are checked
/// against the roots of `ca_file` (PEM) when given, else the public roots.
pub fn agent(ca_file: Option<&std::path::Path>, request_timeout: Option<Duration>) -> Result<ureq::Agent> {
    match ca_file {
        None => Ok(agent_builder(request_timeout).build()),
        Some(path) => {
            let pem = std::fs::read(path).with_context(|| format!("--ca-file {}", path.display()))?;
            agent_trusting(&pem, request_timeout).with_context(|| format!("--ca-file {}", path.display()))
        }
    }
}

fn agent_builder(request_timeout: Option<Duration>) -> ureq::AgentBuilder {
    let builder = ureq::AgentBuilder::new().timeout_connect(Duration::from_secs(10));
    // ureq sets it on the socket: it bounds each read, so it is the time without a byte.
    match request_timeout {
        Some(timeout) => builder.timeout_read(timeout),
        None => builder,
    }
}

/// An agent that trusts only the certificate authorities in `pem`.
pub fn agent_trusting(pem: &[u8], request_timeout: Option<Duration>) -> Result<ureq::Agent> {
    let mut roots = rustls::RootCertStore::empty();
    let certificates = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>()?;
    let (added, _) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        bail!("no certificate in it");
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(agent_builder(request_timeout)
        .tls_config(std::sync::Arc::new(config))
        .build())
}

/// The sensors named on the command line (`--sensor [NAME=]URL`).
///
/// The same sensor given twice is asked once: a URL given again (under any name) is
/// dropped, with a note when the names differ; one name for two URLs is refused (the name
/// prefixes each sensor's interfaces in the merged file).
pub fn named_sensors(
    urls: &[String],
    agent: &ureq::Agent,
    request_timeout: Option<Duration>,
) -> Result<Vec<Sensor>> {
    let mut sensors: Vec<Sensor> = Vec::new();
    for given in urls {
        // `NAME=http://...` names the sensor; a URL alone is named by its host.
        let (name, url) = match given.split_once('=') {
            Some((name, url)) if !name.contains('/') => (Some(name), url),
            _ => (None, given.as_str()),
        };
        let (scheme, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(rest), _) => ("http", rest),
            (_, Some(rest)) => ("https", rest),
            _ => bail!("--sensor {given:?}: expected [NAME=]http://HOST:PORT or https://HOST:PORT"),
        };
        let host = rest.split('/').next().unwrap_or_default();
        if host.is_empty() {
            bail!("--sensor {given:?}: no host");
        }
        if name.is_some_and(|n| n.is_empty() || n.contains(char::is_whitespace)) {
            bail!("--sensor {given:?}: the name before '=' must be a word like node-a");
        }
        let label = name.unwrap_or(host).to_owned();
        let base_url = format!("{scheme}://{host}");
        if let Some(earlier) = sensors.iter().find(|s| s.base_url == base_url) {
            if earlier.label != label {
                eprintln!(
                    "podcap: --sensor {given}: the same sensor as {}, asked once as {}",
                    earlier.label, earlier.label
                );
            }
            continue;
        }
        if let Some(earlier) = sensors.iter().find(|s| s.label == label) {
            bail!(
                "--sensor {given:?}: the name {label} is already {}; give each sensor its own name (NAME=URL)",
                earlier.base_url
            );
        }
        sensors.push(Sensor {
            label,
            base_url,
            agent: agent.clone(),
            tunnel_failure: None,
            request_timeout,
        });
    }
    Ok(sensors)
}

impl Sensor {
    fn request(&self, path: &str, token: Option<&str>) -> Result<ureq::Response> {
        self.send("GET", path, token, None)
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Result<ureq::Response> {
        let mut request = self.agent.request(method, &format!("{}{path}", self.base_url));
        if let Some(token) = token {
            request = request.set("Authorization", &format!("Bearer {token}"));
        }
        let result = match body {
            Some(body) => request.set("Content-Type", "application/json").send_string(body),
            None => request.call(),
        };
        match result {
            Ok(response) => Ok(response),
            Err(ureq::Error::Status(code, response)) => {
                let answer = response.into_string().unwrap_or_default();
                let message =
                    serde_json::from_str::<podcap_api::ErrorBody>(&answer).map_or(answer, |body| body.error);
                let mut message = message.trim().to_owned();
                if code == 400 && message.starts_with("filter") {
                    if let Some(filter) = filter_asked(path, body) {
                        message = format!(
                            "{message} (in {filter:?}: capture filters use tcpdump syntax \
                             (pcap-filter), not Wireshark display filters: 'host 198.18.0.1 and tcp \
                             port 443', not 'ip.addr == 198.18.0.1 && tcp.port == 443')"
                        );
                    }
                }
                if code == 401 {
                    message.push_str(
                        " (the token is missing or not this sensor's: give it with --token-file FILE \
                         or in PODCAP_TOKEN)",
                    );
                }
                Err(Refused {
                    status: code,
                    message,
                }
                .into())
            }
            Err(e) => {
                let tunnel = self.tunnel_failure.as_ref().and_then(|f| {
                    f.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .clone()
                });
                // (Named sensors only: a port-forward is spoken to as the pods say.)
                if self.tunnel_failure.is_none()
                    && self.base_url.starts_with("https://")
                    && plain_http_answer(&e)
                {
                    bail!(
                        "the sensor speaks http, not https: give it as http://{} (or serve TLS with \
                         the sensor's --tls-cert and --tls-key)",
                        self.base_url.trim_start_matches("https://")
                    );
                }
                if let (Some(timeout), true) = (self.request_timeout, transport_timed_out(&e)) {
                    bail!(
                        "the sensor took the connection but sent nothing for {timeout:?} (--request-timeout)"
                    );
                }
                match tunnel {
                    Some(reason) => bail!("cannot reach the sensor: {reason}"),
                    // The transport error's own text already ends with its cause (the OS
                    // error): as a chain, anyhow would print that cause twice.
                    None => bail!("cannot reach the sensor: {}", dedup_causes(&e)),
                }
            }
        }
    }

    /// A GET whose answer is one of the API's types (`podcap-api`).
    pub fn get<T: serde::de::DeserializeOwned>(&self, path: &str, token: Option<&str>) -> Result<T> {
        let response = self.request(path, token)?;
        serde_json::from_reader(response.into_reader())
            .context("the sensor's answer is not what its API says")
    }

    /// A PATCH of `body` whose answer is one of the API's types.
    pub fn patch<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        token: Option<&str>,
        body: &impl serde::Serialize,
    ) -> Result<T> {
        let body = serde_json::to_string(body).context("the request's body")?;
        let response = self.send("PATCH", path, token, Some(&body))?;
        serde_json::from_reader(response.into_reader())
            .context("the sensor's answer is not what its API says")
    }

    /// A POST of `body` whose answer is one of the API's types.
    pub fn post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        token: Option<&str>,
        body: &impl serde::Serialize,
    ) -> Result<T> {
        let body = serde_json::to_string(body).context("the request's body")?;
        let response = self.send("POST", path, token, Some(&body))?;
        serde_json::from_reader(response.into_reader())
            .context("the sensor's answer is not what its API says")
    }

    /// A GET's answer as the sensor wrote it, every field kept, also those this client
    /// does not know: only for `-o json|yaml` of `podcap status`, which hands a sensor's
    /// document on whole. Everything the CLI reads itself goes through [`Sensor::get`].
    pub fn get_document(&self, path: &str, token: Option<&str>) -> Result<serde_json::Value> {
        let response = self.request(path, token)?;
        serde_json::from_reader(response.into_reader()).context("the sensor's answer is not JSON")
    }

    pub fn delete(&self, path: &str, token: Option<&str>) -> Result<()> {
        self.send("DELETE", path, token, None).map(drop)
    }

    /// The body of a GET, to read as it comes (the live stream).
    pub fn stream(&self, path: &str, token: Option<&str>) -> Result<impl Read + Send + use<>> {
        Ok(self.request(path, token)?.into_reader())
    }

    /// The interface of the first packet a GET's body holds (none: it holds no packet).
    /// Reads only up to that packet, then drops the connection: a probe, not a download.
    pub fn first_packet_interface(&self, path: &str, token: Option<&str>) -> Result<Option<String>> {
        let mut reader = self.request(path, token)?.into_reader();
        let mut head = Vec::new();
        let mut buf = vec![0u8; 1 << 14];
        let mut counter = crate::progress::BlockCounter::default();
        loop {
            let n = reader.read(&mut buf).context("the answer broke off")?;
            if n == 0 {
                // A packet's head without its whole block still says one was there.
                return Ok((counter.packets > 0).then(String::new));
            }
            counter.feed(&buf[..n]);
            head.extend_from_slice(&buf[..n]);
            if counter.packets > 0 {
                let whole = podcap_format::pcapng::read::complete_prefix_len(&head);
                if let Some((name, _)) = podcap_format::pcapng::read::packets_with_names(&head[..whole])
                    .ok()
                    .and_then(|packets| packets.into_iter().next())
                {
                    return Ok(Some(name));
                }
            }
        }
    }

    /// Streams the body into `out`, counting into `tally`; returns its length and the
    /// SHA-256 the sensor gave for it (`x-podcap-sha256`, a kept snapshot's), checked:
    /// a body that is not what the sensor says it holds is an error.
    pub fn download(
        &self,
        path: &str,
        token: Option<&str>,
        out: &mut impl Write,
        tally: &crate::progress::Tally,
    ) -> Result<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let response = self.request(path, token)?;
        let promised = response.header("x-podcap-sha256").map(str::to_owned);
        match response.header("x-podcap-secrets") {
            Some("withheld") => tally.secrets_withheld.store(true, Relaxed),
            Some("included") => tally.secrets_included.store(true, Relaxed),
            _ => {}
        }
        // Hashed only when there is something to check it against (a rolling slice has no
        // manifest): SHA-256 was a fifth of a large dump's CPU.
        let mut digest = promised
            .as_ref()
            .map(|_| ring::digest::Context::new(&ring::digest::SHA256));
        let mut reader = response.into_reader();
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        let mut counter = crate::progress::BlockCounter::default();
        loop {
            let n = match reader.read(&mut buf) {
                Ok(n) => n,
                Err(e) if timed_out(&e) => bail!(
                    "the download stalled: no byte for {:?} (--request-timeout), after {total} bytes",
                    self.request_timeout.unwrap_or_default()
                ),
                Err(e) => return Err(anyhow::Error::new(e).context("the download broke off")),
            };
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])?;
            if let Some(digest) = &mut digest {
                digest.update(&buf[..n]);
            }
            total += n as u64;
            counter.feed(&buf[..n]);
            tally.bytes.store(total, Relaxed);
            tally.packets.store(counter.packets, Relaxed);
        }
        tally.done.store(true, Relaxed);
        if let (Some(promised), Some(digest)) = (promised, digest) {
            let got = hex(digest.finish().as_ref());
            if !got.eq_ignore_ascii_case(&promised) {
                bail!("what arrived ({total} bytes) is not what the sensor holds: SHA-256 {got}, the sensor's manifest says {promised}");
            }
        }
        Ok(total)
    }
}

/// Whether a read gave up for want of a byte (a socket's read timeout: `WouldBlock` on
/// Linux, `TimedOut` where ureq or the platform says so).
fn timed_out(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    )
}

/// The filter expression a request carried: the `filter` of its query, or of its JSON body.
fn filter_asked(path: &str, body: Option<&str>) -> Option<String> {
    let from_query = path.split_once('?').and_then(|(_, query)| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == "filter")
            .map(|(_, value)| value.into_owned())
    });
    from_query.or_else(|| {
        body.and_then(|b| serde_json::from_str::<FilterOf>(b).ok())
            .and_then(|asked| asked.filter)
    })
}

/// The `filter` of a request's body (a `SnapshotRequest` or a `RecordingJob`; any other
/// field is left unread).
#[derive(serde::Deserialize)]
struct FilterOf {
    #[serde(default)]
    filter: Option<String>,
}

/// Whether a TLS handshake failed because the other end answered in plain HTTP (rustls
/// reads its first bytes, `HTTP/1.1 400`, as a record of an unknown content type).
fn plain_http_answer(error: &ureq::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(c) = cause {
        let tls = c.downcast_ref::<rustls::Error>().or_else(|| {
            c.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if matches!(
            tls,
            Some(rustls::Error::InvalidMessage(
                rustls::InvalidMessage::InvalidContentType
            ))
        ) {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Whether a transport error is a read that timed out.
fn transport_timed_out(error: &ureq::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(c) = cause {
        if c.downcast_ref::<std::io::Error>().is_some_and(timed_out) {
            return true;
        }
        cause = c.source();
    }
    false
}

/// `error`'s text with each cause in its chain that the text does not already say.
fn dedup_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let said = c.to_string();
        if !text.contains(&said) {
            text = format!("{text}: {said}");
        }
        cause = c.source();
    }
    text
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
