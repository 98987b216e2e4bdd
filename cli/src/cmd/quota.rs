//! `tenantctl quota check|usage`. `check` is the public, bearer-token check
//! (`POST /api/v1/tenants/{id}/quotas/check`) — the services' own `/internal` check needs a
//! service token, which a person's CLI has no business holding. Allowed exits 0; refused
//! (`QUOTA_EXCEEDED`, `TENANT_NOT_ACTIVE`) exits 1 with the figures.

use super::{Ctx, tenant_path};
use crate::args::QuotaCmd;
use crate::error::Result;
use crate::output::{Table, text, time};
use clap::ValueEnum;
use reqwest::Method;
use serde_json::json;

pub async fn run(ctx: &Ctx, cmd: QuotaCmd) -> Result<()> {
    match cmd {
        QuotaCmd::Check { tenant, resource, amount, consume } => {
            let body = json!({ "resource": resource.as_str(), "amount": amount, "consume": consume });
            let answer = ctx
                .api
                .send(Method::POST, &tenant_path(&tenant, &["quotas", "check"])?, &[], Some(&body), None)
                .await?;
            let d = &answer.data;
            if ctx.out.json {
                ctx.out.json(d);
                return Ok(());
            }
            let resets =
                if d["resetAt"].is_null() { String::new() } else { format!(", resets {}", time(&d["resetAt"])) };
            println!(
                "allowed: {} {amount}{} — used {} of {}, {} remaining{resets}",
                text(&d["resource"]),
                if consume { " (counted)" } else { "" },
                text(&d["used"]),
                text(&d["limit"]),
                text(&d["remaining"]),
            );
            Ok(())
        }
        QuotaCmd::Usage { tenant, history, from, to, granularity } => {
            let mut query = Vec::new();
            query.extend(from.map(|f| ("from", f)));
            query.extend(to.map(|t| ("to", t)));
            let granularity = granularity.and_then(|g| g.to_possible_value()).map(|v| v.get_name().to_owned());
            query.extend(granularity.map(|g| ("granularity", g)));
            let d = ctx.api.get(&tenant_path(&tenant, &["usage"])?, &query).await?.data;
            if ctx.out.json {
                ctx.out.json(&d);
                return Ok(());
            }
            let mut current = Table::new(&["RESOURCE", "USED", "LIMIT", "REMAINING", "UNIT", "RESET", "RESETS AT"])
                .right(&["USED", "LIMIT", "REMAINING"]);
            for q in d["current"].as_array().into_iter().flatten() {
                current.row(vec![
                    text(&q["resource"]),
                    text(&q["used"]),
                    text(&q["limit"]),
                    text(&q["remaining"]),
                    text(&q["unit"]),
                    text(&q["resetPeriod"]),
                    time(&q["resetAt"]),
                ]);
            }
            current.print();
            if history {
                let mut table = Table::new(&["BUCKET", "RESOURCE", "USED"]).right(&["USED"]);
                for p in d["history"].as_array().into_iter().flatten() {
                    table.row(vec![time(&p["bucketStart"]), text(&p["resource"]), text(&p["used"])]);
                }
                println!();
                if table.is_empty() { println!("no usage history in that range") } else { table.print() }
            }
            Ok(())
        }
    }
}
