//! `tenantctl plans list`: the current version of every active plan.

use super::Ctx;
use crate::args::PlansCmd;
use crate::error::Result;
use crate::output::{Table, money, text};

pub async fn run(ctx: &Ctx, cmd: PlansCmd) -> Result<()> {
    match cmd {
        PlansCmd::List => {
            let plans = ctx.api.get("/api/v1/plans", &[]).await?.data;
            if ctx.out.json {
                ctx.out.json(&plans);
                return Ok(());
            }
            let mut table = Table::new(&["SLUG", "NAME", "VERSION", "MONTHLY", "YEARLY", "REQ/MIN", "ID"])
                .right(&["VERSION", "MONTHLY", "YEARLY", "REQ/MIN"]);
            for p in plans.as_array().into_iter().flatten() {
                table.row(vec![
                    text(&p["slug"]),
                    text(&p["name"]),
                    text(&p["version"]),
                    money(&p["priceMonthly"]),
                    money(&p["priceYearly"]),
                    text(&p["apiRateLimit"]),
                    text(&p["id"]),
                ]);
            }
            table.print();
            Ok(())
        }
    }
}
