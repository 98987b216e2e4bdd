//! `tenantctl billing show|change-plan`. A plan change is a job (202); `--preview` asks the API
//! for the proration lines the change would record, changing nothing, and prints how to confirm
//! exactly those lines (the preview's `prorationDate`, good for an hour).

use super::{Ctx, job_finished, job_started, tenant_path, wait_for};
use crate::args::BillingCmd;
use crate::error::Result;
use crate::output::{Table, money, opt, period, print_fields, text, time};
use crate::watch;
use clap::ValueEnum;
use reqwest::Method;
use serde_json::{Value, json};

pub async fn run(ctx: &Ctx, cmd: BillingCmd) -> Result<()> {
    match cmd {
        BillingCmd::Show { tenant } => {
            let b = ctx.api.get(&tenant_path(&tenant, &["billing"])?, &[]).await?.data;
            if ctx.out.json {
                ctx.out.json(&b);
            } else {
                print_billing(&b);
            }
            Ok(())
        }
        BillingCmd::ChangePlan { tenant, plan, interval, preview, proration_date, wait } => {
            let interval = match interval.and_then(|i| i.to_possible_value()) {
                Some(value) => value.get_name().to_owned(),
                // The tenant's current interval: changing the plan alone should not change it.
                None => text(&ctx.api.get(&tenant_path(&tenant, &["billing"])?, &[]).await?.data["interval"]),
            };
            let mut body = json!({ "planId": plan, "interval": interval });
            if let Some(at) = proration_date {
                body["prorationDate"] = json!(at);
            }
            let query = if preview { vec![("preview", "true".to_owned())] } else { Vec::new() };
            let path = tenant_path(&tenant, &["billing", "plans"])?;
            let key = if preview { None } else { wait.idempotency_key.as_deref() };
            let answer = ctx.api.send(Method::POST, &path, &query, Some(&body), key).await?;
            if preview {
                if ctx.out.json {
                    ctx.out.json(&answer.data);
                } else {
                    print_quote(&answer.data);
                    println!(
                        "\npreview only, nothing changed; to make this change: tenantctl billing change-plan {tenant} --plan {plan} --interval {interval} --proration-date {}",
                        text(&answer.data["prorationDate"])
                    );
                }
                return Ok(());
            }
            let (job, quote) = (&answer.data["job"], &answer.data["quote"]);
            if !ctx.out.json {
                print_quote(quote);
                println!("{}", job_started(job));
            }
            let Some(done) = wait_for(ctx, job, &wait).await? else {
                if ctx.out.json {
                    ctx.out.json(&answer.data);
                }
                return Ok(());
            };
            if ctx.out.json {
                ctx.out.json(&json!({ "job": done, "quote": quote }));
            } else {
                println!("{}", job_finished(&done));
            }
            watch::outcome(&done)
        }
    }
}

fn price(p: &Value) -> String {
    format!("{} v{}, {}ly, {}", text(&p["planName"]), text(&p["version"]), text(&p["interval"]), money(&p["amount"]))
}

/// The proration: from, to, the lines and their total.
fn print_quote(q: &Value) {
    print_fields(&[
        ("from", price(&q["from"])),
        ("to", price(&q["to"])),
        ("effective", time(&q["prorationDate"])),
        ("new period", period(&q["newPeriod"])),
    ]);
    println!();
    let mut lines = Table::new(&["DESCRIPTION", "PERIOD", "AMOUNT"]).right(&["AMOUNT"]);
    for line in q["lines"].as_array().into_iter().flatten() {
        lines.row(vec![text(&line["description"]), period(&line["period"]), money(&line["amount"])]);
    }
    lines.row(vec!["total".into(), String::new(), money(&q["total"])]);
    lines.print();
}

fn print_billing(b: &Value) {
    let plan = &b["plan"];
    let superseded = if plan["superseded"] == true { " (superseded: a newer version exists)" } else { "" };
    let card = match (b["paymentMethod"]["brand"].as_str(), b["paymentMethod"]["last4"].as_str()) {
        (Some(brand), Some(last4)) => format!("{brand} ending {last4}"),
        _ => String::new(),
    };
    let status = match b["pastDueSince"].as_str() {
        Some(_) => format!("{} since {}", text(&b["status"]), time(&b["pastDueSince"])),
        None => text(&b["status"]),
    };
    print_fields(&[
        ("tenant", text(&b["tenantId"])),
        ("plan", format!("{} ({}) v{}{superseded}", text(&plan["name"]), text(&plan["slug"]), text(&plan["version"]))),
        ("interval", text(&b["interval"])),
        ("status", status),
        ("provider", format!("{}{}", text(&b["provider"]), parenthesized(&opt(&b["providerStatus"])))),
        ("period", period(&b["currentPeriod"])),
        ("balance due", money(&b["balance"])),
        ("card", card),
    ]);
    let upcoming = &b["upcomingInvoice"];
    println!("\nupcoming invoice, issued at {}:", time(&upcoming["period"]["end"]));
    let mut lines = Table::new(&["KIND", "DESCRIPTION", "QTY", "AMOUNT"]).right(&["QTY", "AMOUNT"]);
    for line in upcoming["lines"].as_array().into_iter().flatten() {
        lines.row(vec![
            text(&line["kind"]),
            text(&line["description"]),
            text(&line["quantity"]),
            money(&line["amount"]),
        ]);
    }
    lines.row(vec!["total".into(), String::new(), String::new(), money(&upcoming["total"])]);
    lines.print();
}

/// ` (x)` for a non-empty `x`.
fn parenthesized(x: &str) -> String {
    if x.is_empty() { String::new() } else { format!(" ({x})") }
}
