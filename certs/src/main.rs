//! `kpool-certs`: the command line over the kpool-certs library. Every flag can also be set by
//! an environment variable `KPOOL_CERTS_*` (what the chart's hook Jobs use). Logs go to stderr,
//! results to stdout.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use kpool_certs::create::{self, CreateOptions};
use kpool_certs::generate::ServingRequest;
use kpool_certs::mesh::{self, MeshOptions};
use kpool_certs::rotate::{self, Policy, RotateOptions};
use kpool_certs::{cluster, inspect, tls};

#[derive(Parser, Debug)]
#[command(
    name = "kpool-certs",
    version,
    about = "Certificates for kpool: CA and serving certs, Secret, caBundle, rotation"
)]
struct Cli {
    #[command(flatten)]
    logging: kpool_cli::LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write ca.crt, ca.key, tls.crt, tls.key to a directory; keeps valid material, renews what
    /// is due, and never replaces a CA whose key is missing or foreign without --force.
    Create(CreateArgs),
    /// Print the facts of certificate (and key) files.
    Inspect(InspectArgs),
    /// Create or update the kubernetes.io/tls Secret (with ca.crt) from a directory, by server-side apply.
    Secret(SecretArgs),
    /// Set caBundle on the Mutating and Validating webhook configurations of a name.
    PatchWebhooks(PatchWebhooksArgs),
    /// Zero-downtime CA rotation and serving certificate renewal, re-runnable after a crash.
    Rotate(RotateArgs),
    /// Write the broker mesh's CA, broker certificate and client certificates (one per
    /// --client) from a policy's `mesh` section; keeps valid material like `create`.
    #[command(long_about = MESH_ABOUT)]
    Mesh(MeshArgs),
}

const MESH_ABOUT: &str = "\
Write the broker mesh's CA, broker certificate and client certificates from a policy's `mesh`
section, laid out as a Kubernetes TLS Secret mounts them (file names from mesh.tls):

  OUT/ca/ca.crt, ca.key                       the mesh CA; stays here
  OUT/broker/tls.crt, tls.key, ca.crt         Secret kafka-mtls, for every broker sidecar
  OUT/client-NAME/tls.crt, tls.key, ca.crt    per --client NAME, for that app's client sidecar

`kpool-mesh broker-config --certs-dir OUT/broker` and `client-config --certs-dir
OUT/client-NAME` read them as they are.

Identities: one Secret serves the whole StatefulSet, so every broker presents
mesh.brokerSan (default spiffe://kpool.io/kafka/<kafkaCluster>/broker); a client sidecar
requires it and the mesh CA, proving \"a broker of this Kafka cluster\" (which broker is
chosen by the client's own sidecar port). Client NAME gets
spiffe://kpool.io/kafka/<kafkaCluster>/client/NAME; broker sidecars accept it when
mesh.allowedSans lists it (a warning says when not). The mesh CA is not the webhook's CA.

Re-running keeps the CA (so adding a --client keeps every Secret issued before) and every
certificate that is valid, chains to it, carries the expected SAN and is not due; a CA whose
ca.key is missing or foreign, and files that are not PEM, are refused unless --force.";

#[derive(Args, Debug)]
struct SanArgs {
    /// The webhook's Service name.
    #[arg(long, env = "KPOOL_CERTS_SERVICE")]
    service: String,
    /// Extra DNS names (repeat, or comma-separated in the env var). `rotate` adds them to the
    /// current certificate's names (see --replace-names).
    #[arg(long, env = "KPOOL_CERTS_DNS", value_delimiter = ',')]
    dns: Vec<String>,
    /// IP addresses (repeat, or comma-separated in the env var). `rotate` adds them to the
    /// current certificate's names (see --replace-names).
    #[arg(long, env = "KPOOL_CERTS_IP", value_delimiter = ',')]
    ip: Vec<IpAddr>,
    /// Serving certificate validity, days.
    #[arg(long, env = "KPOOL_CERTS_DAYS", default_value_t = create::DEFAULT_DAYS)]
    days: u32,
    /// CA validity, days.
    #[arg(long, env = "KPOOL_CERTS_CA_DAYS", default_value_t = create::DEFAULT_CA_DAYS)]
    ca_days: u32,
    /// Renew a certificate when less than this fraction of its lifetime is left (`0.25`, `1/3`).
    #[arg(long, env = "KPOOL_CERTS_RENEW_FRACTION", default_value = "1/3", value_parser = parse_fraction)]
    renew_fraction: f64,
}

#[derive(Args, Debug)]
struct CreateArgs {
    #[command(flatten)]
    san: SanArgs,
    /// Namespace of the Service.
    #[arg(long, env = "KPOOL_CERTS_NAMESPACE")]
    namespace: String,
    /// Output directory.
    #[arg(long, env = "KPOOL_CERTS_OUT")]
    out: PathBuf,
    /// Replace all material, valid or not. Without it, create refuses to replace a CA whose
    /// ca.key is missing or does not match ca.crt (or a ca.key without ca.crt), and files that
    /// are not PEM: clients that trust the CA would break.
    #[arg(long, env = "KPOOL_CERTS_FORCE")]
    force: bool,
    /// Print the report as JSON.
    #[arg(long, env = "KPOOL_CERTS_JSON")]
    json: bool,
}

#[derive(Args, Debug)]
struct InspectArgs {
    /// Certificate or key files (PEM). Leaves are checked against the CAs among them. Only
    /// regular files (symlinks followed) of at most 1 MiB are read; a FIFO, a device such as
    /// /dev/zero, or a larger file is refused.
    #[arg(required = true, env = "KPOOL_CERTS_FILES", value_delimiter = ',')]
    files: Vec<PathBuf>,
    /// Print JSON.
    #[arg(long, env = "KPOOL_CERTS_JSON")]
    json: bool,
}

#[derive(Args, Debug)]
struct SecretArgs {
    /// Name of the kubernetes.io/tls Secret.
    #[arg(long, env = "KPOOL_CERTS_SECRET")]
    name: String,
    /// Namespace of the Secret.
    #[arg(long, env = "KPOOL_CERTS_NAMESPACE")]
    namespace: String,
    /// Directory with tls.crt, tls.key, ca.crt (and ca.key for --ca-secret).
    #[arg(long, env = "KPOOL_CERTS_FROM")]
    from: PathBuf,
    /// Also store ca.crt and ca.key in this Opaque Secret, for `rotate` and renewals.
    #[arg(long, env = "KPOOL_CERTS_CA_SECRET")]
    ca_secret: Option<String>,
}

#[derive(Args, Debug)]
struct PatchWebhooksArgs {
    /// Name of the Mutating and/or Validating webhook configuration.
    #[arg(long, env = "KPOOL_CERTS_WEBHOOK")]
    name: String,
    /// CA bundle file (PEM, one or more CA certificates).
    #[arg(long, env = "KPOOL_CERTS_CA")]
    ca: PathBuf,
}

#[derive(Args, Debug)]
struct RotateArgs {
    #[command(flatten)]
    san: SanArgs,
    /// Namespace of the Secrets and the Service.
    #[arg(long, env = "KPOOL_CERTS_NAMESPACE")]
    namespace: String,
    /// The serving Secret (kubernetes.io/tls) the webhook mounts.
    #[arg(long, env = "KPOOL_CERTS_SECRET")]
    secret: String,
    /// The Opaque Secret holding the CA keys [default: <secret>-ca].
    #[arg(long, env = "KPOOL_CERTS_CA_SECRET")]
    ca_secret: Option<String>,
    /// Name of the Mutating and/or Validating webhook configuration.
    #[arg(long, env = "KPOOL_CERTS_WEBHOOK")]
    webhook: String,
    /// Start a CA rotation even if the CA is not due.
    #[arg(long, env = "KPOOL_CERTS_FORCE")]
    force: bool,
    /// Issue the serving certificate for exactly the Service names, --dns and --ip, dropping
    /// names the current certificate has beyond them. Without it, a new serving certificate
    /// keeps every name of the current one and adds those asked for, so a run that forgets a
    /// --dns or --ip never narrows it. Each issue step lists the names kept, added, dropped.
    #[arg(long, env = "KPOOL_CERTS_REPLACE_NAMES")]
    replace_names: bool,
    /// Time for kubelet to refresh the mounted Secret and the webhook to reload it, before
    /// the old CA is dropped (`90s`, `2m`, `1h`, or seconds).
    #[arg(long, env = "KPOOL_CERTS_PROPAGATION_WAIT", default_value = "2m", value_parser = kpool_cli::duration::parse_duration)]
    propagation_wait: std::time::Duration,
    /// Pause after publishing a new CA bundle before issuing from the new CA.
    #[arg(long, env = "KPOOL_CERTS_BUNDLE_SETTLE", default_value = "10s", value_parser = kpool_cli::duration::parse_duration)]
    bundle_settle: std::time::Duration,
    /// Do not sleep through the wait: exit, and let the next run continue.
    #[arg(long, env = "KPOOL_CERTS_NO_WAIT")]
    no_wait: bool,
    /// Print the report as JSON.
    #[arg(long, env = "KPOOL_CERTS_JSON")]
    json: bool,
}

#[derive(Args, Debug)]
struct MeshArgs {
    /// The policy whose `mesh` section names the Kafka cluster, the broker identity, the
    /// allowed client identities and the file names.
    #[arg(long, env = "KPOOL_CERTS_POLICY")]
    policy: PathBuf,
    /// Output directory (see above for the layout).
    #[arg(long, env = "KPOOL_CERTS_OUT")]
    out: PathBuf,
    /// An application to issue a client certificate for, a DNS label (repeat, or
    /// comma-separated in the env var).
    #[arg(
        long = "client",
        value_name = "NAME",
        env = "KPOOL_CERTS_CLIENT",
        value_delimiter = ','
    )]
    clients: Vec<String>,
    /// Broker and client certificate validity, days.
    #[arg(long, env = "KPOOL_CERTS_DAYS", default_value_t = create::DEFAULT_DAYS)]
    days: u32,
    /// Mesh CA validity, days.
    #[arg(long, env = "KPOOL_CERTS_CA_DAYS", default_value_t = create::DEFAULT_CA_DAYS)]
    ca_days: u32,
    /// Renew a certificate when less than this fraction of its lifetime is left (`0.25`, `1/3`).
    #[arg(long, env = "KPOOL_CERTS_RENEW_FRACTION", default_value = "1/3", value_parser = parse_fraction)]
    renew_fraction: f64,
    /// Replace all material, valid or not (a new mesh CA: every mesh Secret must be updated).
    #[arg(long, env = "KPOOL_CERTS_FORCE")]
    force: bool,
    /// Print the report as JSON.
    #[arg(long, env = "KPOOL_CERTS_JSON")]
    json: bool,
}

/// Parses `0.25` or `1/3`.
fn parse_fraction(s: &str) -> Result<f64, String> {
    let bad = || format!("expected a fraction such as 0.25 or 1/3, found {s:?}");
    let value = match s.split_once('/') {
        Some((n, d)) => {
            let n: f64 = n.trim().parse().map_err(|_| bad())?;
            let d: f64 = d.trim().parse().map_err(|_| bad())?;
            n / d
        }
        None => s.trim().parse().map_err(|_| bad())?,
    };
    if (0.0..1.0).contains(&value) {
        Ok(value)
    } else {
        Err(bad())
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Err(e) = cli.logging.init() {
        return kpool_cli::exit_with("kpool-certs", &e);
    }
    tls::install_crypto_provider();
    let result = match cli.command {
        Command::Create(a) => run_create(a),
        Command::Inspect(a) => run_inspect(a),
        Command::Secret(a) => runtime().and_then(|rt| rt.block_on(run_secret(a))),
        Command::PatchWebhooks(a) => runtime().and_then(|rt| rt.block_on(run_patch_webhooks(a))),
        Command::Rotate(a) => runtime().and_then(|rt| rt.block_on(run_rotate(a))),
        Command::Mesh(a) => run_mesh(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => kpool_cli::exit_with("kpool-certs", e.as_ref()),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")
}

async fn kube_client() -> Result<kube::Client> {
    kube::Client::try_default()
        .await
        .context("build a Kubernetes client (in-cluster service account, or KUBECONFIG)")
}

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn describe(a: &create::Action) -> String {
    match a {
        create::Action::Kept => "kept".to_owned(),
        create::Action::Created => "created".to_owned(),
        create::Action::Renewed { reason } => format!("renewed ({reason})"),
    }
}

fn run_create(a: CreateArgs) -> Result<()> {
    let opts = CreateOptions {
        service: a.san.service,
        namespace: a.namespace,
        out_dir: a.out,
        dns: a.san.dns,
        ips: a.san.ip,
        days: a.san.days,
        ca_days: a.san.ca_days,
        force: a.force,
        renew_fraction: a.san.renew_fraction,
    };
    let report = create::create(&opts)?;
    tracing::info!(ca = %describe(&report.ca), serving = %describe(&report.serving), dir = %report.out_dir.display(), "create");
    if a.json {
        return print_json(&report);
    }
    println!(
        "{}: CA {} — {}",
        report.out_dir.display(),
        report.ca_info.subject,
        describe(&report.ca)
    );
    println!(
        "{}: serving certificate for {} valid until {} — {}",
        report.out_dir.display(),
        report.serving_info.dns_names.join(", "),
        inspect::rfc3339(report.serving_info.not_after),
        describe(&report.serving)
    );
    Ok(())
}

fn run_mesh(a: MeshArgs) -> Result<()> {
    let policy = kpool_policy::Policy::from_file(&a.policy)?;
    let opts = MeshOptions {
        out_dir: a.out,
        clients: a.clients,
        days: a.days,
        ca_days: a.ca_days,
        force: a.force,
        renew_fraction: a.renew_fraction,
    };
    let report = mesh::mesh(&policy.spec().mesh, &opts)?;
    for w in &report.warnings {
        eprintln!("kpool-certs: warning: {w}");
    }
    if a.json {
        return print_json(&report);
    }
    println!(
        "{}: mesh CA {} valid until {} — {}",
        report.ca_dir.display(),
        report.ca_info.subject,
        inspect::rfc3339(report.ca_info.not_after),
        describe(&report.ca)
    );
    for leaf in &report.leaves {
        let whose = match &leaf.role {
            mesh::Role::Broker => "broker certificate".to_owned(),
            mesh::Role::Client(name) => format!("client certificate of {name}"),
        };
        println!(
            "{}: {whose} for {} valid until {} — {}",
            leaf.dir.display(),
            leaf.san,
            inspect::rfc3339(leaf.info.not_after),
            describe(&leaf.certificate)
        );
        println!(
            "{}: the mesh CA — {}",
            leaf.dir.join(&policy.spec().mesh.tls.ca).display(),
            describe(&leaf.ca_file)
        );
    }
    Ok(())
}

fn run_inspect(a: InspectArgs) -> Result<()> {
    let files = inspect::inspect_files(&a.files, time::OffsetDateTime::now_utc())?;
    if a.json {
        return print_json(&files);
    }
    print!("{}", inspect::render_human(&files));
    Ok(())
}

async fn run_secret(a: SecretArgs) -> Result<()> {
    let client = kube_client().await?;
    let outcomes = cluster::apply_secret_from_dir(
        &client,
        &a.namespace,
        &a.name,
        &a.from,
        a.ca_secret.as_deref(),
    )
    .await?;
    for o in outcomes {
        println!(
            "{}: {}",
            o.object,
            if o.updated { "applied" } else { "unchanged" }
        );
    }
    Ok(())
}

async fn run_patch_webhooks(a: PatchWebhooksArgs) -> Result<()> {
    let client = kube_client().await?;
    let outcomes = cluster::patch_webhooks(&client, &a.name, &a.ca).await?;
    for o in outcomes {
        println!(
            "{} {}: caBundle {} ({} webhooks)",
            o.kind.kind(),
            o.name,
            if o.updated { "applied" } else { "unchanged" },
            o.webhooks
        );
    }
    Ok(())
}

async fn run_rotate(a: RotateArgs) -> Result<()> {
    let client = kube_client().await?;
    let ca_secret = a.ca_secret.unwrap_or_else(|| format!("{}-ca", a.secret));
    let opts = RotateOptions {
        policy: Policy {
            serving: ServingRequest {
                service: a.san.service,
                namespace: a.namespace.clone(),
                dns: a.san.dns,
                ips: a.san.ip,
                days: a.san.days,
            },
            renew_fraction: a.san.renew_fraction,
            force_rotation: a.force,
            propagation_wait: a.propagation_wait,
            replace_names: a.replace_names,
        },
        namespace: a.namespace,
        secret: a.secret,
        ca_secret,
        webhook: a.webhook,
        ca_days: a.san.ca_days,
        wait: !a.no_wait,
        bundle_settle: a.bundle_settle,
    };
    let report = rotate::rotate(&client, &opts).await?;
    if a.json {
        return print_json(&report);
    }
    for s in &report.steps {
        match s {
            rotate::Step::IssueServing { names, .. } => {
                println!("{} ({})", s.name(), names.describe());
            }
            _ => println!("{}", s.name()),
        }
    }
    if let Some(secs) = report.pending {
        println!("pending: run again in {secs}s to finish");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn fractions_parse() {
        assert_eq!(super::parse_fraction("0.25"), Ok(0.25));
        assert_eq!(super::parse_fraction("1/3"), Ok(1.0 / 3.0));
        assert!(super::parse_fraction("1").is_err());
        assert!(super::parse_fraction("a/b").is_err());
    }

    #[test]
    fn every_flag_has_a_kpool_certs_env_var() {
        Cli::command().debug_assert();
        for sub in Cli::command().get_subcommands() {
            for arg in sub.get_arguments() {
                if matches!(arg.get_id().as_str(), "help" | "version") {
                    continue;
                }
                let env = arg.get_env().and_then(|e| e.to_str()).unwrap_or("");
                assert!(
                    env.starts_with("KPOOL_CERTS_"),
                    "{} --{} has no KPOOL_CERTS_ env var",
                    sub.get_name(),
                    arg.get_id()
                );
            }
        }
    }
}
