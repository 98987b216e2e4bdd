//! The command line, declared with clap's derive. Every command carries examples in its `--help`.
//!
//! The URL and token are deliberately not clap `env` arguments: clap would print an
//! environment variable's value in `--help`, and the token must never be printed. `settings`
//! resolves them (flag, then environment, then config file).

use clap::{Args, Parser, Subcommand, ValueEnum};

const EXAMPLES: &str = "\
Examples:
  export TENANT_API_URL=http://localhost:3004 TENANT_API_TOKEN=…
  tenantctl tenants list --status active
  tenantctl tenants create --name Acme --slug acme --plan pro --owner-id 3f0e8c9a-5a43-4a57-9a57-2d0d7e0c6f11 --wait
  tenantctl jobs watch 0193…
  tenantctl --json plans list | jq '.[].slug'

Configuration: flags override TENANT_API_URL / TENANT_API_TOKEN, which override the config file
($TENANTCTL_CONFIG, else ~/.config/tenantctl/config.toml, with `url = \"…\"` and `token = \"…\"`).
Exit codes: 0 ok; 1 refused by the API, failed, or a waited job that failed; 2 usage.";

#[derive(Debug, Parser)]
#[command(name = "tenantctl", bin_name = "tenantctl", version, about = "Command-line client of the tenant management API", after_help = EXAMPLES)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// API base URL (overrides TENANT_API_URL and the config file).
    #[arg(long, global = true, help_heading = "Global options", value_name = "URL")]
    pub url: Option<String>,
    /// Bearer token (overrides TENANT_API_TOKEN and the config file). Prefer those: a flag is
    /// visible to other users in the process list.
    #[arg(long, global = true, help_heading = "Global options", value_name = "TOKEN")]
    pub token: Option<String>,
    /// Config file (default $TENANTCTL_CONFIG, else ~/.config/tenantctl/config.toml).
    #[arg(long, global = true, help_heading = "Global options", value_name = "PATH")]
    pub config: Option<std::path::PathBuf>,
    /// Print the API's `data` as JSON instead of tables (errors still go to stderr).
    #[arg(long, global = true, help_heading = "Global options")]
    pub json: bool,
    /// With --json: one line instead of indented JSON.
    #[arg(long, global = true, help_heading = "Global options")]
    pub compact: bool,
    /// Seconds an HTTP request may take.
    #[arg(long, global = true, help_heading = "Global options", value_name = "SECS", default_value_t = 30)]
    pub request_timeout: u64,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List, read, create, suspend, reactivate, delete and restore tenants.
    #[command(subcommand)]
    Tenants(TenantsCmd),
    /// Read or follow a job (provisioning, deletion, restore, plan change).
    #[command(subcommand)]
    Jobs(JobsCmd),
    /// The plans on offer.
    #[command(subcommand)]
    Plans(PlansCmd),
    /// Ask whether a tenant may use more of a resource; show its usage.
    #[command(subcommand)]
    Quota(QuotaCmd),
    /// A tenant's billing account; plan changes (with a preview of the proration).
    #[command(subcommand)]
    Billing(BillingCmd),
}

/// How a command that starts a job waits for it.
#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// Block until the job finishes, showing its steps as they complete; exit 1 if it failed.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up waiting (exit 1; the job goes on) after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub wait_timeout: u64,
    /// Sent as `Idempotency-Key`: repeating the command with the same key (24 h) does it once.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Status {
    Provisioning,
    Active,
    Suspended,
    Deleting,
    Deleted,
    Failed,
}

#[derive(Debug, Subcommand)]
pub enum TenantsCmd {
    /// One page of tenants (platform admins see all, others their own).
    #[command(
        after_help = "Examples:\n  tenantctl tenants list\n  tenantctl tenants list --status suspended --plan pro\n  tenantctl tenants list --search acme --page 2 --limit 50"
    )]
    List {
        #[arg(long, value_enum)]
        status: Option<Status>,
        /// Full-text search on name, slug and domain.
        #[arg(long, value_name = "TEXT")]
        search: Option<String>,
        /// A plan's slug or id.
        #[arg(long)]
        plan: Option<String>,
        #[arg(long, default_value_t = 1)]
        page: u32,
        /// Page size, 1 to 100.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
        limit: u32,
    },
    /// A tenant with its plan, quota limits and effective features.
    #[command(after_help = "Examples:\n  tenantctl tenants get acme\n  tenantctl --json tenants get 0193c1d2-…")]
    Get {
        /// Tenant id or slug.
        tenant: String,
    },
    /// Create a tenant (platform admins): starts the provisioning job.
    #[command(
        after_help = "Examples:\n  tenantctl tenants create --name 'Acme Inc' --slug acme --plan pro \\\n      --owner-id 3f0e8c9a-5a43-4a57-9a57-2d0d7e0c6f11 --owner-email it@acme.example --wait\n  tenantctl tenants create --name Beta --slug beta --plan free --owner-id … --feature realTimeChat=on"
    )]
    Create {
        /// Display name.
        #[arg(long)]
        name: String,
        /// Lower case letters, digits and dashes, 3 to 50 characters; immutable.
        #[arg(long)]
        slug: String,
        /// A plan's slug or id.
        #[arg(long)]
        plan: String,
        /// The owner's user id (UUID).
        #[arg(long, value_name = "UUID")]
        owner_id: String,
        /// Where the welcome email goes.
        #[arg(long, value_name = "EMAIL")]
        owner_email: Option<String>,
        /// The tenant's domain, e.g. acme.example.com.
        #[arg(long)]
        domain: Option<String>,
        /// A feature-flag override, `flag=on` or `flag=off` (repeatable).
        #[arg(long = "feature", value_name = "FLAG=on|off")]
        features: Vec<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Suspend a tenant (platform admins): its quota checks are denied at once.
    #[command(after_help = "Examples:\n  tenantctl tenants suspend acme --reason 'abuse report #42'")]
    Suspend {
        /// Tenant id or slug.
        tenant: String,
        /// Recorded with the status and in the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Reactivate a suspended tenant (platform admins).
    #[command(after_help = "Examples:\n  tenantctl tenants reactivate acme")]
    Reactivate {
        /// Tenant id or slug.
        tenant: String,
        /// Recorded in the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Delete a tenant (platform admins): backs it up, verifies the backup, then removes it.
    #[command(
        after_help = "Examples:\n  tenantctl tenants delete acme            # asks to type the slug\n  tenantctl tenants delete acme --yes --wait"
    )]
    Delete {
        /// Tenant id or slug.
        tenant: String,
        /// Don't ask for confirmation (required when stdin is not a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Restore a deleted tenant from its backup (platform admins).
    #[command(
        after_help = "Examples:\n  tenantctl tenants restore --backup 0193…        # the id `tenants delete --wait` printed\n  tenantctl tenants restore --tenant 0193c1d2-… --wait   # its last deletion's backup"
    )]
    Restore {
        /// The backup id (printed by `tenants delete --wait`, in the deletion job's result).
        #[arg(long, value_name = "UUID", required_unless_present = "tenant", conflicts_with = "tenant")]
        backup: Option<String>,
        /// A deleted tenant's id: restore the backup of its last deletion.
        #[arg(long, value_name = "TENANT")]
        tenant: Option<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobsCmd {
    /// A job with its steps (exits 0 whatever the job's own status).
    #[command(
        after_help = "Examples:\n  tenantctl jobs get 0193c1d2-…\n  tenantctl --json jobs get 0193c1d2-… | jq .status"
    )]
    Get {
        /// Job id (the `Location` of a 202, printed by the commands that start one).
        job: String,
    },
    /// Follow a job's progress until it finishes; exit 1 if it failed or was compensated.
    #[command(
        after_help = "Examples:\n  tenantctl jobs watch 0193c1d2-…\n  tenantctl jobs watch 0193c1d2-… --wait-timeout 60"
    )]
    Watch {
        /// Job id.
        job: String,
        /// Give up (exit 1; the job goes on) after this many seconds.
        #[arg(long, value_name = "SECS", default_value_t = 600)]
        wait_timeout: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum PlansCmd {
    /// The current version of every active plan, with prices.
    #[command(after_help = "Examples:\n  tenantctl plans list\n  tenantctl --json plans list")]
    List,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Resource {
    Users,
    Storage,
    ApiCalls,
    Bandwidth,
    Databases,
    ComputeHours,
    FileUploads,
    EmailSends,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Granularity {
    Hour,
    Day,
}

#[derive(Debug, Subcommand)]
pub enum QuotaCmd {
    /// May the tenant use AMOUNT more of RESOURCE? Exit 0 if allowed, 1 if not.
    #[command(
        after_help = "Examples:\n  tenantctl quota check acme api_calls\n  tenantctl quota check acme storage --amount 500\n  tenantctl quota check acme email_sends --consume   # count it if allowed"
    )]
    Check {
        /// Tenant id or slug.
        tenant: String,
        #[arg(value_enum)]
        resource: Resource,
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i64).range(1..))]
        amount: i64,
        /// Count the amount when allowed (atomically with the check).
        #[arg(long)]
        consume: bool,
    },
    /// Current usage of every resource, and optionally its history.
    #[command(
        after_help = "Examples:\n  tenantctl quota usage acme\n  tenantctl quota usage acme --history --from 2026-11-01T00:00:00Z --granularity day"
    )]
    Usage {
        /// Tenant id or slug.
        tenant: String,
        /// Also show the usage history from the rollups.
        #[arg(long)]
        history: bool,
        /// Start of the history (RFC 3339).
        #[arg(long, value_name = "TIME")]
        from: Option<String>,
        /// End of the history (RFC 3339).
        #[arg(long, value_name = "TIME")]
        to: Option<String>,
        #[arg(long, value_enum)]
        granularity: Option<Granularity>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Interval {
    Month,
    Year,
}

#[derive(Debug, Subcommand)]
pub enum BillingCmd {
    /// Plan, interval, status, period, balance and the upcoming invoice.
    #[command(after_help = "Examples:\n  tenantctl billing show acme")]
    Show {
        /// Tenant id or slug.
        tenant: String,
    },
    /// Move the tenant to another plan (tenant admins): a job; --preview shows the proration only.
    #[command(
        after_help = "Examples:\n  tenantctl billing change-plan acme --plan pro --preview\n  tenantctl billing change-plan acme --plan pro --interval year --wait"
    )]
    ChangePlan {
        /// Tenant id or slug.
        tenant: String,
        /// The new plan's slug or id.
        #[arg(long)]
        plan: String,
        /// Billing interval (default: the tenant's current one).
        #[arg(long, value_enum)]
        interval: Option<Interval>,
        /// Show the proration lines and total without changing anything.
        #[arg(long, conflicts_with = "wait")]
        preview: bool,
        /// When the change takes effect (RFC 3339, at most an hour ago; a preview's `prorationDate`).
        #[arg(long, value_name = "TIME")]
        proration_date: Option<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provisioning => "provisioning",
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Deleting => "deleting",
            Self::Deleted => "deleted",
            Self::Failed => "failed",
        }
    }
}

impl Resource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Users => "users",
            Self::Storage => "storage",
            Self::ApiCalls => "api_calls",
            Self::Bandwidth => "bandwidth",
            Self::Databases => "databases",
            Self::ComputeHours => "compute_hours",
            Self::FileUploads => "file_uploads",
            Self::EmailSends => "email_sends",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = Cli::try_parse_from(["tenantctl", "plans", "list", "--json", "--compact"]).expect("parses");
        assert!(cli.global.json && cli.global.compact);
        let err = Cli::try_parse_from(["tenantctl", "quota", "check", "acme", "gold"]).expect_err("bad resource");
        assert_eq!(err.exit_code(), 2);
    }
}
