//! Command line and environment configuration of the `bitriver` binary.
//!
//! Data flow: clap parses flags and their `BITRIVER_LIVE_*` environment twins into [`Cli`]
//! (raw, as the operator typed them: addresses stay strings because their defaults depend on
//! `--mode`). [`Config::validate`] then resolves everything into a [`ValidatedConfig`] of socket
//! addresses, paths and sets, or fails with a [`ConfigError`] whose one-line message names the
//! offending flag. `main` prints that as `bitriver: <error>` and exits with status 2, the same
//! status clap uses for usage errors.
//!
//! Nothing here binds sockets or touches the data directory; the only I/O is checking that the
//! TLS files exist and resolving host names given to address flags.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Prefix shared by the environment twin of every flag.
pub const ENV_PREFIX: &str = "BITRIVER_LIVE_";

/// Exit status for usage and configuration errors (matches clap's own).
pub const USAGE_EXIT_CODE: i32 = 2;

// ---------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------

/// `bitriver [FLAGS]` runs a node; `bitriver cluster ...` administers the local cluster state.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "bitriver",
    version,
    // A flag given twice takes the last value (scripts and tests append overrides).
    args_override_self = true,
    about = "BitRiver Live: self-hosted live streaming in one binary",
    long_about = "BitRiver Live: self-hosted live streaming in one binary.\n\n\
                  Without a subcommand, runs a node with the given roles. Every flag has an \
                  environment twin named BITRIVER_LIVE_*; a flag given on the command line wins."
)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands of `bitriver`.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Cluster administration: join tokens, status, removing nodes.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Accounts: create users (the first admin, for one) through the running node.
    #[command(subcommand)]
    User(UserCommand),
    /// Install this binary as a systemd service on this machine (a home server): the bitriver
    /// user, /var/lib/bitriver, /etc/bitriver/bitriver.env and bitriver.service, enabled and
    /// started. Run it again to upgrade: settings are kept, the service restarts on the new binary.
    Install(InstallArgs),
}

/// `bitriver install [--dry-run] [--addr ADDR] [--log-dir DIR]`
#[derive(Debug, Clone, Args)]
pub struct InstallArgs {
    /// Print every step without changing anything.
    #[arg(long, env = "BITRIVER_LIVE_INSTALL_DRY_RUN")]
    pub dry_run: bool,

    /// HTTP listen address written to a new env file (an existing one is kept as it is).
    #[arg(long, value_name = "ADDR", env = "BITRIVER_LIVE_INSTALL_ADDR", default_value = ":80")]
    pub addr: String,

    /// Write the node's log to DIR/bitriver.log (DIR created, owned by the bitriver user) instead
    /// of the journal.
    #[arg(long, value_name = "DIR", env = "BITRIVER_LIVE_INSTALL_LOG_DIR")]
    pub log_dir: Option<PathBuf>,
}

/// `bitriver user ...`
#[derive(Debug, Clone, Subcommand)]
pub enum UserCommand {
    /// Create an account; the password is the first line of stdin (at least 8 characters).
    Create(UserCreateArgs),
}

/// `bitriver user create --email E [--display-name N] [--admin] [--role R]... --data DIR`
#[derive(Debug, Clone, Args)]
pub struct UserCreateArgs {
    /// Email address to sign in with.
    #[arg(long, value_name = "EMAIL", env = "BITRIVER_LIVE_USER_EMAIL")]
    pub email: String,

    /// Name shown to others [default: the part of the email before the @].
    #[arg(long, value_name = "NAME", env = "BITRIVER_LIVE_USER_DISPLAY_NAME")]
    pub display_name: Option<String>,

    /// Make the account an admin.
    #[arg(long, env = "BITRIVER_LIVE_USER_ADMIN")]
    pub admin: bool,

    /// A role to give (admin, creator, moderator, viewer); repeatable or comma-separated
    /// [default: viewer].
    #[arg(long = "role", value_name = "ROLE", env = "BITRIVER_LIVE_USER_ROLES", value_delimiter = ',')]
    pub roles: Vec<String>,

    #[command(flatten)]
    pub data: DataDirArg,
}

/// `bitriver cluster ...`
#[derive(Debug, Clone, Subcommand)]
pub enum ClusterCommand {
    /// Mint a join token for new nodes (printed on stdout).
    Token(ClusterTokenArgs),
    /// Show cluster membership, leader and replication progress.
    Status(ClusterStatusArgs),
    /// Remove a node from the cluster by its id.
    Remove(ClusterRemoveArgs),
    /// Revoke a node's certificate: every member refuses it from then on (and it is removed).
    Revoke(ClusterRevokeArgs),
    /// Mark a node draining: placement and edges stop choosing it for new work.
    Drain(ClusterDrainArgs),
    /// Undo `drain`: the node takes new work again.
    Undrain(ClusterDrainArgs),
}

/// `bitriver cluster drain|undrain [NODE_ID] --data DIR`
#[derive(Debug, Clone, Args)]
pub struct ClusterDrainArgs {
    /// Id of the node (as shown by `bitriver cluster status`); the node of `--data` if omitted,
    /// which is what a rolling upgrade runs on each host.
    #[arg(value_name = "NODE_ID", value_parser = clap::value_parser!(u64).range(1..))]
    pub node_id: Option<u64>,

    #[command(flatten)]
    pub data: DataDirArg,
}

/// The data directory argument shared by the `cluster` subcommands.
#[derive(Debug, Clone, Args)]
pub struct DataDirArg {
    /// Data directory of the local node (RocksDB catalog, cluster keys).
    #[arg(long = "data", value_name = "DIR", env = "BITRIVER_LIVE_DATA", default_value = "data")]
    pub data: PathBuf,
}

/// `bitriver cluster token --data DIR [--ttl 24h] [--uses 1]`
#[derive(Debug, Clone, Args)]
pub struct ClusterTokenArgs {
    #[command(flatten)]
    pub data: DataDirArg,

    /// How long the token stays valid: a number with a unit s, m, h or d (e.g. 30m, 24h, 7d).
    #[arg(
        long,
        value_name = "DURATION",
        env = "BITRIVER_LIVE_CLUSTER_TOKEN_TTL",
        default_value = "24h",
        value_parser = parse_ttl
    )]
    pub ttl: Duration,

    /// How many nodes may enrol with the token (each use is counted cluster-wide).
    #[arg(
        long,
        value_name = "N",
        env = "BITRIVER_LIVE_CLUSTER_TOKEN_USES",
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=1000)
    )]
    pub uses: u32,
}

/// `bitriver cluster status --data DIR [--json]`
#[derive(Debug, Clone, Args)]
pub struct ClusterStatusArgs {
    #[command(flatten)]
    pub data: DataDirArg,

    /// Print machine-readable JSON instead of a table.
    #[arg(long, env = "BITRIVER_LIVE_CLUSTER_STATUS_JSON")]
    pub json: bool,
}

/// `bitriver cluster remove NODE_ID --data DIR`
#[derive(Debug, Clone, Args)]
pub struct ClusterRemoveArgs {
    /// Id of the node to remove (as shown by `bitriver cluster status`).
    #[arg(value_name = "NODE_ID", value_parser = clap::value_parser!(u64).range(1..))]
    pub node_id: u64,

    #[command(flatten)]
    pub data: DataDirArg,
}

/// `bitriver cluster revoke NODE_ID --data DIR`
#[derive(Debug, Clone, Args)]
pub struct ClusterRevokeArgs {
    /// Id of the node whose certificate to revoke (as shown by `bitriver cluster status`).
    #[arg(value_name = "NODE_ID", value_parser = clap::value_parser!(u64).range(1..))]
    pub node_id: u64,

    #[command(flatten)]
    pub data: DataDirArg,
}

/// Flags of a running node, as given (see [`Config::validate`] for the resolved form).
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Development or production: picks defaults for --addr and --log-format.
    #[arg(long, value_enum, env = "BITRIVER_LIVE_MODE", default_value_t = Mode::Development)]
    pub mode: Mode,

    /// HTTP listen address, HOST:PORT or :PORT (all interfaces)
    /// [default: :8080 in development, :80 in production].
    #[arg(long, value_name = "ADDR", env = "BITRIVER_LIVE_ADDR")]
    pub addr: Option<String>,

    /// Data directory (RocksDB catalog, cluster keys); created if missing.
    #[arg(long, value_name = "DIR", env = "BITRIVER_LIVE_DATA", default_value = "data")]
    pub data: PathBuf,

    /// TLS certificate chain (PEM) for the HTTP listener; requires --tls-key.
    #[arg(long, value_name = "FILE", env = "BITRIVER_LIVE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM) for the HTTP listener; requires --tls-cert.
    #[arg(long, value_name = "FILE", env = "BITRIVER_LIVE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// Raft node id (>= 1); by default one is assigned at bootstrap or join and kept in --data.
    #[arg(long, value_name = "ID", env = "BITRIVER_LIVE_NODE_ID")]
    pub node_id: Option<u64>,

    /// Region (point of presence) this node runs in, used for placement.
    #[arg(long, value_name = "NAME", env = "BITRIVER_LIVE_REGION", default_value = "local")]
    pub region: String,

    /// Comma-separated roles to run: control, ingest, transcode, origin, edge (or all).
    #[arg(long, value_name = "LIST", env = "BITRIVER_LIVE_ROLES", default_value = "all")]
    pub roles: String,

    /// Cluster (Raft over QUIC, UDP) listen address, HOST:PORT or :PORT.
    #[arg(long, value_name = "ADDR", env = "BITRIVER_LIVE_CLUSTER_ADDR", default_value = ":7946")]
    pub cluster_addr: String,

    /// Cluster address other nodes dial, HOST:PORT
    /// [default: --cluster-addr with a wildcard host replaced by the advertised host].
    #[arg(long, value_name = "HOST:PORT", env = "BITRIVER_LIVE_CLUSTER_ADVERTISE")]
    pub cluster_advertise: Option<String>,

    /// Host (IP address or name) other nodes and viewers reach this node's wildcard listeners
    /// at [default: the host of --cluster-advertise, else the primary non-loopback interface
    /// address when a listener is on a wildcard address].
    #[arg(long, value_name = "HOST", env = "BITRIVER_LIVE_ADVERTISE_HOST")]
    pub advertise_host: Option<String>,

    /// Join an existing cluster through this member's cluster address; requires --join-token.
    #[arg(long, value_name = "HOST:PORT", env = "BITRIVER_LIVE_JOIN")]
    pub join: Option<String>,

    /// Join token from `bitriver cluster token` on a member of the cluster.
    #[arg(long, value_name = "TOKEN", env = "BITRIVER_LIVE_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<JoinToken>,

    /// Number of Raft voters to keep (1..=9); further nodes replicate as learners.
    #[arg(long, value_name = "N", env = "BITRIVER_LIVE_VOTERS", default_value_t = 3)]
    pub voters: u32,

    /// RTMP ingest listen address (ingest role).
    #[arg(long, value_name = "ADDR", env = "BITRIVER_LIVE_RTMP_ADDR", default_value = ":1935")]
    pub rtmp_addr: String,

    /// RTMPS ingest listen address (ingest role, when --tls-cert/--tls-key are given).
    #[arg(long, value_name = "ADDR", env = "BITRIVER_LIVE_RTMPS_ADDR", default_value = ":1936")]
    pub rtmps_addr: String,

    /// RTMP (and RTMPS) connections served at once, per listener; more wait in the accept queue
    /// (1 to 100000). Each costs a little memory before its stream key is checked.
    #[arg(long, value_name = "N", env = "BITRIVER_LIVE_RTMP_MAX_CONNECTIONS", default_value_t = 256)]
    pub rtmp_max_connections: usize,

    /// Merged reads (0 to 200 ms, default 0: off): a publishing RTMP connection pauses this long
    /// after each read that emptied its socket, so that the next read takes every frame sent
    /// meanwhile at once. Fewer wakeups and system calls per stream, for at most this much more
    /// latency; for ingest nodes that take many streams.
    #[arg(long, value_name = "MS", env = "BITRIVER_LIVE_RTMP_READ_MERGE_MS", default_value_t = 0)]
    pub rtmp_read_merge_ms: u64,

    /// Threads that run RTMP (and RTMPS) connections, per listener (0 to 256, default: one per
    /// core): each connection stays on one single-threaded runtime, as an nginx worker keeps
    /// its connections. 0 runs them on the node's shared runtime.
    #[arg(long, value_name = "N", env = "BITRIVER_LIVE_RTMP_THREADS")]
    pub rtmp_threads: Option<usize>,

    /// WebRTC media (WHIP publishers, WHEP viewers): one UDP port for every session, on the
    /// host of --addr (ingest and origin roles). 0 picks a free port. Firewalls open this one
    /// port; --webrtc-udp-ports gives each session its own instead.
    #[arg(long, value_name = "PORT", env = "BITRIVER_LIVE_WEBRTC_UDP_PORT", default_value_t = 8189)]
    pub webrtc_udp_port: u16,

    /// A UDP port range FIRST-LAST for WebRTC, one port per session (instead of
    /// --webrtc-udp-port).
    #[arg(long, value_name = "FIRST-LAST", env = "BITRIVER_LIVE_WEBRTC_UDP_PORTS")]
    pub webrtc_udp_ports: Option<String>,

    /// STUN and TURN servers handed to WebRTC clients behind NAT, comma-separated:
    /// `stun:HOST:PORT`, `turn:USER:PASSWORD@HOST:PORT[?transport=udp|tcp]`.
    #[arg(long, value_name = "URLS", env = "BITRIVER_LIVE_WEBRTC_ICE_SERVERS", value_delimiter = ',')]
    pub webrtc_ice_servers: Vec<String>,

    /// SRT ingest listen address, UDP (ingest role).
    #[arg(long, value_name = "ADDR", env = "BITRIVER_LIVE_SRT_ADDR", default_value = ":9000")]
    pub srt_addr: String,

    /// Edge cache HTTP listen address (edge role).
    #[arg(long, value_name = "ADDR", env = "BITRIVER_LIVE_EDGE_ADDR", default_value = ":8081")]
    pub edge_addr: String,

    /// Bytes of LL-HLS objects the edge cache may hold in memory (edge role; at least 1 MiB).
    #[arg(long, value_name = "BYTES", env = "BITRIVER_LIVE_EDGE_CACHE_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub edge_cache_bytes: u64,

    /// Seconds without a request after which an edge counts a viewer as gone (its watch time then
    /// goes into the audience analytics); 5 to 600.
    #[arg(long, value_name = "SECONDS", env = "BITRIVER_LIVE_VIEWER_WINDOW_SECS", default_value_t = 30)]
    pub viewer_window_secs: u64,

    /// Log format; auto means json in production and text in development.
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        env = "BITRIVER_LIVE_LOG_FORMAT",
        default_value_t = LogFormatArg::Auto
    )]
    pub log_format: LogFormatArg,

    /// Record only these renditions of each broadcast (comma-separated, e.g. source,720p);
    /// default: every rendition. `off` records nothing.
    #[arg(long, value_name = "NAMES", env = "BITRIVER_LIVE_RECORD_RENDITIONS", value_delimiter = ',')]
    pub record_renditions: Vec<String>,

    /// How long published recordings are kept, counted from their publication (e.g. 720h);
    /// 0 keeps them.
    #[arg(long, value_name = "DURATION", env = "BITRIVER_LIVE_RECORDING_RETENTION_PUBLISHED", default_value = "0")]
    pub recording_retention_published: String,

    /// How long unpublished recordings (drafts) are kept after their broadcast ended (e.g.
    /// 168h); 0 keeps them.
    #[arg(long, value_name = "DURATION", env = "BITRIVER_LIVE_RECORDING_RETENTION_UNPUBLISHED", default_value = "0")]
    pub recording_retention_unpublished: String,

    /// LL-HLS part duration target in milliseconds (origin packaging; 50 to 2000).
    #[arg(long, value_name = "MS", env = "BITRIVER_LIVE_PART_TARGET_MS", default_value_t = 200)]
    pub part_target_ms: u64,

    /// LL-HLS segment duration target in milliseconds; segments still start on keyframes.
    #[arg(long, value_name = "MS", env = "BITRIVER_LIVE_SEGMENT_TARGET_MS", default_value_t = 1000)]
    pub segment_target_ms: u64,

    /// Transcode ladder as <height>p:<kbps> rungs, e.g. 1080p:6000,720p:3500,480p:2000, or
    /// "off" (passthrough only). Giving a ladder turns transcoding on; without one, a node
    /// transcodes (with the default 1080p:6000,720p:3500,480p:2000,360p:1200) only when
    /// --roles lists transcode explicitly: `all` alone stays passthrough.
    /// The original product's BITRIVER_TRANSCODE_LADDER is read too.
    #[arg(long, value_name = "LADDER", env = "BITRIVER_LIVE_TRANSCODE_LADDER")]
    pub transcode_ladder: Option<String>,

    /// Build a catalog snapshot after this many applied log entries (older entries are purged).
    #[arg(
        long,
        value_name = "N",
        env = "BITRIVER_LIVE_RAFT_SNAPSHOT_EVERY",
        default_value_t = 10_000,
        hide_short_help = true
    )]
    pub raft_snapshot_every: u64,

    /// Log entries kept behind a snapshot for slightly lagging followers.
    #[arg(
        long,
        value_name = "N",
        env = "BITRIVER_LIVE_RAFT_KEEP_LOGS",
        default_value_t = 1_000,
        hide_short_help = true
    )]
    pub raft_keep_logs: u64,

    /// Comma-separated origins (scheme://host[:port]) whose pages may change things through the
    /// API and open chat sockets, besides the node's own (e.g. a reverse proxy's public
    /// https://live.example.com). Browsers' requests from any other origin are refused.
    #[arg(long, value_name = "LIST", env = "BITRIVER_LIVE_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// A request header the operator's load balancer or GeoDNS front sets to the viewer's region
    /// (e.g. X-Client-Region); believed only from --trusted-proxies.
    #[arg(long, value_name = "NAME", env = "BITRIVER_LIVE_CLIENT_REGION_HEADER")]
    pub client_region_header: Option<String>,

    /// Comma-separated networks (CIDR) of the operator's proxies: their --client-region-header
    /// and X-Forwarded-For are believed. Empty: every peer is a viewer.
    #[arg(long, value_name = "CIDR,...", env = "BITRIVER_LIVE_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,

    /// A MaxMind-format GeoIP database (GeoLite2-Country or -City): viewers whose address is in no
    /// region's networks are placed by country or continent (see PUT /api/regions/{region}).
    #[arg(long, value_name = "FILE", env = "BITRIVER_LIVE_GEOIP_DB")]
    pub geoip_db: Option<PathBuf>,

    /// S3-compatible object storage for recordings (`--object-*`): off without an endpoint.
    #[command(flatten)]
    pub objects: objects::ObjectArgs,

    /// Testing only: accept partition requests on the admin socket.
    #[arg(long, env = "BITRIVER_LIVE_FAULT_INJECTION", hide = true)]
    pub fault_injection: bool,
}

// Mode, Role and the log formats are deliberately exhaustive (no `#[non_exhaustive]`): `main`
// matches on them and should stop compiling when one is added.

/// Run mode; picks defaults, never changes semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum Mode {
    Development,
    Production,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Development => "development",
            Mode::Production => "production",
        }
    }

    /// Default HTTP listen address for this mode.
    pub fn default_addr(self) -> &'static str {
        match self {
            Mode::Development => ":8080",
            Mode::Production => ":80",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `--log-format` as given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum LogFormatArg {
    Auto,
    Json,
    Text,
}

impl fmt::Display for LogFormatArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormatArg::Auto => "auto",
            LogFormatArg::Json => "json",
            LogFormatArg::Text => "text",
        })
    }
}

/// Resolved log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogFormat {
    Json,
    Text,
}

/// A join token. Kept out of `Debug` output and error messages because it admits nodes.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken(String);

impl JoinToken {
    pub fn new(token: impl Into<String>) -> Self {
        JoinToken(token.into())
    }

    /// The secret itself, for handing to the cluster transport.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JoinToken(<redacted>)")
    }
}

impl FromStr for JoinToken {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(JoinToken(s.to_owned()))
    }
}

// ---------------------------------------------------------------------------------------------
// Roles
// ---------------------------------------------------------------------------------------------

/// A role a node can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Control,
    Ingest,
    Transcode,
    Origin,
    Edge,
}

impl Role {
    /// All roles, in pipeline order.
    pub const ALL: [Role; 5] = [Role::Control, Role::Ingest, Role::Transcode, Role::Origin, Role::Edge];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Control => "control",
            Role::Ingest => "ingest",
            Role::Transcode => "transcode",
            Role::Origin => "origin",
            Role::Edge => "edge",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name given was not a role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL.into_iter().find(|r| r.as_str().eq_ignore_ascii_case(s)).ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// A set of roles. Iterates and displays in pipeline order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Roles(u8);

impl Roles {
    pub fn empty() -> Self {
        Roles(0)
    }

    pub fn all() -> Self {
        Role::ALL.into_iter().collect()
    }

    pub fn contains(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }

    pub fn insert(&mut self, role: Role) {
        self.0 |= role.bit();
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    pub fn iter(self) -> impl Iterator<Item = Role> {
        Role::ALL.into_iter().filter(move |r| self.contains(*r))
    }

    /// Parses `control,ingest`, `all`; whitespace around names is ignored, case is not significant.
    pub fn parse_list(s: &str) -> Result<Roles, UnknownRole> {
        let mut roles = Roles::empty();
        for name in s.split(',').map(str::trim) {
            if name.eq_ignore_ascii_case("all") {
                roles = Roles::all();
            } else {
                roles.insert(name.parse()?);
            }
        }
        Ok(roles)
    }
}

impl FromIterator<Role> for Roles {
    fn from_iter<I: IntoIterator<Item = Role>>(iter: I) -> Self {
        let mut roles = Roles::empty();
        for r in iter {
            roles.insert(r);
        }
        roles
    }
}

impl fmt::Display for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(r.as_str())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// A configuration error. Its `Display` is one line that names the flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The flag's value is malformed or unusable. `value` is printed with escapes, so the
    /// message stays on one line whatever the operator typed.
    #[error("invalid value for {flag}: {value:?}: {reason}")]
    Invalid { flag: String, value: String, reason: String },
    /// The flag is required by another one (or by the mode).
    #[error("missing {flag}: {reason}")]
    Missing { flag: String, reason: String },
}

impl ConfigError {
    fn invalid(flag: &str, value: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid { flag: flag.to_owned(), value: value.into(), reason: reason.into() }
    }

    fn missing(flag: &str, reason: impl Into<String>) -> Self {
        ConfigError::Missing { flag: flag.to_owned(), reason: reason.into() }
    }

    /// The flag the error is about, e.g. `--roles`.
    pub fn flag(&self) -> &str {
        match self {
            ConfigError::Invalid { flag, .. } | ConfigError::Missing { flag, .. } => flag,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Validated configuration
// ---------------------------------------------------------------------------------------------

/// TLS certificate and key for the HTTP listener (both files existed at validation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A host name or IP address with a port, kept unresolved (dialled later, maybe re-resolved).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// Host name or IP address, without brackets.
    pub host: String,
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Where and how to join an existing cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinTarget {
    /// Cluster address of an existing member.
    pub peer: HostPort,
    pub token: JoinToken,
}

/// The configuration a node runs with: every default applied, every address resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedConfig {
    pub mode: Mode,
    /// HTTP listener (API, web UI, origin, `/healthz`, `/metrics`).
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub tls: Option<TlsFiles>,
    /// `None`: assigned at bootstrap/join and persisted in the data directory.
    pub node_id: Option<u64>,
    pub region: String,
    pub roles: Roles,
    /// Local UDP address of the cluster (Raft over QUIC) endpoint.
    pub cluster_addr: SocketAddr,
    /// Address other nodes dial to reach this one. When derived from a `cluster_addr` with port
    /// 0 (tests), it has port 0 too and the caller replaces it with the bound port.
    pub cluster_advertise: SocketAddr,
    /// Whether `--cluster-advertise` was given; otherwise a wildcard `--cluster-addr` is
    /// advertised at the host chosen at start-up (see `crate::advertise`).
    pub cluster_advertise_given: bool,
    /// `--advertise-host`, or the host of `--cluster-advertise`: where other machines reach the
    /// wildcard listeners. `None`: found at start-up from the node's interfaces.
    pub advertise_host: Option<IpAddr>,
    /// `None`: bootstrap a new cluster (or restart an existing member from `data_dir`).
    pub join: Option<JoinTarget>,
    /// Number of Raft voters to keep, 1..=9.
    pub voters: usize,
    pub rtmp_addr: SocketAddr,
    /// RTMPS ingest: bound when the ingest role is on and TLS is configured.
    pub rtmps_addr: Option<SocketAddr>,
    pub srt_addr: SocketAddr,
    /// See `--rtmp-max-connections`.
    pub rtmp_max_connections: usize,
    /// See `--rtmp-read-merge-ms`.
    pub rtmp_read_merge: Duration,
    /// See `--rtmp-threads` (the cores when not given).
    pub rtmp_threads: usize,
    /// WHIP and WHEP media sockets (`--webrtc-udp-port` or `--webrtc-udp-ports`), on the host
    /// of `--addr`; `None` without the ingest and origin roles.
    pub webrtc_ports: Option<webrtc::PortMode>,
    /// See `--webrtc-ice-servers`.
    pub webrtc_ice_servers: Vec<webrtc::IceServer>,
    pub edge_addr: SocketAddr,
    /// Memory budget of the edge cache.
    pub edge_cache_bytes: u64,
    /// See `--viewer-window-secs`.
    pub viewer_window: Duration,
    pub log_format: LogFormat,
    /// LL-HLS part and segment duration targets.
    pub part_target: Duration,
    pub segment_target: Duration,
    /// Which renditions are recorded: `None` all, `Some(empty)` none.
    pub record_renditions: Option<Vec<String>>,
    pub recording_retention: recordings::Retention,
    /// The transcode ladder; `None`: passthrough only (see `--transcode-ladder`).
    pub transcode: Option<transcode::LadderSpec>,
    pub raft_snapshot_every: u64,
    pub raft_keep_logs: u64,
    /// Origins allowed to send state-changing requests besides the node's own.
    pub allowed_origins: Vec<control::same_origin::Origin>,
    /// `--client-region-header`, lower-cased.
    pub client_region_header: Option<axum::http::HeaderName>,
    /// `--trusted-proxies`.
    pub trusted_proxies: Vec<raft::state::regions::Cidr>,
    /// `--geoip-db`, opened and checked.
    pub geoip: Option<crate::geoip::GeoIpDb>,
    /// Where recordings are mirrored, if anywhere.
    pub objects: Option<objects::ObjectConfig>,
    pub fault_injection: bool,
}

impl Config {
    /// Applies mode-dependent defaults and checks every flag, naming the first bad one.
    pub fn validate(&self) -> Result<ValidatedConfig, ConfigError> {
        let mode = self.mode;

        let addr = parse_listen_addr("--addr", self.addr.as_deref().unwrap_or(mode.default_addr()))?;

        if self.data.as_os_str().is_empty() {
            return Err(ConfigError::invalid("--data", "", "must not be empty"));
        }
        let data_dir = self.data.clone();

        let tls = match (&self.tls_cert, &self.tls_key) {
            (None, None) => None,
            (Some(_), None) => return Err(ConfigError::missing("--tls-key", "required when --tls-cert is given")),
            (None, Some(_)) => return Err(ConfigError::missing("--tls-cert", "required when --tls-key is given")),
            (Some(cert), Some(key)) => {
                check_readable_file("--tls-cert", cert)?;
                check_readable_file("--tls-key", key)?;
                Some(TlsFiles { cert: cert.clone(), key: key.clone() })
            }
        };

        if self.node_id == Some(0) {
            return Err(ConfigError::invalid("--node-id", "0", "must be 1 or more"));
        }

        let region = self.region.trim();
        if !is_valid_region(region) {
            return Err(ConfigError::invalid(
                "--region",
                &self.region,
                "expected 1 to 63 characters of a-z, A-Z, 0-9, '-', '_' or '.'",
            ));
        }

        let roles = Roles::parse_list(&self.roles).map_err(|UnknownRole(name)| {
            ConfigError::invalid(
                "--roles",
                &self.roles,
                format!(
                    "unknown role {name:?}; expected a comma-separated list of \
                     control, ingest, transcode, origin, edge, or all"
                ),
            )
        })?;

        let cluster_addr = parse_listen_addr("--cluster-addr", &self.cluster_addr)?;
        let explicit_host = match &self.advertise_host {
            Some(host) => Some(parse_advertise_host("--advertise-host", host)?),
            None => None,
        };
        let (cluster_advertise, cluster_advertise_given) = match &self.cluster_advertise {
            Some(s) => (parse_advertise_addr("--cluster-advertise", s)?, true),
            None => match explicit_host {
                Some(host) if cluster_addr.ip().is_unspecified() => (SocketAddr::new(host, cluster_addr.port()), false),
                // Replaced at start-up by the primary interface's address when there is one.
                _ => (loopback_if_unspecified(cluster_addr), false),
            },
        };
        let advertise_host = explicit_host.or(cluster_advertise_given.then(|| cluster_advertise.ip()));
        let token = self.join_token.as_ref().filter(|t| !t.expose().trim().is_empty());
        let join = match (&self.join, token) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::missing(
                    "--join-token",
                    "required when --join is given (mint one with `bitriver cluster token`)",
                ))
            }
            (None, Some(_)) => return Err(ConfigError::missing("--join", "required when --join-token is given")),
            (Some(peer), Some(token)) => {
                let peer = parse_host_port("--join", peer)?;
                if peer.port == 0 {
                    return Err(ConfigError::invalid("--join", peer.to_string(), "port must not be 0"));
                }
                Some(JoinTarget { peer, token: JoinToken(token.expose().trim().to_owned()) })
            }
        };

        if !(1..=9).contains(&self.voters) {
            return Err(ConfigError::invalid("--voters", self.voters.to_string(), "expected a number from 1 to 9"));
        }

        let rtmp_addr = parse_listen_addr("--rtmp-addr", &self.rtmp_addr)?;
        let rtmps_addr = parse_listen_addr("--rtmps-addr", &self.rtmps_addr)?;
        let srt_addr = parse_listen_addr("--srt-addr", &self.srt_addr)?;
        let edge_addr = parse_listen_addr("--edge-addr", &self.edge_addr)?;
        if self.edge_cache_bytes < 1024 * 1024 {
            return Err(ConfigError::invalid(
                "--edge-cache-bytes",
                self.edge_cache_bytes.to_string(),
                "expected at least 1048576 (1 MiB)",
            ));
        }

        let log_format = match (self.log_format, mode) {
            (LogFormatArg::Json, _) | (LogFormatArg::Auto, Mode::Production) => LogFormat::Json,
            (LogFormatArg::Text, _) | (LogFormatArg::Auto, Mode::Development) => LogFormat::Text,
        };

        if !(1..=100_000).contains(&self.rtmp_max_connections) {
            return Err(ConfigError::invalid(
                "--rtmp-max-connections",
                self.rtmp_max_connections.to_string(),
                "must be between 1 and 100000",
            ));
        }
        if let Some(threads) = self.rtmp_threads.filter(|&n| n > 256) {
            return Err(ConfigError::invalid("--rtmp-threads", threads.to_string(), "must be between 0 and 256"));
        }
        if self.rtmp_read_merge_ms > 200 {
            return Err(ConfigError::invalid(
                "--rtmp-read-merge-ms",
                self.rtmp_read_merge_ms.to_string(),
                "must be between 0 and 200",
            ));
        }
        let webrtc_ports = match self.webrtc_udp_ports.as_deref().map(str::trim) {
            Some(range) => {
                let parsed = range
                    .split_once('-')
                    .and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)));
                match parsed {
                    Some((first, last)) if first > 0 && first <= last => {
                        webrtc::PortMode::Range { ip: addr.ip(), first, last }
                    }
                    _ => {
                        return Err(ConfigError::invalid(
                            "--webrtc-udp-ports",
                            range,
                            "expected FIRST-LAST, two ports from 1 to 65535, FIRST <= LAST",
                        ))
                    }
                }
            }
            None => webrtc::PortMode::Single(SocketAddr::new(addr.ip(), self.webrtc_udp_port)),
        };
        let webrtc_ports = (roles.contains(Role::Ingest) || roles.contains(Role::Origin)).then_some(webrtc_ports);
        let webrtc_ice_servers = self
            .webrtc_ice_servers
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.parse::<webrtc::IceServer>().map_err(|e| ConfigError::invalid("--webrtc-ice-servers", s, e)))
            .collect::<Result<Vec<_>, _>>()?;
        if !(5..=600).contains(&self.viewer_window_secs) {
            return Err(ConfigError::invalid(
                "--viewer-window-secs",
                self.viewer_window_secs.to_string(),
                "must be between 5 and 600",
            ));
        }
        if !(50..=2000).contains(&self.part_target_ms) {
            return Err(ConfigError::invalid(
                "--part-target-ms",
                self.part_target_ms.to_string(),
                "expected 50 to 2000 milliseconds",
            ));
        }
        if self.segment_target_ms < self.part_target_ms || self.segment_target_ms > 30_000 {
            return Err(ConfigError::invalid(
                "--segment-target-ms",
                self.segment_target_ms.to_string(),
                "expected at least --part-target-ms and at most 30000 milliseconds",
            ));
        }
        let record_renditions = record_renditions(&self.record_renditions)?;
        let objects = self.objects.validate().map_err(|e| ConfigError::invalid(e.flag, "", e.reason))?;
        let retention = |flag: &str, value: &str| match parse_duration(value) {
            _ if value.trim() == "0" => Ok(None),
            Ok(d) if d.is_zero() => Ok(None),
            Ok(d) => Ok(Some(d)),
            // Durations below a second, for trying retention out.
            Err(e) => match value.strip_suffix("ms").and_then(|ms| ms.parse::<u64>().ok()) {
                Some(ms) => Ok(Some(Duration::from_millis(ms)).filter(|d| !d.is_zero())),
                None => Err(ConfigError::invalid(flag, value, e.to_string())),
            },
        };
        let recording_retention = recordings::Retention {
            published: retention("--recording-retention-published", &self.recording_retention_published)?,
            unpublished: retention("--recording-retention-unpublished", &self.recording_retention_unpublished)?,
        };
        let transcode = transcode_ladder(self.transcode_ladder.as_deref(), &self.roles, roles)?;
        let allowed_origins = control::same_origin::parse_list(self.allowed_origins.iter().map(String::as_str))
            .map_err(|e| ConfigError::invalid("--allowed-origins", &e.0, e.to_string()))?;
        let client_region_header = match self.client_region_header.as_deref() {
            None => None,
            Some(name) => Some(
                axum::http::HeaderName::try_from(name.trim())
                    .map_err(|_| ConfigError::invalid("--client-region-header", name, "not an HTTP header name"))?,
            ),
        };
        let trusted_proxies = self
            .trusted_proxies
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                s.parse().map_err(|e: raft::state::regions::CidrError| {
                    ConfigError::invalid("--trusted-proxies", s, e.reason)
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if client_region_header.is_some() && trusted_proxies.is_empty() {
            return Err(ConfigError::missing(
                "--trusted-proxies",
                "required with --client-region-header (the header is believed only from them)",
            ));
        }
        let geoip = match &self.geoip_db {
            None => None,
            Some(path) => {
                check_readable_file("--geoip-db", path)?;
                Some(
                    crate::geoip::GeoIpDb::open(path)
                        .map_err(|e| ConfigError::invalid("--geoip-db", path.display().to_string(), e))?,
                )
            }
        };
        let rtmps_addr = Some(rtmps_addr).filter(|_| tls.is_some() && roles.contains(Role::Ingest));
        let config = ValidatedConfig {
            mode,
            addr,
            data_dir,
            tls,
            node_id: self.node_id,
            region: region.to_owned(),
            roles,
            cluster_addr,
            cluster_advertise,
            cluster_advertise_given,
            advertise_host,
            join,
            voters: self.voters as usize,
            rtmp_addr,
            rtmps_addr,
            srt_addr,
            rtmp_max_connections: self.rtmp_max_connections,
            rtmp_read_merge: Duration::from_millis(self.rtmp_read_merge_ms),
            rtmp_threads: self
                .rtmp_threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)),
            webrtc_ports,
            webrtc_ice_servers,
            edge_addr,
            edge_cache_bytes: self.edge_cache_bytes,
            viewer_window: Duration::from_secs(self.viewer_window_secs),
            log_format,
            part_target: Duration::from_millis(self.part_target_ms),
            segment_target: Duration::from_millis(self.segment_target_ms),
            record_renditions,
            recording_retention,
            transcode,
            raft_snapshot_every: self.raft_snapshot_every.max(1),
            raft_keep_logs: self.raft_keep_logs,
            allowed_origins,
            client_region_header,
            trusted_proxies,
            geoip,
            objects,
            fault_injection: self.fault_injection,
        };
        config.check_listener_clashes()?;
        Ok(config)
    }
}

/// The ladder a node runs: an explicit `--transcode-ladder` (or "off"), else the default ladder
/// when `--roles` names `transcode` itself (an all-in-one node does not burn CPU on transcoding
/// unasked).
fn transcode_ladder(
    flag: Option<&str>,
    roles_flag: &str,
    roles: Roles,
) -> Result<Option<transcode::LadderSpec>, ConfigError> {
    let named = roles_flag.split(',').any(|r| r.trim().eq_ignore_ascii_case(Role::Transcode.as_str()));
    let spec = match flag.map(str::trim) {
        Some(off) if off.eq_ignore_ascii_case("off") || off.eq_ignore_ascii_case("none") => return Ok(None),
        Some(text) => transcode::LadderSpec::parse(text)
            .map_err(|e| ConfigError::invalid("--transcode-ladder", text, e.to_string()))?,
        None if named => transcode::LadderSpec::default_ladder(),
        None => return Ok(None),
    };
    if !roles.contains(Role::Transcode) {
        return Err(ConfigError::invalid(
            "--transcode-ladder",
            spec.to_string(),
            "needs the transcode role (add transcode to --roles, or use --transcode-ladder off)",
        ));
    }
    Ok(Some(spec))
}

/// Transport of a listener, for clash detection (a TCP and a UDP socket may share a port).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    Tcp,
    Udp,
}

impl ValidatedConfig {
    /// Listeners this node will bind, as (flag, transport, address).
    fn listeners(&self) -> Vec<(&'static str, Transport, SocketAddr)> {
        let mut out =
            vec![("--addr", Transport::Tcp, self.addr), ("--cluster-addr", Transport::Udp, self.cluster_addr)];
        if self.roles.contains(Role::Ingest) {
            out.push(("--rtmp-addr", Transport::Tcp, self.rtmp_addr));
            if let Some(addr) = self.rtmps_addr {
                out.push(("--rtmps-addr", Transport::Tcp, addr));
            }
            out.push(("--srt-addr", Transport::Udp, self.srt_addr));
        }
        if let Some(webrtc::PortMode::Single(addr)) = self.webrtc_ports {
            if addr.port() != 0 {
                out.push(("--webrtc-udp-port", Transport::Udp, addr));
            }
        }
        if self.roles.contains(Role::Edge) {
            out.push(("--edge-addr", Transport::Tcp, self.edge_addr));
        }
        out
    }

    /// Two enabled listeners on the same transport and port would make the second bind fail at
    /// start-up with a less helpful message; say which flags clash instead.
    fn check_listener_clashes(&self) -> Result<(), ConfigError> {
        let listeners = self.listeners();
        for (i, (flag, transport, addr)) in listeners.iter().enumerate() {
            for (other_flag, other_transport, other) in &listeners[..i] {
                let same_ip = addr.ip() == other.ip() || addr.ip().is_unspecified() || other.ip().is_unspecified();
                if transport == other_transport && addr.port() != 0 && addr.port() == other.port() && same_ip {
                    return Err(ConfigError::invalid(
                        flag,
                        addr.to_string(),
                        format!("same port as {other_flag} ({other})"),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn check_readable_file(flag: &str, path: &Path) -> Result<(), ConfigError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(ConfigError::invalid(flag, path.display().to_string(), "not a regular file")),
        Err(e) => Err(ConfigError::invalid(flag, path.display().to_string(), format!("cannot read file: {e}"))),
    }
}

fn is_valid_region(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn loopback_if_unspecified(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port()),
        _ => addr,
    }
}

// ---------------------------------------------------------------------------------------------
// Addresses
// ---------------------------------------------------------------------------------------------

const LISTEN_FORMS: &str = "expected HOST:PORT or :PORT";
const PEER_FORMS: &str = "expected HOST:PORT";

/// Splits `host:port` / `[v6]:port` / `:port` into host (without brackets, maybe empty) and port.
/// `None` when the shape is wrong; the port is checked but may be 0.
fn split_host_port(s: &str) -> Option<(&str, bool, Result<u16, ()>)> {
    let (host, port, bracketed) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        (host, after.strip_prefix(':')?, true)
    } else {
        let (host, port) = s.rsplit_once(':')?;
        if host.contains(':') {
            // An IPv6 address without brackets: the port boundary is ambiguous.
            return None;
        }
        (host, port, false)
    };
    // `u16::from_str` accepts a leading '+'; ports are digits only.
    let port = if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
        port.parse::<u16>().map_err(|_| ())
    } else {
        Err(())
    };
    Some((host, bracketed, port))
}

fn is_valid_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Parses a listen address: `:PORT` (all IPv4 interfaces), `HOST:PORT` or `[IPV6]:PORT`.
/// A host name is resolved (first address wins). Port 0 is allowed (pick a free port).
pub fn parse_listen_addr(flag: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    let (host, bracketed, port) = split_host_port(s).ok_or_else(|| ConfigError::invalid(flag, s, LISTEN_FORMS))?;
    let port = port.map_err(|()| ConfigError::invalid(flag, s, "port must be a number from 0 to 65535"))?;
    if host.is_empty() {
        if bracketed {
            return Err(ConfigError::invalid(flag, s, LISTEN_FORMS));
        }
        return Ok(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port));
    }
    resolve_host(flag, s, host, bracketed, port)
}

/// Parses `HOST:PORT` or `[IPV6]:PORT` without resolving it. The host must be present.
pub fn parse_host_port(flag: &str, s: &str) -> Result<HostPort, ConfigError> {
    let (host, bracketed, port) = split_host_port(s).ok_or_else(|| ConfigError::invalid(flag, s, PEER_FORMS))?;
    let port = port.map_err(|()| ConfigError::invalid(flag, s, "port must be a number from 1 to 65535"))?;
    let host_ok = if bracketed {
        host.parse::<Ipv6Addr>().is_ok()
    } else {
        host.parse::<Ipv4Addr>().is_ok() || is_valid_hostname(host)
    };
    if !host_ok {
        return Err(ConfigError::invalid(flag, s, PEER_FORMS));
    }
    Ok(HostPort { host: host.to_owned(), port })
}

/// `--advertise-host`: an IP address (IPv6 with or without brackets) or a host name, resolved
/// now, and not a wildcard.
fn parse_advertise_host(flag: &str, s: &str) -> Result<IpAddr, ConfigError> {
    let host = s.trim();
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let ip = if let Ok(ip) = bare.parse::<IpAddr>() {
        ip
    } else if is_valid_hostname(host) {
        resolve_host(flag, s, host, false, 0)?.ip()
    } else {
        return Err(ConfigError::invalid(flag, s, "expected an IP address or a host name (no port)"));
    };
    if ip.is_unspecified() {
        return Err(ConfigError::invalid(
            flag,
            s,
            "must be an address other nodes can dial, not a wildcard like 0.0.0.0",
        ));
    }
    Ok(ip)
}

/// An address other nodes dial: like [`parse_host_port`], resolved, and not a wildcard.
fn parse_advertise_addr(flag: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    let hp = parse_host_port(flag, s)?;
    if hp.port == 0 {
        return Err(ConfigError::invalid(flag, s, "port must not be 0"));
    }
    let addr = resolve_host(flag, s, &hp.host, hp.host.contains(':'), hp.port)?;
    if addr.ip().is_unspecified() {
        return Err(ConfigError::invalid(
            flag,
            s,
            "must be an address other nodes can dial, not a wildcard like 0.0.0.0",
        ));
    }
    Ok(addr)
}

fn resolve_host(flag: &str, s: &str, host: &str, bracketed: bool, port: u16) -> Result<SocketAddr, ConfigError> {
    if bracketed {
        return host
            .parse::<Ipv6Addr>()
            .map(|ip| SocketAddr::new(ip.into(), port))
            .map_err(|_| ConfigError::invalid(flag, s, "not an IPv6 address inside [ ]"));
    }
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(SocketAddr::new(ip.into(), port));
    }
    if !is_valid_hostname(host) {
        return Err(ConfigError::invalid(flag, s, LISTEN_FORMS));
    }
    // Blocking DNS is acceptable here: this runs once, before the runtime starts serving.
    let resolved = (host, port)
        .to_socket_addrs()
        .map_err(|e| ConfigError::invalid(flag, s, format!("cannot resolve host: {e}")))?;
    let mut resolved: Vec<SocketAddr> = resolved.collect();
    // Prefer IPv4 for predictability (`localhost` may list ::1 first).
    resolved.sort_by_key(|a| !a.is_ipv4());
    resolved.into_iter().next().ok_or_else(|| ConfigError::invalid(flag, s, "host resolved to no address"))
}

/// `--record-renditions`: names, or `off`.
fn record_renditions(names: &[String]) -> Result<Option<Vec<String>>, ConfigError> {
    let names: Vec<String> = names.iter().map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()).collect();
    if names.is_empty() {
        return Ok(None);
    }
    if names == ["off"] {
        return Ok(Some(Vec::new()));
    }
    if let Some(bad) = names.iter().find(|n| !hls_names::is_name(n)) {
        return Err(ConfigError::invalid("--record-renditions", bad, "not a rendition name (e.g. source, 720p)"));
    }
    Ok(Some(names))
}

// ---------------------------------------------------------------------------------------------
// Durations
// ---------------------------------------------------------------------------------------------

/// A duration string was malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: expected a number with a unit s, m, h or d (e.g. 30s, 10m, 24h, 7d)")]
pub struct ParseDurationError {
    pub input: String,
}

/// Parses `30s`, `10m`, `24h`, `7d`, or a sequence of them such as `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, ParseDurationError> {
    let err = || ParseDurationError { input: s.to_owned() };
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(err());
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(err());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| err())?;
        let unit = rest[digits..].chars().next().ok_or_else(err)?;
        let secs_per_unit: u64 = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(err()),
        };
        let secs = n.checked_mul(secs_per_unit).ok_or_else(err)?;
        total = total.checked_add(secs).ok_or_else(err)?;
        rest = &rest[digits + unit.len_utf8()..];
    }
    Ok(Duration::from_secs(total))
}

/// `--ttl`: a positive duration.
fn parse_ttl(s: &str) -> Result<Duration, String> {
    match parse_duration(s) {
        Ok(d) if d.is_zero() => Err("the TTL must be longer than 0s".to_owned()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// Entry points for main
// ---------------------------------------------------------------------------------------------

/// Parses the process arguments and environment. On a usage error clap prints it and exits with
/// status 2; `--help` and `--version` print and exit with 0.
pub fn parse_cli() -> Cli {
    let mut cli = Cli::parse();
    if cli.config.transcode_ladder.is_none() {
        cli.config.transcode_ladder = std::env::var(ORIGINAL_LADDER_ENV).ok();
    }
    cli
}

/// The original product's env name of `--transcode-ladder`, read when neither the flag nor
/// `BITRIVER_LIVE_TRANSCODE_LADDER` is given.
pub const ORIGINAL_LADDER_ENV: &str = "BITRIVER_TRANSCODE_LADDER";

/// Prints `bitriver: <error>` on stderr and exits with status 2, like a usage error.
pub fn exit_with_config_error(e: &ConfigError) -> ! {
    eprintln!("bitriver: {e}");
    std::process::exit(USAGE_EXIT_CODE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches};

    /// The command without environment twins, so tests don't depend on the caller's environment.
    fn hermetic(cmd: clap::Command) -> clap::Command {
        cmd.mut_args(|a| a.env(None::<&'static str>)).mut_subcommands(hermetic)
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let mut argv = vec!["bitriver"];
        argv.extend_from_slice(args);
        let matches = hermetic(Cli::command()).try_get_matches_from(argv)?;
        Cli::from_arg_matches(&matches)
    }

    fn validate(args: &[&str]) -> Result<ValidatedConfig, ConfigError> {
        parse(args).expect("clap accepts the arguments").config.validate()
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn rtmp_connection_threads_default_to_the_cores_and_are_bounded() {
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(validate(&[]).unwrap().rtmp_threads, cores);
        assert_eq!(validate(&["--rtmp-threads", "0"]).unwrap().rtmp_threads, 0);
        let error = validate(&["--rtmp-threads", "257"]).unwrap_err().to_string();
        assert!(error.contains("--rtmp-threads") && error.contains("between 0 and 256"), "{error}");
    }

    #[test]
    fn merged_rtmp_reads_are_off_unless_asked_and_bounded() {
        assert_eq!(validate(&[]).unwrap().rtmp_read_merge, Duration::ZERO);
        let c = validate(&["--rtmp-read-merge-ms", "30"]).unwrap();
        assert_eq!(c.rtmp_read_merge, Duration::from_millis(30));
        let error = validate(&["--rtmp-read-merge-ms", "201"]).unwrap_err().to_string();
        assert!(error.contains("--rtmp-read-merge-ms") && error.contains("between 0 and 200"), "{error}");
    }

    #[test]
    fn webrtc_ports_follow_the_http_host_and_the_roles() {
        let c = validate(&["--addr", "127.0.0.1:8080"]).unwrap();
        assert_eq!(c.webrtc_ports, Some(webrtc::PortMode::Single(sa("127.0.0.1:8189"))));
        let c = validate(&["--webrtc-udp-ports", "50000-50100", "--webrtc-ice-servers", "stun:s.example.org:3478"])
            .unwrap();
        assert_eq!(
            c.webrtc_ports,
            Some(webrtc::PortMode::Range { ip: "0.0.0.0".parse().unwrap(), first: 50000, last: 50100 })
        );
        assert_eq!(c.webrtc_ice_servers[0].url, "stun:s.example.org:3478");
        // Neither ingest nor origin: no media port.
        assert_eq!(validate(&["--roles", "control,edge"]).unwrap().webrtc_ports, None);
        // The single port clashes like any listener.
        let err = validate(&["--webrtc-udp-port", "9000"]).unwrap_err().to_string();
        assert!(err.contains("--webrtc-udp-port") && err.contains("--srt-addr"), "{err}");
    }

    #[test]
    fn command_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// Every flag of every (sub)command, with its command path.
    fn all_flags(cmd: &clap::Command, path: &str, out: &mut Vec<(String, clap::Arg)>) {
        for arg in cmd.get_arguments() {
            if arg.is_positional() || matches!(arg.get_id().as_str(), "help" | "version") {
                continue;
            }
            out.push((path.to_owned(), arg.clone()));
        }
        for sub in cmd.get_subcommands() {
            all_flags(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_flag_has_an_env_twin_shown_in_help() {
        let cmd = Cli::command();
        let mut flags = Vec::new();
        all_flags(&cmd, "bitriver", &mut flags);
        assert!(flags.len() >= 19, "found only {} flags", flags.len());
        for (path, arg) in flags {
            let env = arg
                .get_env()
                .unwrap_or_else(|| panic!("{path} --{} has no env twin", arg.get_id()))
                .to_str()
                .unwrap()
                .to_owned();
            assert!(env.starts_with(ENV_PREFIX), "{path}: {env}");
            assert!(arg.get_long().is_some(), "{path}: {env} has no long flag");
        }

        let help = Cli::command().render_long_help().to_string();
        for name in [
            "MODE",
            "ADDR",
            "DATA",
            "TLS_CERT",
            "TLS_KEY",
            "NODE_ID",
            "REGION",
            "ROLES",
            "CLUSTER_ADDR",
            "CLUSTER_ADVERTISE",
            "JOIN",
            "JOIN_TOKEN",
            "VOTERS",
            "RTMP_ADDR",
            "SRT_ADDR",
            "EDGE_ADDR",
            "EDGE_CACHE_BYTES",
            "LOG_FORMAT",
        ] {
            assert!(help.contains(&format!("[env: BITRIVER_LIVE_{name}")), "help lacks BITRIVER_LIVE_{name}:\n{help}");
        }
    }

    #[test]
    fn development_defaults() {
        let c = validate(&[]).unwrap();
        assert_eq!(c.mode, Mode::Development);
        assert_eq!(c.addr, sa("0.0.0.0:8080"));
        assert_eq!(c.data_dir, PathBuf::from("data"));
        assert_eq!(c.tls, None);
        assert_eq!(c.node_id, None);
        assert_eq!(c.region, "local");
        assert_eq!(c.roles, Roles::all());
        assert_eq!(c.cluster_addr, sa("0.0.0.0:7946"));
        assert_eq!(c.cluster_advertise, sa("127.0.0.1:7946"));
        assert_eq!(c.join, None);
        assert_eq!(c.voters, 3);
        assert_eq!(c.rtmp_addr, sa("0.0.0.0:1935"));
        assert_eq!(c.srt_addr, sa("0.0.0.0:9000"));
        assert_eq!(c.edge_addr, sa("0.0.0.0:8081"));
        assert_eq!(c.log_format, LogFormat::Text);
    }

    #[test]
    fn production_defaults() {
        let c = validate(&["--mode", "production"]).unwrap();
        assert_eq!(c.mode, Mode::Production);
        assert_eq!(c.addr, sa("0.0.0.0:80"));
        assert_eq!(c.log_format, LogFormat::Json);
        // An explicit flag beats the mode default.
        let c = validate(&["--mode", "production", "--addr", ":8080", "--log-format", "text"]).unwrap();
        assert_eq!(c.addr, sa("0.0.0.0:8080"));
        assert_eq!(c.log_format, LogFormat::Text);
    }

    #[test]
    fn unknown_mode_is_a_usage_error() {
        let e = parse(&["--mode", "staging"]).unwrap_err();
        assert_eq!(e.exit_code(), USAGE_EXIT_CODE);
        assert!(e.to_string().contains("--mode"), "{e}");
    }

    #[test]
    fn listen_addr_forms() {
        assert_eq!(parse_listen_addr("--addr", ":8080").unwrap(), sa("0.0.0.0:8080"));
        assert_eq!(parse_listen_addr("--addr", "127.0.0.1:0").unwrap(), sa("127.0.0.1:0"));
        assert_eq!(parse_listen_addr("--addr", "[::]:443").unwrap(), sa("[::]:443"));
        assert_eq!(parse_listen_addr("--addr", "[::1]:9000").unwrap(), sa("[::1]:9000"));
        assert_eq!(parse_listen_addr("--addr", "localhost:80").unwrap(), sa("127.0.0.1:80"));
        for bad in ["foo", "8080", "", ":", "::1:80", "[::1]", "[]:80", "1.2.3.4:", "bad_host:1", "[x]:1"] {
            let e = parse_listen_addr("--addr", bad).unwrap_err();
            assert_eq!(e.flag(), "--addr", "{bad}");
        }
        for bad_port in [":65536", ":+80", ":-1", ":8o"] {
            let e = parse_listen_addr("--rtmp-addr", bad_port).unwrap_err();
            assert!(e.to_string().contains("port must be"), "{e}");
        }
    }

    #[test]
    fn error_display_is_one_line_naming_the_flag() {
        let e = parse_listen_addr("--addr", "foo").unwrap_err();
        assert_eq!(e.to_string(), r#"invalid value for --addr: "foo": expected HOST:PORT or :PORT"#);
        let e = validate(&["--addr", "x\ny"]).unwrap_err();
        assert!(!e.to_string().contains('\n'), "{e}");
        assert!(e.to_string().starts_with("invalid value for --addr: "), "{e}");
    }

    #[test]
    fn bad_flags_are_named() {
        for (args, flag) in [
            (&["--addr", "nope"][..], "--addr"),
            (&["--cluster-addr", "nope"], "--cluster-addr"),
            (&["--rtmp-addr", "1935"], "--rtmp-addr"),
            (&["--srt-addr", ":99999"], "--srt-addr"),
            (&["--webrtc-udp-ports", "60000"], "--webrtc-udp-ports"),
            (&["--webrtc-udp-ports", "60010-60000"], "--webrtc-udp-ports"),
            (&["--webrtc-udp-ports", "0-10"], "--webrtc-udp-ports"),
            (&["--webrtc-ice-servers", "http://stun.example.org"], "--webrtc-ice-servers"),
            (&["--webrtc-ice-servers", "turn:turn.example.org:3478"], "--webrtc-ice-servers"),
            (&["--edge-addr", "x:y"], "--edge-addr"),
            (&["--edge-cache-bytes", "1000"], "--edge-cache-bytes"),
            (&["--node-id", "0"], "--node-id"),
            (&["--voters", "0"], "--voters"),
            (&["--voters", "10"], "--voters"),
            (&["--region", ""], "--region"),
            (&["--region", "eu west"], "--region"),
            (&["--cluster-advertise", "0.0.0.0:7946"], "--cluster-advertise"),
            (&["--cluster-advertise", ":7946"], "--cluster-advertise"),
            (&["--cluster-advertise", "10.0.0.1:0"], "--cluster-advertise"),
        ] {
            let e = validate(args).unwrap_err();
            assert_eq!(e.flag(), flag, "{args:?}: {e}");
            assert!(e.to_string().contains(flag), "{e}");
        }
    }

    #[test]
    fn roles() {
        let c = validate(&["--roles", "ingest, Edge"]).unwrap();
        assert_eq!(c.roles, [Role::Ingest, Role::Edge].into_iter().collect());
        assert_eq!(c.roles.to_string(), "ingest,edge");
        assert_eq!(c.roles.len(), 2);
        assert!(!c.roles.contains(Role::Control));
        assert_eq!(validate(&["--roles", "all"]).unwrap().roles, Roles::all());
        assert_eq!(Roles::all().to_string(), "control,ingest,transcode,origin,edge");
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }

        for bad in ["control,ingest,cdn", "", "control,,edge"] {
            let e = validate(&["--roles", bad]).unwrap_err();
            assert_eq!(e.flag(), "--roles", "{bad}");
            assert!(e.to_string().starts_with("invalid value for --roles: "), "{e}");
        }
        let e = validate(&["--roles", "control,cdn"]).unwrap_err();
        assert!(e.to_string().contains("unknown role \"cdn\""), "{e}");
    }

    #[test]
    fn join_requires_a_token_and_vice_versa() {
        let e = validate(&["--join", "10.0.0.1:7946"]).unwrap_err();
        assert_eq!(e.flag(), "--join-token");
        assert!(e.to_string().starts_with("missing --join-token: "), "{e}");
        let e = validate(&["--join", "10.0.0.1:7946", "--join-token", " "]).unwrap_err();
        assert_eq!(e.flag(), "--join-token");
        let e = validate(&["--join-token", "secret"]).unwrap_err();
        assert_eq!(e.flag(), "--join");

        let c = validate(&["--join", "seed.example.net:7946", "--join-token", "s3cret"]).unwrap();
        let join = c.join.unwrap();
        assert_eq!(join.peer, HostPort { host: "seed.example.net".into(), port: 7946 });
        assert_eq!(join.token.expose(), "s3cret");
        assert!(!format!("{join:?}").contains("s3cret"));

        let c = validate(&["--join", "[fd00::1]:7946", "--join-token", "t"]).unwrap();
        assert_eq!(c.join.unwrap().peer.to_string(), "[fd00::1]:7946");

        for bad in [":7946", "seed", "seed:0", "[nope]:1"] {
            let e = validate(&["--join", bad, "--join-token", "t"]).unwrap_err();
            assert_eq!(e.flag(), "--join", "{bad}: {e}");
        }
    }

    #[test]
    fn advertise() {
        let c = validate(&["--cluster-addr", "[::]:7000"]).unwrap();
        assert_eq!(c.cluster_advertise, sa("[::1]:7000"));
        let c = validate(&["--cluster-addr", "10.1.2.3:7000"]).unwrap();
        assert_eq!(c.cluster_advertise, sa("10.1.2.3:7000"));
        let c = validate(&["--cluster-advertise", "192.0.2.7:7946"]).unwrap();
        assert_eq!(c.cluster_advertise, sa("192.0.2.7:7946"));
        // Tests bind port 0 and fix the advertised port up after binding.
        let c = validate(&["--cluster-addr", "127.0.0.1:0"]).unwrap();
        assert_eq!(c.cluster_advertise, sa("127.0.0.1:0"));

        assert!(!c.cluster_advertise_given);
        assert_eq!(c.advertise_host, None, "found at start-up from the interfaces");

        // --advertise-host names the host of every wildcard listener, the cluster's included.
        let c = validate(&["--advertise-host", "10.0.0.9"]).unwrap();
        assert_eq!((c.cluster_advertise, c.advertise_host), (sa("10.0.0.9:7946"), Some("10.0.0.9".parse().unwrap())));
        let c = validate(&["--advertise-host", "[2001:db8::5]", "--cluster-addr", "[::]:7000"]).unwrap();
        assert_eq!(c.cluster_advertise, sa("[2001:db8::5]:7000"));
        // A specific --cluster-addr is what the cluster listener is reachable at.
        let c = validate(&["--advertise-host", "10.0.0.9", "--cluster-addr", "10.1.2.3:7000"]).unwrap();
        assert_eq!(c.cluster_advertise, sa("10.1.2.3:7000"));
        // Without --advertise-host, the host of --cluster-advertise is the advertised host.
        let c = validate(&["--cluster-advertise", "192.0.2.7:7946"]).unwrap();
        assert_eq!((c.cluster_advertise_given, c.advertise_host), (true, Some("192.0.2.7".parse().unwrap())));
        let c = validate(&["--cluster-advertise", "192.0.2.7:7946", "--advertise-host", "192.0.2.8"]).unwrap();
        assert_eq!(c.advertise_host, Some("192.0.2.8".parse().unwrap()));
        for bad in ["0.0.0.0", "::", "10.0.0.1:80", "bad host", ""] {
            let e = validate(&["--advertise-host", bad]).unwrap_err();
            assert_eq!(e.flag(), "--advertise-host", "{bad}: {e}");
        }

        // A production joiner on a wildcard address no longer needs --cluster-advertise: the
        // primary interface's address is advertised (start-up fails if there is none).
        validate(&["--mode", "production", "--join", "10.0.0.1:7946", "--join-token", "t"]).unwrap();
    }

    #[test]
    fn tls_needs_both_existing_files() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, "cert").unwrap();
        std::fs::write(&key, "key").unwrap();
        let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());

        assert_eq!(validate(&["--tls-cert", cert]).unwrap_err().flag(), "--tls-key");
        assert_eq!(validate(&["--tls-key", key]).unwrap_err().flag(), "--tls-cert");
        let missing = dir.path().join("missing.pem");
        let e = validate(&["--tls-cert", missing.to_str().unwrap(), "--tls-key", key]).unwrap_err();
        assert_eq!(e.flag(), "--tls-cert");
        let e = validate(&["--tls-cert", cert, "--tls-key", dir.path().to_str().unwrap()]).unwrap_err();
        assert_eq!(e.flag(), "--tls-key");

        let c = validate(&["--tls-cert", cert, "--tls-key", key]).unwrap();
        assert_eq!(c.tls, Some(TlsFiles { cert: cert.into(), key: key.into() }));
    }

    #[test]
    fn listener_clashes_name_the_later_flag() {
        let e = validate(&["--rtmp-addr", ":8080"]).unwrap_err();
        assert_eq!(e.flag(), "--rtmp-addr");
        assert!(e.to_string().contains("same port as --addr"), "{e}");
        // UDP and TCP may share a port; disabled roles don't bind.
        validate(&["--srt-addr", ":8080"]).unwrap();
        validate(&["--roles", "control,origin", "--edge-addr", ":8080"]).unwrap();
        validate(&["--addr", "127.0.0.1:8080", "--edge-addr", "127.0.0.2:8080"]).unwrap();
        // Port 0 never clashes.
        validate(&["--addr", "127.0.0.1:0", "--edge-addr", "127.0.0.1:0"]).unwrap();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(7 * 86_400));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        for bad in ["", "10", "h", "1x", "-1h", "1.5h", "99999999999999999999d", "1h 30m", "1ч"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_ttl("0s").is_err());
    }

    #[test]
    fn cluster_subcommands() {
        let cli = parse(&["cluster", "token", "--data", "/srv/br"]).unwrap();
        let Some(Command::Cluster(ClusterCommand::Token(t))) = cli.command else { panic!("{cli:?}") };
        assert_eq!(t.data.data, PathBuf::from("/srv/br"));
        assert_eq!(t.ttl, Duration::from_secs(86_400));

        let cli = parse(&["cluster", "token", "--ttl", "7d"]).unwrap();
        let Some(Command::Cluster(ClusterCommand::Token(t))) = cli.command else { panic!("{cli:?}") };
        assert_eq!(t.ttl, Duration::from_secs(7 * 86_400));
        assert_eq!(t.data.data, PathBuf::from("data"));
        assert!(parse(&["cluster", "token", "--ttl", "soon"]).is_err());
        assert!(parse(&["cluster", "token", "--ttl", "0m"]).is_err());

        let cli = parse(&["cluster", "status", "--data", "d", "--json"]).unwrap();
        let Some(Command::Cluster(ClusterCommand::Status(s))) = cli.command else { panic!("{cli:?}") };
        assert!(s.json);

        let cli = parse(&["cluster", "remove", "4", "--data", "d"]).unwrap();
        let Some(Command::Cluster(ClusterCommand::Remove(r))) = cli.command else { panic!("{cli:?}") };
        assert_eq!((r.node_id, r.data.data), (4, PathBuf::from("d")));
        assert!(parse(&["cluster", "remove", "0"]).is_err());
        assert!(parse(&["cluster", "remove"]).is_err());

        assert!(parse(&[]).unwrap().command.is_none());
    }

    #[test]
    fn install_subcommand() {
        let cli = parse(&["install", "--dry-run", "--addr", ":8080", "--log-dir", "/var/log/bitriver"]).unwrap();
        let Some(Command::Install(args)) = cli.command else { panic!("not install: {:?}", cli.command) };
        assert!(args.dry_run);
        assert_eq!(args.addr, ":8080");
        assert_eq!(args.log_dir, Some(PathBuf::from("/var/log/bitriver")));
        let Some(Command::Install(args)) = parse(&["install"]).unwrap().command else { panic!("not install") };
        assert!(!args.dry_run);
        assert_eq!((args.addr.as_str(), args.log_dir), (":80", None));
    }

    #[test]
    fn user_create_subcommand() {
        let cli = parse(&["user", "create", "--admin", "--email", "a@example.com", "--data", "d"]).unwrap();
        let Some(Command::User(UserCommand::Create(u))) = cli.command else { panic!("{cli:?}") };
        assert!(u.admin);
        assert_eq!((u.email.as_str(), u.display_name, u.data.data), ("a@example.com", None, PathBuf::from("d")));
        let cli =
            parse(&["user", "create", "--email", "b@example.com", "--display-name", "B", "--role", "creator"]).unwrap();
        let Some(Command::User(UserCommand::Create(u))) = cli.command else { panic!("{cli:?}") };
        assert!(!u.admin);
        assert_eq!((u.display_name.as_deref(), u.roles), (Some("B"), vec!["creator".to_owned()]));
        assert!(parse(&["user", "create", "--admin"]).is_err(), "--email is required");
    }

    #[test]
    fn routing_flags_are_parsed_and_bad_ones_named() {
        let c = validate(&[]).unwrap();
        assert!(c.client_region_header.is_none() && c.trusted_proxies.is_empty() && c.geoip.is_none());
        let c = validate(&["--client-region-header", "X-Client-Region", "--trusted-proxies", "10.0.0.0/8, 192.0.2.1"])
            .unwrap();
        assert_eq!(c.client_region_header.as_ref().map(|h| h.as_str()), Some("x-client-region"));
        let shown: Vec<String> = c.trusted_proxies.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.0.0.0/8", "192.0.2.1/32"]);
        for (args, flag) in [
            (&["--trusted-proxies", "10.0.0.0/33"][..], "--trusted-proxies"),
            (&["--trusted-proxies", "10.0.0.1/8"][..], "--trusted-proxies"),
            (&["--client-region-header", "X-Region"][..], "--trusted-proxies"),
            (
                &["--client-region-header", "bad header", "--trusted-proxies", "10.0.0.0/8"][..],
                "--client-region-header",
            ),
            (&["--geoip-db", "/nonexistent/country.mmdb"][..], "--geoip-db"),
        ] {
            assert_eq!(validate(args).unwrap_err().flag(), flag, "{args:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let bogus = dir.path().join("bogus.mmdb");
        std::fs::write(&bogus, b"not a database").unwrap();
        let e = validate(&["--geoip-db", bogus.to_str().unwrap()]).unwrap_err();
        assert!(e.flag() == "--geoip-db" && e.to_string().contains("MaxMind"), "{e}");
    }

    #[test]
    fn allowed_origins_are_parsed_and_bad_ones_named() {
        assert!(validate(&[]).unwrap().allowed_origins.is_empty());
        let c = validate(&["--allowed-origins", "https://Live.Example.com,http://127.0.0.1:3000"]).unwrap();
        let shown: Vec<String> = c.allowed_origins.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["https://live.example.com:443", "http://127.0.0.1:3000"]);
        let e = validate(&["--allowed-origins", "https://ok.example,live.example.com"]).unwrap_err();
        assert!(e.to_string().contains("--allowed-origins") && e.to_string().contains("live.example.com"), "{e}");
    }

    const ENV_CHILD: &str = "BITRIVER_CONFIG_TEST_ENV_CHILD";

    /// Env twins are read by the real parser. Setting variables in this multi-threaded test
    /// process would race with the other tests, so the test re-runs itself in a child process
    /// with the variables set there.
    #[test]
    fn env_twins_are_read() {
        if std::env::var_os(ENV_CHILD).is_some() {
            let cli = Cli::try_parse_from(["bitriver"]).unwrap();
            let c = cli.config.validate().unwrap();
            assert_eq!(c.mode, Mode::Production);
            assert_eq!(c.addr, sa("127.0.0.1:9999"));
            assert_eq!(c.roles, [Role::Edge].into_iter().collect());
            assert_eq!(c.data_dir, PathBuf::from("/srv/bitriver"));
            assert_eq!(c.join.unwrap().token.expose(), "tok");
            assert_eq!(c.advertise_host, Some(IpAddr::from([10, 0, 0, 3])));
            // A flag beats its env twin.
            let cli = Cli::try_parse_from(["bitriver", "--roles", "origin"]).unwrap();
            assert_eq!(cli.config.validate().unwrap().roles, [Role::Origin].into_iter().collect());
            let cli = Cli::try_parse_from(["bitriver", "cluster", "status"]).unwrap();
            let Some(Command::Cluster(ClusterCommand::Status(s))) = cli.command else { panic!("{cli:?}") };
            assert_eq!(s.data.data, PathBuf::from("/srv/bitriver"));
            println!("ENV_CHILD_OK");
            return;
        }

        let mut child = std::process::Command::new(std::env::current_exe().unwrap());
        child.args(["config::tests::env_twins_are_read", "--exact", "--nocapture"]);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with(ENV_PREFIX) {
                child.env_remove(k);
            }
        }
        child
            .env(ENV_CHILD, "1")
            .env("BITRIVER_LIVE_MODE", "production")
            .env("BITRIVER_LIVE_ADDR", "127.0.0.1:9999")
            .env("BITRIVER_LIVE_ROLES", "edge")
            .env("BITRIVER_LIVE_DATA", "/srv/bitriver")
            .env("BITRIVER_LIVE_JOIN", "10.0.0.1:7946")
            .env("BITRIVER_LIVE_JOIN_TOKEN", "tok")
            .env("BITRIVER_LIVE_CLUSTER_ADVERTISE", "10.0.0.2:7946")
            .env("BITRIVER_LIVE_ADVERTISE_HOST", "10.0.0.3");
        let out = child.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("ENV_CHILD_OK"),
            "child failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn transcoding_is_on_only_when_asked() {
        let ladder = |args: &[&str]| validate(args).unwrap().transcode.map(|l| l.to_string());
        // The all-in-one default stays passthrough; naming the role or giving a ladder turns it on.
        assert_eq!(ladder(&[]), None);
        assert_eq!(ladder(&["--roles", "all"]), None);
        assert_eq!(ladder(&["--roles", "ingest,transcode,origin"]).as_deref(), Some(transcode::DEFAULT_LADDER));
        assert_eq!(ladder(&["--transcode-ladder", "360p:800,180p:300"]).as_deref(), Some("360p:800,180p:300"));
        assert_eq!(ladder(&["--roles", "all,transcode", "--transcode-ladder", "off"]), None);
        for (args, flag) in [
            (&["--transcode-ladder", "720p:fast"][..], "--transcode-ladder"),
            (&["--transcode-ladder", ""], "--transcode-ladder"),
            (&["--roles", "ingest,origin", "--transcode-ladder", "720p:3000"], "--transcode-ladder"),
        ] {
            assert_eq!(validate(args).unwrap_err().flag(), flag, "{args:?}");
        }
    }
}
