//! The `podcap` program (also run as the kubectl plugin `kubectl-podcap`): snapshots from
//! every sensor, merged into one time-ordered pcapng.
//!
//! Rules: sensors are the `--sensor` URLs or, without any, the sensor pods found through the
//! Kubernetes API and reached by port-forward ([`crate::discovery`]); at most `--parallel`
//! sensors are asked at once; a sensor that fails (or a sensor pod that cannot be reached)
//! is named with its reason, the others' packets are kept, and the exit status is non-zero
//! unless `--allow-partial`. Errors print their whole chain; a closed stdout is not an error.

use std::{
    io::{self, Write},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::{bail, Context, Result};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use podcap_format::units;

use self::{
    archive::{archive_command, ArchiveAction},
    live::live_command,
    record::{record_command, RecordAction},
    segments::segments_command,
    snapshot::{snapshot_command, SnapshotAction},
};
use crate::{
    discovery::{Cluster, ClusterOptions, Role, TapScope},
    output::Output,
    reached::Reached,
    source::named_sensors,
};

mod archive;
mod config;
mod dump;
mod empty;
mod live;
mod record;
mod segments;
mod snapshot;
mod status;

#[derive(Parser)]
#[command(
    name = "podcap",
    version,
    about = "Take pod traffic snapshots from podcap sensors"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Connection {
    /// A sensor's API URL (repeatable), like `http://198.18.0.2:9090`, optionally named
    /// (`node-a=http://...`). Without any, the sensor pods are found through the Kubernetes
    /// API and reached through its port-forward.
    #[arg(long = "sensor", value_name = "[NAME=]URL")]
    sensors: Vec<String>,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// How many sensors are asked at once.
    #[arg(long, default_value_t = 8, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    parallel: u16,
    /// File holding the bearer token (the sensors' read token; changing settings needs
    /// their admin token); or the token itself in the environment variable `PODCAP_TOKEN`.
    /// Without either, it is read from the Secret the sensor pods name.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Certificate authorities (PEM) that `https://` sensors are checked against, instead
    /// of the public ones.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Give up a sensor that sends no byte for this long (default 30s): it is named and
    /// counted as failed, and the others' data is kept. Not a deadline: a download that
    /// keeps sending runs as long as it takes. `live` takes none (a quiet pod sends nothing).
    #[arg(long, value_name = "DUR", value_parser = parse_request_timeout)]
    request_timeout: Option<std::time::Duration>,
    #[arg(long = "token", env = "PODCAP_TOKEN", hide_env_values = true, hide = true)]
    token: Option<String>,
}

/// `--from`/`--to`: an RFC 3339 time with its offset, kept as given (the sensors are asked
/// with it). A time without an offset could be any zone's: refused with the same time
/// written correctly.
fn parse_time(text: &str) -> Result<String, String> {
    match units::parse_rfc3339(text) {
        Ok(_) => Ok(text.to_owned()),
        Err(_) if units::parse_rfc3339(&format!("{}Z", text.trim())).is_ok() => Err(format!(
            "{text} has no offset, so it could be any time zone's: write {}Z for UTC, or \
             {}+01:00 for an hour east of it",
            text.trim(),
            text.trim()
        )),
        Err(e) => Err(format!("{e} (a time looks like 2026-12-07T00:00:10Z)")),
    }
}

/// `--request-timeout`: a duration (`30s`, `2m`), not zero.
fn parse_request_timeout(text: &str) -> Result<std::time::Duration, String> {
    match units::parse_duration(text) {
        Ok(duration) if duration.is_zero() => {
            Err("give a time such as 30s or 2m; 0 would give up every sensor".into())
        }
        Ok(duration) => Ok(duration),
        Err(e) => Err(e.to_string()),
    }
}

/// Where the cluster is, when sensors are found through the Kubernetes API.
#[derive(Args, Clone)]
struct ClusterArgs {
    /// Kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: the current one).
    #[arg(long, value_name = "NAME")]
    context: Option<String>,
    /// Namespace podcap is installed in (default: podcap). Not `--namespace`: that is
    /// `-n`, the pods' namespace, as kubectl users read it.
    #[arg(short = 's', long = "release-namespace", value_name = "NS")]
    release_namespace: Option<String>,
}

/// The time window of a download or a snapshot.
#[derive(Args, Clone)]
struct WindowArgs {
    /// How far back from now (e.g. 5m).
    #[arg(long, value_name = "DUR", conflicts_with_all = ["from", "to"])]
    time: Option<String>,
    /// Start (RFC 3339, with its offset: 2026-12-07T00:00:10Z, or +01:00 for CET).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    from: Option<String>,
    /// End (RFC 3339, with its offset; default now).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    to: Option<String>,
}

/// A window: `[from, to)` in ns, and how the sensors are asked for it.
struct Window {
    from_ns: u64,
    to_ns: u64,
    params: Vec<(&'static str, String)>,
}

impl WindowArgs {
    fn resolve(&self, now: u64) -> Result<Window> {
        match (&self.time, &self.from, &self.to) {
            (Some(t), None, None) => Ok(Window {
                from_ns: units::parse_last(t, now).context("--time")?,
                to_ns: now,
                params: vec![("last", t.clone())],
            }),
            (None, Some(f), to) => {
                let from_ns = units::parse_rfc3339(f).context("--from")?;
                let to_ns = to
                    .as_deref()
                    .map(units::parse_rfc3339)
                    .transpose()
                    .context("--to")?
                    .unwrap_or(now);
                if from_ns > to_ns {
                    bail!("--from is after --to");
                }
                let mut params = vec![("from", f.clone())];
                params.extend(to.clone().map(|t| ("to", t)));
                Ok(Window {
                    from_ns,
                    to_ns,
                    params,
                })
            }
            (None, None, Some(_)) => bail!("--to needs --from"),
            _ => bail!("give --time DUR, or --from TIME [--to TIME]"),
        }
    }
}

/// What a download selects, applied by each sensor where the data is.
#[derive(Args, Clone, Default)]
struct SelectArgs {
    /// Only packets this capture filter accepts: tcpdump syntax, pcap-filter(7), such as
    /// 'tcp port 443' (not a Wireshark display filter such as 'tcp.port == 443').
    #[arg(long, value_name = "EXPR")]
    filter: Option<String>,
    /// Only pods whose names this regular expression matches (by the interface they were
    /// recorded on, never by address).
    #[arg(long, value_name = "REGEX")]
    pod: Option<String>,
    /// Only pods in this namespace (repeatable: any of them), as kubectl's -n/--namespace.
    #[arg(
        short = 'n',
        long = "namespace",
        visible_alias = "namespaces",
        value_name = "NS"
    )]
    namespaces: Vec<String>,
    /// Only these interfaces (comma-separated, as the sensors name them).
    #[arg(long, value_name = "IFACES")]
    iface: Option<String>,
}

impl SelectArgs {
    fn params(&self) -> Vec<(&'static str, String)> {
        let mut params = Vec::new();
        params.extend(self.filter.clone().map(|f| ("filter", f)));
        params.extend(self.pod.clone().map(|p| ("pod", p)));
        params.extend(self.namespaces.iter().map(|n| ("namespace", n.clone())));
        params.extend(self.iface.clone().map(|i| ("iface", i)));
        params
    }
}

/// A query string of `params`, encoded.
fn query(params: &[(&str, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())))
        .finish()
}

/// The namespace podcap is installed in when `-s/--release-namespace` is not given.
const DEFAULT_RELEASE_NAMESPACE: &str = "podcap";

impl ClusterArgs {
    fn namespace(&self) -> &str {
        self.release_namespace
            .as_deref()
            .unwrap_or(DEFAULT_RELEASE_NAMESPACE)
    }

    /// The flags given that only say where the cluster is (a `--sensor` run has no use
    /// for them).
    fn given(&self) -> Vec<&'static str> {
        let mut given = Vec::new();
        if self.kubeconfig.is_some() {
            given.push("--kubeconfig");
        }
        if self.context.is_some() {
            given.push("--context");
        }
        if self.release_namespace.is_some() {
            given.push("-s/--release-namespace");
        }
        given
    }

    fn connect(&self) -> Result<Cluster> {
        Cluster::connect(&ClusterOptions {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            namespace: self.namespace().to_owned(),
        })
    }
}

/// The exit statuses of `podcap dump`, as its `--help` says them (and the README).
const DUMP_EXIT_STATUS: &str = "Exit status:
  0  the file holds everything asked for
  1  an error; or the file is incomplete (a sensor failed, data was lost): --allow-partial exits 0
  2  the command line is wrong
  3  no packet matched: no file written (--allow-empty writes it and exits 0)";

#[derive(Subcommand)]
enum Command {
    /// Print a shell completion script: `source <(podcap completion bash)`, or into
    /// `~/.zsh/completions/_podcap`, or `podcap completion fish | source`.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Download a time slice from every sensor, merged into one pcapng file.
    #[command(after_help = DUMP_EXIT_STATUS)]
    Dump(dump::DumpArgs),
    /// What an archive holds (`podcap archive ls URL`).
    Archive {
        #[command(subcommand)]
        action: ArchiveAction,
    },
    /// Stream new packets from every sensor, merged, as pcapng on stdout
    /// (`podcap live --sensor URL | wireshark -k -i -`).
    Live {
        /// Stop after this many packets (like tcpdump -c).
        #[arg(long, short = 'c', value_name = "N")]
        count: Option<u64>,
        #[command(flatten)]
        select: SelectArgs,
        #[command(flatten)]
        connection: Connection,
    },
    /// Show, or change, the recording settings of every sensor: a change is checked by
    /// every sensor first and applied to all of them or none.
    Config {
        /// Start (true) or stop (false) recording without restarting the sensors.
        #[arg(long, value_name = "BOOL")]
        enable: Option<bool>,
        /// Total size of each sensor's store (e.g. 500MB).
        #[arg(long, value_name = "SIZE")]
        max_size: Option<String>,
        /// Time window of each sensor's store (e.g. 2h).
        #[arg(long, value_name = "DUR")]
        max_time: Option<String>,
        /// Apply a retention change even though it deletes recorded data at once (without
        /// it, such a change only says what it would delete).
        #[arg(long, short = 'y')]
        yes: bool,
        /// Change the sensors that can be asked and leave those that cannot (named) as they
        /// are. Without it, a sensor that cannot be asked stops the change before any
        /// sensor is changed.
        #[arg(long)]
        skip_unreachable: bool,
        /// How the settings are shown: `table`, or `json` / `yaml` for scripts.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
        #[command(flatten)]
        connection: Connection,
    },
    /// What every sensor is doing: version, mode, interfaces, what its store holds, drops,
    /// settings, TLS probes, archive backlog. Exits non-zero naming any that did not answer.
    Status {
        /// `table` for people, `json` or `yaml` for scripts (each sensor's whole status).
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
        #[command(flatten)]
        connection: Connection,
    },
    /// The client's version and every sensor's (as `kubectl version`). Exits non-zero
    /// naming any sensor that did not answer.
    Version {
        /// Only the client's version: no sensor is asked.
        #[arg(long)]
        client: bool,
        /// `table` for people, `json` or `yaml` for scripts.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
        #[command(flatten)]
        connection: Connection,
    },
    /// List what each sensor holds.
    Segments {
        /// `table` for people, `json` or `yaml` for scripts (times as RFC 3339 to the nanosecond).
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
        #[command(flatten)]
        connection: Connection,
    },
    /// Keep a window of the sensors' stores past the rolling window, as a named snapshot on
    /// each node; list and delete them (`podcap dump --snapshot NAME` downloads one).
    Snapshot {
        #[command(subcommand)]
        action: SnapshotAction,
    },
    /// Record a selection on a schedule into its own folder on each node, past the rolling
    /// window (Kubeshark's Traffic Recorder); list and delete the jobs (`podcap dump
    /// --recording NAME` downloads what one recorded).
    Record {
        #[command(subcommand)]
        action: RecordAction,
    },
    /// Change which pods every sensor records, cluster-wide, by updating podcap's ConfigMap
    /// (like `kubeshark tap`); the sensors apply it once the kubelet has refreshed the
    /// mounted file (up to a minute).
    Tap {
        /// Pod names to record (a regex; empty or absent: all pods).
        #[arg(value_name = "REGEX")]
        regex: Option<String>,
        /// Only pods in this namespace (repeatable: any of them; none: all namespaces).
        #[arg(
            short = 'n',
            long = "namespace",
            visible_alias = "namespaces",
            value_name = "NS"
        )]
        namespaces: Vec<String>,
        /// Never pods in these namespaces (repeatable).
        #[arg(long = "exclude-namespace", value_name = "NS")]
        excluded_namespaces: Vec<String>,
        /// A tcpdump filter on everything recorded (`--filter ''` removes it; absent: kept).
        #[arg(long, value_name = "EXPR")]
        filter: Option<String>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

/// Which part of an archive to read.
#[derive(Args, Clone)]
struct OfflineArgs {
    /// The cluster's name in the archive (as the sensors' --archive-cluster).
    #[arg(long, default_value = "default", value_name = "NAME", env = "PODCAP_CLUSTER")]
    cluster: String,
    /// Only these nodes (repeatable).
    #[arg(long = "archive-node", value_name = "NODE", requires = "archive")]
    nodes: Vec<String>,
}

/// Runs the program under the name it was called by (`podcap`, `kubectl podcap`).
#[must_use]
pub fn main(program: &'static str) -> ExitCode {
    let matches = Cli::command().name(program).bin_name(program).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            if e.chain().any(|c| {
                c.downcast_ref::<io::Error>()
                    .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("{program}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn token(connection: &Connection) -> Result<Option<String>> {
    if let Some(path) = &connection.token_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--token-file: cannot read {}", path.display()))?;
        return Ok(Some(text.trim().to_owned()));
    }
    Ok(connection.token.clone().filter(|t| !t.is_empty()))
}

fn reach(connection: &Connection, role: Role) -> Result<Reached> {
    let timeout = connection
        .request_timeout
        .unwrap_or(crate::source::DEFAULT_REQUEST_TIMEOUT);
    reach_timed(connection, role, Some(timeout))
}

/// [`reach`], with `request_timeout` (none: streams that may be quiet for long).
fn reach_timed(
    connection: &Connection,
    role: Role,
    request_timeout: Option<std::time::Duration>,
) -> Result<Reached> {
    let token = token(connection)?;
    let parallel = usize::from(connection.parallel);
    let agent = crate::source::agent(connection.ca_file.as_deref(), request_timeout)?;
    if !connection.sensors.is_empty() {
        let ignored = connection.cluster.given();
        if !ignored.is_empty() {
            bail!(
                "{}: {} where to find sensor pods through the Kubernetes API, and --sensor names                  the sensors: give one or the other",
                ignored.join(", "),
                if ignored.len() == 1 { "says" } else { "say" }
            );
        }
        return Ok(Reached {
            sensors: named_sensors(&connection.sensors, &agent, request_timeout)?,
            unreachable: Vec::new(),
            token,
            parallel,
            _cluster: None,
        });
    }
    let cluster = connection.cluster.connect()?;
    let found = cluster.find_sensors(&agent, request_timeout, token.is_none().then_some(role))?;
    Ok(Reached {
        sensors: found.sensors,
        unreachable: found.unreachable,
        token: token.or(found.token),
        parallel,
        _cluster: Some(cluster),
    })
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Completion { shell } => {
            // Into memory first: the generator panics on a closed pipe (`| head`).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "podcap", &mut script);
            io::stdout().write_all(&script)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dump(args) => dump::command(args),
        Command::Snapshot { action } => snapshot_command(action),
        Command::Archive { action } => archive_command(action),
        Command::Record { action } => record_command(action),
        Command::Config {
            enable,
            max_size,
            max_time,
            yes,
            skip_unreachable,
            output,
            connection,
        } => {
            let change = config::Change {
                enable,
                max_size,
                max_time,
            };
            let consent = config::Consent {
                yes,
                skip_unreachable,
            };
            config::command(&change, consent, output, &connection)
        }
        Command::Segments { output, connection } => segments_command(&connection, output),
        Command::Status { output, connection } => status::status_command(&connection, output),
        Command::Version {
            client,
            output,
            connection,
        } => status::version_command(client, &connection, output),
        Command::Live {
            count,
            select,
            connection,
        } => live_command(count, &select, &connection),
        Command::Tap {
            regex,
            namespaces,
            excluded_namespaces,
            filter,
            cluster,
        } => {
            let scope = TapScope {
                regex: regex.unwrap_or_default(),
                namespaces,
                excluded_namespaces,
                filter,
            };
            let (name, _) = cluster.connect()?.retarget(|doc| scope.apply(doc))?;
            eprintln!(
                "podcap: ConfigMap {}/{name} now records {}; the sensors apply it when the \
                 kubelet refreshes the mounted file (up to a minute)",
                cluster.namespace(),
                scope.describe()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

impl WindowArgs {
    fn given(&self) -> bool {
        self.time.is_some() || self.from.is_some() || self.to.is_some()
    }

    /// `[from, to)` of the window given; without one, everything (or, when `required`
    /// says so, an error naming what is missing).
    fn resolve_or_all(&self, required: Option<&str>) -> Result<(u64, u64)> {
        if self.given() {
            let w = self.resolve(units::now_ns())?;
            return Ok((w.from_ns, w.to_ns));
        }
        match required {
            Some(what) => bail!("{what}"),
            None => Ok((0, u64::MAX)),
        }
    }
}

/// Whether `name` can name a snapshot (the sensors' rule, checked before any is asked).
fn check_name(name: &str) -> Result<()> {
    if !podcap_format::recording::valid_name(name) {
        bail!("name {name:?}: use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit (like incident-2026-11-30)");
    }
    Ok(())
}
