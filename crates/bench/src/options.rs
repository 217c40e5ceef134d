//! The command line (clap) of `cxbridge-bench` and the plan of phases it selects: every
//! phase reads its options from here.

use std::path::PathBuf;

use clap::Parser;

/// Benchmark for cxbridge: starts a real `cxbridge serve` on 127.0.0.1 with a temporary
/// data directory holding N imported contacts, then measures the HTTP floor, caller
/// identification, IVR lookups at a steady open-loop rate, screen-pop latency over agent
/// WebSockets at a steady call rate, sustained CTI events per second, outbox delivery, the
/// server's peak memory, and SIP call setups per second through Kamailio (SIPp callers and
/// agent phone; static route vs the hub's lookup vs lookup + CTI reporting). Then the CRM
/// phase: a Dataverse test server (in this process) with --crm-contacts contacts, and
/// cxbridge started against it three times — with the local phone index (identify latency,
/// activities/s with batch_size = 100, i.e. `$batch` requests), without it (identify latency
/// by direct `$filter` queries), and with the index and batch_size = 1 (activities/s, one
/// request each). Prints everything next to the targets. All traffic stays on 127.0.0.1.
#[derive(Parser, Debug)]
#[command(name = "cxbridge-bench", version)]
pub struct Args {
    /// Path to the `cxbridge` binary under test.
    #[arg(long, value_name = "PATH", default_value = "target/release/cxbridge")]
    pub cxbridge: PathBuf,
    /// Contacts to generate and import into the built-in CRM before serving (mixed phone
    /// notations; every 10th has a mobile; every 50th shares a number with its neighbour).
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    pub contacts: u64,
    /// Agents connected by WebSocket to their stream during the pop and throughput phases.
    #[arg(long, value_name = "K", default_value_t = 50)]
    pub agents: u32,
    /// Calls started per second in the pop phase (each call: newCall, answer +50 ms,
    /// hangup +250 ms, then wrap-up).
    #[arg(long, value_name = "CALLS_PER_SEC", default_value_t = 200)]
    pub rate: u32,
    /// Length of the pop phase in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 20)]
    pub duration: u64,
    /// Sequential `GET /healthz` requests measured for the loopback floor.
    #[arg(long, value_name = "N", default_value_t = 2000)]
    pub healthz_requests: u32,
    /// Sequential `GET /api/v1/identify` requests measured.
    #[arg(long, value_name = "N", default_value_t = 5000)]
    pub identify_requests: u32,
    /// Percentage of identify lookups and calls that come from numbers not in the CRM.
    #[arg(long, value_name = "PERCENT", default_value_t = 20, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub unknown_percent: u8,
    /// How long to wait for a call's pop frame before counting it as missing, in ms.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub pop_timeout_ms: u64,
    /// CTI requests in flight during the sustained events/s phase.
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub concurrency: u32,
    /// Length of the sustained events/s phase in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub blast_duration: u64,
    /// Stop the sustained events/s phase after this many events even if time is left.
    #[arg(long, value_name = "N")]
    pub blast_events: Option<u64>,
    /// Longest wait for the outbox to drain (pending = 0) after the pop phase, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub drain_timeout: u64,
    /// Seed for the choice of callers and notations (same seed, same traffic).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Run `cxbridge` (import and serve) pinned to these CPUs with `taskset -c`, e.g. `0`:
    /// on a machine where waking a thread on another CPU is expensive this shows how much
    /// of the figures is hand-off cost.
    #[arg(long, value_name = "CPUS")]
    pub pin_server: Option<String>,
    /// Configuration file passed to `cxbridge import` and `cxbridge serve` as `--config`
    /// (e.g. to compare `[server] durability = "normal"`); listen address and data
    /// directory are always the benchmark's own. Not used by the CRM phase, which writes
    /// its own configuration (kept with --keep-data).
    #[arg(long, value_name = "FILE")]
    pub server_config: Option<PathBuf>,
    /// Keep the temporary directory (data, CSV, server logs, CRM-phase configs) and print its path.
    #[arg(long)]
    pub keep_data: bool,
    /// Run only the CRM phase (no import, no built-in-CRM phases): cxbridge against the
    /// Dataverse test server, local index vs direct queries, `$batch` vs one request per
    /// activity. Takes about 25 s with the defaults. Combines with --ivr and --sip.
    #[arg(long, conflicts_with = "skip_crm")]
    pub crm: bool,
    /// Leave the CRM phase out of the full run.
    #[arg(long)]
    pub skip_crm: bool,
    /// Run only the IVR lookup phase (with the import, the server and the loopback floor it
    /// needs; no identify, pop, events, SIP or CRM phase). Combines with --sip and --crm.
    #[arg(long, conflicts_with = "skip_ivr")]
    pub ivr: bool,
    /// Leave the IVR lookup phase out of the full run.
    #[arg(long)]
    pub skip_ivr: bool,
    /// IVR lookups (`GET /api/v1/ivr/lookup?ani=…`) started per second, each at its scheduled
    /// time whether or not earlier ones have been answered (open loop).
    #[arg(long, value_name = "PER_SEC", default_value_t = 1000)]
    pub ivr_rate: u32,
    /// IVR lookups measured (after 100 sequential unmeasured ones).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub ivr_lookups: u32,
    /// Run only the SIP phase (with the import and the server it needs). Combines with
    /// --ivr and --crm. Needs `kamailio` (with kamailio-utils-modules and
    /// kamailio-json-modules) and `sipp`; without them the phase is skipped with the reason.
    #[arg(long, conflicts_with = "skip_sip")]
    pub sip: bool,
    /// Leave the SIP phase out of the full run.
    #[arg(long)]
    pub skip_sip: bool,
    /// Calls per second the SIPp caller places in each SIP mode (static route, hub lookup,
    /// hub lookup + CTI), through Kamailio to one SIPp agent phone.
    #[arg(long, value_name = "CALLS_PER_SEC", default_value_t = 500)]
    pub sip_rate: u32,
    /// Seconds of calls per SIP mode (the caller places sip-rate × sip-secs calls).
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub sip_secs: u64,
    /// Directory with the Kamailio example: kamailio.cfg and sipp/*.xml.
    #[arg(long, value_name = "DIR", default_value = "examples/kamailio")]
    pub kamailio_example: PathBuf,
    /// Contacts loaded into the Dataverse test server for the CRM phase (phones in the five
    /// notations the adapter's `$filter` searches; every 10th has a mobile; every 50th
    /// shares its neighbour's number). The test server scans every contact per query.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub crm_contacts: u64,
    /// Sequential `GET /api/v1/identify` measured in the CRM phase, once through the local
    /// index and once by direct Dataverse queries (same callers, same order).
    #[arg(long, value_name = "N", default_value_t = 2000)]
    pub crm_identify_requests: u32,
    /// Unanswered calls (newCall, then hangup with cause `cancel`: memorialized at once)
    /// pushed in each activities run of the CRM phase; one activity each.
    #[arg(long, value_name = "M", default_value_t = 5000)]
    pub crm_activities: u64,
    /// CTI requests in flight while pushing those calls.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub crm_concurrency: u32,
    /// Delay the Dataverse test server adds before answering each Web API request, in ms:
    /// a stand-in for the network round trip to a real environment (0 = loopback only). It
    /// delays every HTTP request alike, a `$batch` of 100 as much as a single PATCH.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub crm_latency_ms: u64,
    /// Run only the scale-out phase: the same workload on SQLite with one node, PostgreSQL +
    /// NATS with one node, and PostgreSQL + NATS with two nodes (events round-robin to both,
    /// agents split across them, so about half of the pops cross the bus), figures side by
    /// side. Per setup: import --scale-contacts, --agents streams, pops at --rate for
    /// --scale-secs (p50/p99, missing, duplicated), --concurrency CTI requests in flight for
    /// --blast-duration s of unanswered calls (newCall, hangup `cancel`), outbox deliveries/s
    /// until nothing is pending (at most --drain-timeout), CPU and peak RSS per node. Needs
    /// --postgres-url and --nats-url; writes its own configuration (--server-config is not
    /// used). About 3 minutes with the defaults. Combines with --crm, --ivr and --sip.
    #[arg(long, conflicts_with = "skip_scale_out")]
    pub scale_out: bool,
    /// Leave the scale-out phase out of the full run (it is skipped anyway, with the reason,
    /// without a PostgreSQL and a NATS URL).
    #[arg(long)]
    pub skip_scale_out: bool,
    /// PostgreSQL server for the scale-out phase, as a URL with the right to create databases:
    /// each setup gets a fresh database (dropped afterwards unless --keep-data).
    #[arg(long, value_name = "URL", env = "CXBRIDGE_TEST_POSTGRES_URL", hide_env_values = true)]
    pub postgres_url: Option<String>,
    /// NATS server with JetStream for the scale-out phase; each setup gets a stream and
    /// subject prefix of its own (the stream is deleted afterwards unless --keep-data).
    #[arg(long, value_name = "URL", env = "CXBRIDGE_TEST_NATS_URL", hide_env_values = true)]
    pub nats_url: Option<String>,
    /// Contacts imported (with `cxbridge import contact`) into each scale-out setup.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub scale_contacts: u64,
    /// Length of each scale-out setup's pop phase in seconds (at --rate calls/s).
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub scale_secs: u64,
}

/// Which phases this run does: the --crm / --ivr / --sip / --scale-out flags select only
/// those, the --skip-* flags leave phases out of the full run.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Identify, pop, outbox, events and memory against the built-in CRM.
    pub main: bool,
    pub ivr: bool,
    pub sip: bool,
    pub crm: bool,
    pub scale_out: bool,
    /// Whether the phases were asked for one by one (then a phase that cannot run is an error).
    pub selected: bool,
}

impl Plan {
    pub fn of(args: &Args) -> Plan {
        if args.crm || args.ivr || args.sip || args.scale_out {
            Plan { main: false, ivr: args.ivr, sip: args.sip, crm: args.crm, scale_out: args.scale_out, selected: true }
        } else {
            Plan { main: true, ivr: !args.skip_ivr, sip: !args.skip_sip, crm: !args.skip_crm, scale_out: !args.skip_scale_out, selected: false }
        }
    }

    /// Whether the contacts are imported and a server started for the built-in CRM.
    pub fn server(self) -> bool {
        self.main || self.ivr || self.sip
    }
}
